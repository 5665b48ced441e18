"""Federated learning on one machine: a federation's plan (:class:`FederationPlanConfig`,
which owns the defaults of ``federated init`` and ``simulate``), the data shares, and
:func:`simulate_federation`, which runs every role as its own process and returns a
:class:`FederationResult` from which ``metrics.json`` is written.

Nothing here trains or aggregates: the roles do, in their own processes
(:mod:`enclaverec.federated.simulate` starts them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enclaverec.app.data import DataConfig, load_data, synthetic_references
from enclaverec.app.events import JobEvents, QuietEvents
from enclaverec.app.outputs import check_output_folder, prepare_output_folder
from enclaverec.errors import ConfigError, TrainingError
from enclaverec.evaluation import BinaryMetrics
from enclaverec.federated.strategies import DEFAULT_STRATEGY, Clipping, StrategyConfig
from enclaverec.tee.kinds import TEEKind, check_tee_for
from enclaverec.training import EvalRecord

if TYPE_CHECKING:
    from enclaverec.data.schema import DataSet
    from enclaverec.federated.config import FederatedPlan

LOGREG = "logreg"
"""The ``model`` that trains the numpy logistic regression (a quick protocol check)."""
DEFAULT_ROUNDS = 10
DEFAULT_LOCAL_EPOCHS = 1
DEFAULT_PARTITION = "iid"
# The logistic regression's local training (no preset holds it): plain SGD at lr 0.5,
# batch 256, reaches its best AUC on MovieLens-100K within a few rounds.
LOGREG_LEARNING_RATE = 0.5
LOGREG_BATCH_SIZE = 256
LOGREG_OPTIMIZER = "sgd"
DEFAULT_QUORUM = 1.0
DEFAULT_DEADLINE_SECONDS = 600.0
# Each party sees 1/N of the rows per round; with the preset's batch its local steps per
# round shrink N-fold. A local batch of at most 128 gives FedAvg the steps it needs
# (McMahan et al. 2017 find small local batches best): on MovieLens-100K, 4 IID parties,
# it raised the test AUC from 0.7781 (batch 256) to 0.7823, the centralized result.
MAX_DEFAULT_LOCAL_BATCH = 128
# Values no federation means: a typo (an extra zero, an exponent), refused up front.
MAX_ROUNDS = 10_000
MAX_LOCAL_EPOCHS = 1000
CURVES_FILE = "curves.png"
METRICS_FILE = "metrics.json"


def model_choices() -> tuple[str, ...]:
    """``--model``: a DLRM preset, or the logistic regression."""
    from enclaverec.dlrm.config import Preset

    return (*(preset.value for preset in Preset), LOGREG)


@dataclass(frozen=True)
class FederationPlanConfig:
    """What the federation trains, and how rounds run. ``None`` means: the model's default
    (``model=None``: the DLRM preset chosen by the training rows; ``batch_size`` and
    ``learning_rate``: the preset's, or the logistic regression's)."""

    model: str | None = None
    rounds: int = DEFAULT_ROUNDS
    local_epochs: int = DEFAULT_LOCAL_EPOCHS
    batch_size: int | None = None
    learning_rate: float | None = None
    strategy: str = DEFAULT_STRATEGY
    """A registry name, or ``NAME:VALUE`` (``trimmed-mean:0.2``, ``krum:1``); its options
    not given here take the strategy's own defaults (``federated.strategies``)."""
    proximal_mu: float | None = None
    server_learning_rate: float | None = None
    clipping: Clipping = Clipping.MEDIAN
    fraction: float | None = None
    min_parties: int | None = None
    quorum: float = DEFAULT_QUORUM
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    norm_bound: float | None = None
    dense_updates: bool = False

    def strategy_config(self) -> StrategyConfig:
        """The plan's strategy: the registry's typed options, with the flags given."""
        if self.proximal_mu is not None and not self.strategy.startswith("fedprox"):
            raise ConfigError("--proximal-mu needs --strategy fedprox")
        if self.server_learning_rate is not None and not self.strategy.startswith(
            ("fedadam", "fedyogi", "fedadagrad")
        ):
            raise ConfigError("--server-lr needs --strategy fedadam, fedyogi or fedadagrad")
        return StrategyConfig.parse(
            self.strategy,
            clipping=self.clipping,
            proximal_mu=self.proximal_mu,
            eta=self.server_learning_rate,
        )

    def __post_init__(self) -> None:
        if self.model is not None and self.model not in model_choices():
            raise ConfigError(
                f"--model must be one of {', '.join(model_choices())}, got {self.model!r}"
            )
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise ConfigError(f"--rounds must be between 1 and {MAX_ROUNDS}, got {self.rounds}")
        if not 1 <= self.local_epochs <= MAX_LOCAL_EPOCHS:
            raise ConfigError(
                f"--local-epochs must be between 1 and {MAX_LOCAL_EPOCHS}, got {self.local_epochs}"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        self.strategy_config()  # refuses an unknown strategy or an option it lacks
        for name, value in (
            ("lr", self.learning_rate),
            ("proximal-mu", self.proximal_mu),
            ("server-lr", self.server_learning_rate),
            ("deadline", self.deadline_seconds),
            ("norm-bound", self.norm_bound),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"--{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class FederationSetup:
    """The data a federation trains on and how it is shared among its parties."""

    data: DataConfig
    parties: int
    partition: str = DEFAULT_PARTITION
    plan: FederationPlanConfig = field(default_factory=FederationPlanConfig)

    def __post_init__(self) -> None:
        if self.parties < 1:
            raise ConfigError(f"--parties must be at least 1, got {self.parties}")
        from enclaverec.data.partition import parse_partition_mode

        parse_partition_mode(self.partition)  # a typo fails before the data is read


def load_party_shares(
    setup: FederationSetup, *, dataset: DataSet | None = None
) -> tuple[DataSet, list[DataSet]]:
    """The data set (loaded unless given) and each party's share of it."""
    from enclaverec.data.partition import partition_dataset

    if dataset is None:
        dataset = load_data(setup.data)
    shares = partition_dataset(
        dataset, parties=setup.parties, mode=setup.partition, seed=setup.data.seed
    )
    return dataset, shares


def build_plan(
    setup: FederationSetup,
    dataset: DataSet,
    shares: Sequence[DataSet],
    *,
    events: JobEvents | None = None,
) -> FederatedPlan:
    """The measured plan every party trains by, with each default resolved and each value
    checked against the data (a local batch above a party's training rows is refused)."""
    from enclaverec.app.centralized import check_batch_size
    from enclaverec.dlrm.config import PRESETS, Preset, choose_preset
    from enclaverec.federated.config import FederatedPlan, ModelKind, UpdateEncoding
    from enclaverec.federated.rounds import SelectionConfig
    from enclaverec.federated.strategies import LocalTraining

    events = events or QuietEvents()
    config = setup.plan
    if config.model == LOGREG:
        model, preset, optimizer = ModelKind.LOGREG, LOGREG, LOGREG_OPTIMIZER
        batch, lr = LOGREG_BATCH_SIZE, LOGREG_LEARNING_RATE
    else:
        chosen = Preset(config.model) if config.model else choose_preset(len(dataset.train))
        defaults = PRESETS[chosen]
        model, preset = ModelKind.DLRM, chosen.value
        optimizer, lr = defaults.optimizer.value, defaults.learning_rate
        batch = min(defaults.batch_size, MAX_DEFAULT_LOCAL_BATCH)
    if config.batch_size is not None:
        smallest = min(len(share.train) for share in shares)
        check_batch_size(config.batch_size, smallest, flag="--batch-size")
    if config.model is None:
        events.note(f"preset: {preset} ({len(dataset.train):,} training rows)")
    return FederatedPlan(
        model=model,
        preset=preset,
        optimizer=optimizer,
        dataset=dataset.name,
        features=dataset.spec,
        hashing=dataset.info.get("hashing"),
        seed=setup.data.seed,
        rounds=config.rounds,
        local=LocalTraining(
            epochs=config.local_epochs,
            batch_size=config.batch_size or batch,
            learning_rate=config.learning_rate or lr,
            seed=setup.data.seed,
        ),
        strategy=config.strategy_config(),
        selection=SelectionConfig(
            fraction=config.fraction or 1.0,
            # Every party by default; with a fraction, at least one unless min_parties says.
            min_parties=config.min_parties or (1 if config.fraction else setup.parties),
            quorum=config.quorum,
            deadline_seconds=config.deadline_seconds,
        ),
        norm_bound=config.norm_bound,
        update_encoding=UpdateEncoding.DENSE if config.dense_updates else UpdateEncoding.SPARSE,
    )


# --- simulate ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationConfig:
    """``federated simulate``: the whole federation as processes on this machine."""

    setup: FederationSetup
    output: Path
    tee: TEEKind = TEEKind.SIMULATED
    parties_attest: bool = True
    overwrite: bool = False
    log_level: str = "info"

    def __post_init__(self) -> None:
        check_tee_for("simulate", self.tee)


@dataclass(frozen=True)
class FederationResult:
    """What a simulated federation measured (from the aggregator's summary), and where."""

    dataset: str
    tee: TEEKind
    preset: str
    optimizer: str
    seed: int
    parties: int
    partition: str
    strategy: str
    local_epochs: int
    test: BinaryMetrics
    test_split_sha256: str
    global_test_split_sha256: str
    history: tuple[EvalRecord, ...]
    best_round: int
    rounds_completed: int
    train_samples_per_second: float
    wall_seconds: float
    attested_peers: Sequence[Any]
    parties_attest: bool
    update_encoding: str
    update_bytes_per_party_per_round: float
    round_seconds: tuple[float, ...]
    aggregator_mrenclave: str | None
    party_exit_codes: Mapping[str, int]
    restarts: Any
    references: Mapping[str, float]
    summary: Mapping[str, Any] = field(repr=False)
    output: Path
    curves: Path
    federation: Path

    @property
    def test_covers_all_parties(self) -> bool:
        """False when the best round was scored without some party's test rows (a party
        dropped out): then its test split differs from the global one."""
        return self.test_split_sha256 == self.global_test_split_sha256

    def metrics(self) -> dict[str, Any]:
        """The DESIGN.md §4 report (validated)."""
        from enclaverec.report import Mode, build_metrics

        return build_metrics(
            mode=Mode.FEDERATED,
            tee=self.tee,
            dataset=self.dataset,
            preset=self.preset,
            optimizer=self.optimizer,
            seed=self.seed,
            test=self.test,
            test_split_sha256=self.test_split_sha256,
            history=self.history,
            best_index=self.best_round,
            train_samples_per_second=self.train_samples_per_second,
            wall_seconds=self.wall_seconds,
            extra={
                "parties": self.parties,
                "rounds_completed": self.rounds_completed,
                "attested_peers": list(self.attested_peers),
                "partition": self.partition,
                "strategy": self.strategy,
                "local_epochs": self.local_epochs,
                "parties_attest": self.parties_attest,
                "update_encoding": self.update_encoding,
                "update_bytes_per_party_per_round": self.update_bytes_per_party_per_round,
                "round_seconds": list(self.round_seconds),
                "aggregator_mrenclave": self.aggregator_mrenclave,
                "global_test_split_sha256": self.global_test_split_sha256,
                "test_covers_all_parties": self.test_covers_all_parties,
                "party_exit_codes": dict(self.party_exit_codes),
                "restarts": self.restarts,
                **self.references,
            },
        )


def _simulation_entries() -> tuple[str, ...]:
    from enclaverec.federated.simulate import FEDERATION_DIR, LOGS_DIR

    return (FEDERATION_DIR, LOGS_DIR, METRICS_FILE, CURVES_FILE)


def simulate_federation(
    config: SimulationConfig,
    *,
    dataset: DataSet | None = None,
    events: JobEvents | None = None,
) -> FederationResult:
    """Partition the data, write the federation's files, run the aggregator and every
    party as processes over loopback, and write metrics.json and the curves.

    Raises:
        OutputFolderError: the output folder cannot be used (before any work).
        EnclaveRecError: a role failed (the message carries its last error line).
    """
    from enclaverec.federated.simulate import (
        SimulationOptions,
        check_parties,
        run_simulation,
        union_test_sha256,
    )
    from enclaverec.model.threads import ThreadSettings
    from enclaverec.plots import plot_training_curves
    from enclaverec.report import write_metrics

    events = events or QuietEvents()
    started = time.perf_counter()
    setup = config.setup
    output = check_output_folder(config.output, overwrite=config.overwrite)
    dataset, shares = load_party_shares(setup, dataset=dataset)
    plan = build_plan(setup, dataset, shares, events=events)
    attest = config.parties_attest and config.tee is not TEEKind.NONE
    events.note(
        f"federated: {setup.parties} parties ({setup.partition}), {plan.rounds} rounds of "
        f"{plan.local.epochs} local epoch(s), {plan.strategy.name}, tee {config.tee.value}"
        + (", parties attest" if attest else "")
    )
    if config.tee is TEEKind.NONE:
        events.note(
            "WARNING: --tee none is a measurement baseline: plaintext on loopback, nothing attested"
        )
    prepare_output_folder(output, overwrite=config.overwrite, owned=_simulation_entries())

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "round_completed":
            events.note(
                f"round {event['round']}/{plan.rounds}: validation AUC {event['val_auc']:.4f}, "
                f"test AUC {event['test_auc']:.4f}"
            )
        elif event.get("event") == "phase_restarted":
            events.note(f"round {event['round']}: deadline passed without quorum; selecting again")

    run = run_simulation(
        SimulationOptions(
            parties=setup.parties,
            plan=plan,
            tee=config.tee,
            parties_attest=config.parties_attest,
            output=output,
            # DESIGN.md §6: each TensorFlow process gets max(1, cores // processes).
            threads_per_party=ThreadSettings.for_processes(setup.parties).intra_op,
            log_level=config.log_level,
        ),
        shares,
        on_event=on_event,
    )
    summary = run.summary
    if not summary["history"] or summary["best_test"] is None:
        raise TrainingError("the federation completed no round")
    history = tuple(
        EvalRecord(
            "round",
            h["round"],
            h["val_auc"],
            h["val_logloss"],
            h["wall_seconds"],
            train_loss=h.get("train_loss"),
        )
        for h in summary["history"]
    )
    best = summary["best_test"]
    # Bytes of each party's update message, averaged over parties and rounds.
    sizes = [size for h in summary["history"] for size in h["bytes_received"].values()]
    result = FederationResult(
        dataset=dataset.name,
        tee=config.tee,
        preset=plan.preset,
        optimizer=plan.optimizer,
        seed=setup.data.seed,
        parties=setup.parties,
        partition=setup.partition,
        strategy=plan.strategy.name,
        local_epochs=plan.local.epochs,
        test=BinaryMetrics(
            best["test_auc"], best["test_logloss"], best["test_accuracy"], best["test_rows"]
        ),
        test_split_sha256=best["test_split_sha256"],
        global_test_split_sha256=union_test_sha256(shares),
        history=history,
        best_round=summary["best_round"],
        rounds_completed=summary["rounds_completed"],
        train_samples_per_second=summary["train_samples"] / summary["train_seconds"]
        if summary["train_seconds"] > 0
        else 0.0,
        wall_seconds=time.perf_counter() - started,
        attested_peers=summary["attested_peers"],
        parties_attest=summary["parties_attest"],
        update_encoding=summary["update_encoding"],
        update_bytes_per_party_per_round=sum(sizes) / len(sizes) if sizes else 0,
        round_seconds=tuple(h["round_seconds"] for h in summary["history"]),
        aggregator_mrenclave=summary["mrenclave"],
        party_exit_codes=run.party_exit_codes,
        restarts=summary["restarts"],
        references=synthetic_references(dataset, setup.data.seed),
        summary=summary,
        output=output,
        curves=output / CURVES_FILE,
        federation=run.files.root,
    )
    write_metrics(output, result.metrics())
    plot_training_curves(
        history,
        result.curves,
        title=f"federated {plan.strategy.name}, {setup.parties} parties ({setup.partition}), "
        f"tee {config.tee.value}",
        best_index=result.best_round,
    )
    # A party that crashed did not stop the federation (the quorum carried on), but the
    # run is not what was asked for: say so, after writing what was achieved.
    check_parties(run)
    return result
