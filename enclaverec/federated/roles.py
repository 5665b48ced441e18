"""Running one role from its configuration file: the evidence backend, the verifier
context, the session or server, the trainer. The CLI's ``federated aggregator`` and
``federated party`` are thin wrappers around these; tests call them in-process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from enclaverec.crypto import keys
from enclaverec.data.prepared import load_prepared
from enclaverec.data.schema import DataSet
from enclaverec.errors import ConfigError, UsageError
from enclaverec.federated.aggregator import FederatedAggregator
from enclaverec.federated.config import FederatedPlan, FederationConfig, ModelKind, PartyConfig
from enclaverec.federated.party import FederatedParty, PartyOptions, PartyResult, TrainerFactory
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.role_setup import role_backend as role_backend
from enclaverec.tee.role_setup import verifier_context as verifier_context
from enclaverec.training import Trainer
from enclaverec.transport.endpoints import ServerEndpoints
from enclaverec.transport.enrollment import EnrollmentCredentials
from enclaverec.transport.server import ListenConfig
from enclaverec.transport.session import ClientSession, Session

log = logging.getLogger(__name__)


def make_aggregator(
    config_path: Path,
    *,
    state_dir: Path,
    listen: ListenConfig,
    attestation_dir: Path | None = None,
) -> FederatedAggregator:
    config = FederationConfig.load(config_path)
    backend = role_backend(
        "aggregator", config.tee, config.raw, config.simulation_dir, attestation_dir
    )
    party_verification = None
    if config.parties_attest and config.tee is not TEEKind.NONE:
        party_verification = verifier_context(
            config.tee, config.party_policy, config.simulation_dir, config.pccs_url
        )
    return FederatedAggregator(
        config,
        backend=backend,
        state_dir=state_dir,
        listen=listen,
        party_verification=party_verification,
    )


def default_trainer_factory(threads: int | None = None) -> TrainerFactory:
    """The trainer a plan asks for: the numpy logistic regression, or the TensorFlow DLRM
    (imported only then, with ``threads`` intra-op threads and one inter-op thread)."""

    def factory(plan: FederatedPlan, data: DataSet) -> Trainer:
        if plan.model is ModelKind.LOGREG:
            from enclaverec.logreg import LogisticRegressionTrainer

            return LogisticRegressionTrainer(plan.features, data.train, seed=plan.seed)
        from enclaverec.model.threads import ThreadSettings, available_cores, configure_threads

        configure_threads(ThreadSettings(intra_op=threads or available_cores(), inter_op=1))
        from enclaverec.dlrm.config import PRESETS, OptimizerKind, Preset
        from enclaverec.model.dlrm_trainer import DLRMTrainer, DLRMTrainerConfig

        defaults = PRESETS[Preset(plan.preset)]
        trainer_config = DLRMTrainerConfig(
            model=defaults.model,
            optimizer=OptimizerKind(plan.optimizer),
            init_seed=plan.seed,
            jit_compile=defaults.jit_compile,
        )
        return DLRMTrainer(plan.features, trainer_config, data.train)

    return factory


@dataclass(frozen=True)
class PartySetup:
    config: PartyConfig
    session: Session
    data: DataSet


def make_party_session(
    config_path: Path,
    *,
    attestation_dir: Path | None = None,
    aggregator_port: int | None = None,
    aggregator_enrollment_port: int | None = None,
) -> PartySetup:
    """Load the party's configuration, identity key and data, and prepare its session
    (nothing is sent until the session opens, and it opens only after verifying the
    aggregator)."""
    config = PartyConfig.load(config_path)
    data = load_prepared(config.data)
    port = aggregator_port or config.aggregator_port
    enrollment_port = aggregator_enrollment_port or config.aggregator_enrollment_port
    if config.tee is TEEKind.NONE:
        endpoints = ServerEndpoints(config.aggregator_host, port, None)
        session: Session = ClientSession.unsafe_plaintext_baseline(endpoints, config.party_id)
        return PartySetup(config, session, data)
    if config.identity_key is None or config.passphrase_file is None:
        raise ConfigError(f"{config_path}: [party] needs identity_key and passphrase_file")
    passphrase = keys.read_passphrase(config.passphrase_file, confirm=False)
    identity = keys.load_private_key(config.identity_key, passphrase)
    backend = role_backend("party", config.tee, config.raw, config.simulation_dir, attestation_dir)
    endpoints = ServerEndpoints(config.aggregator_host, port, enrollment_port)
    session = ClientSession(
        endpoints,
        verifier_context(
            config.tee, config.aggregator_policy, config.simulation_dir, config.pccs_url
        ),
        EnrollmentCredentials(config.party_id, membership_key=identity, backend=backend),
    )
    return PartySetup(config, session, data)


def run_party(
    setup: PartySetup,
    trainer_factory: TrainerFactory,
    options: PartyOptions | None = None,
    export: Callable[[PartyResult], None] | None = None,
) -> PartyResult:
    party = FederatedParty(setup.session, setup.data, trainer_factory, options)
    try:
        result = party.run()
    finally:
        setup.session.close()
    if export is not None:
        export(result)
    return result


def export_best_model(result: PartyResult, directory: Path) -> Path:
    """The best global model a party received, as a SavedModel in its own trust domain
    (``enclaverec evaluate`` scores it like any trained model)."""
    plan = result.plan
    if plan is None or result.best_model is None:
        raise UsageError("this party has no best global model to export")
    if plan.model is not ModelKind.DLRM:
        raise UsageError("--export writes a SavedModel of the DLRM; this federation trains logreg")
    from enclaverec.dlrm.config import PRESETS, Preset
    from enclaverec.model.export import ModelMetadata, export_saved_model

    metadata = ModelMetadata(
        spec=plan.features,
        model=PRESETS[Preset(plan.preset)].model,
        preset=plan.preset,
        optimizer=plan.optimizer,
        dataset=plan.dataset,
        seed=plan.seed,
        hashing=plan.hashing,
    )
    return export_saved_model(result.trainer, result.best_model, directory, metadata)
