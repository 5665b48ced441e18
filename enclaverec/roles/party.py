"""A party's enclave: ``python3 -m enclaverec.roles.party --config party.toml``.

A party trains (logistic regression in numpy, or the TensorFlow DLRM imported only then),
so its closure reaches ``enclaverec.model``. It exports the best global model into its own
trust domain.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from enclaverec.crypto import keys
from enclaverec.data.prepared import load_prepared
from enclaverec.data.schema import DataSet
from enclaverec.errors import ConfigError, UsageError
from enclaverec.federated.config import FederatedPlan, ModelKind, PartyConfig
from enclaverec.federated.party import FederatedParty, PartyOptions, PartyResult, TrainerFactory
from enclaverec.roles.runner import integer, run
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.role_setup import role_backend, verifier_context
from enclaverec.training import Trainer
from enclaverec.transport.endpoints import ServerEndpoints
from enclaverec.transport.enrollment import EnrollmentCredentials
from enclaverec.transport.session import ClientSession, Session

log = logging.getLogger(__name__)

NAME = "party"


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="party.toml")
    parser.add_argument(
        "--export",
        metavar="DIR",
        help="write the best global model here (SavedModel; default: [party] export)",
    )
    parser.add_argument(
        "--threads", metavar="N", help="TensorFlow intra-op threads (default: all cores)"
    )


def _run(args: argparse.Namespace) -> int:
    threads = integer("threads", args.threads, minimum=1) if args.threads else None
    setup = make_party_session(Path(args.config))
    export_dir = Path(args.export) if args.export else setup.config.export

    def export(result: PartyResult) -> None:
        if export_dir is None or result.best_model is None:
            return
        export_best_model(result, export_dir)

    result = run_party(setup, default_trainer_factory(threads), PartyOptions(), export)
    print(
        f"{result.party_id}: trained in rounds {result.rounds_trained}; best global model from "
        f"round {result.best_round}" + (f", exported to {export_dir}" if export_dir else ""),
        flush=True,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(NAME, add_arguments, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
