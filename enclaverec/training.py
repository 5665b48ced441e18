"""The trainer interface (the seam between the training schemes and TensorFlow) and the
pieces every scheme's training loop shares: best-weights tracking with early stopping, the
history of validation scores, and the centralized loop built from them.

Nothing here imports TensorFlow: the TensorFlow DLRM trainer
(:class:`enclaverec.model.dlrm_trainer.DLRMTrainer`) and a numpy logistic-regression trainer
for protocol tests both implement :class:`Trainer`, and the enclave side (aggregator,
parameter servers) sees only numpy arrays.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from enclaverec.arrays import Arrays, ModelLayout
from enclaverec.data.schema import Examples, FeatureSpec
from enclaverec.errors import ConfigError, TrainingError
from enclaverec.evaluation import BinaryMetrics, evaluate_split


class ModelKind(enum.Enum):
    """What a plan trains: the DLRM (TensorFlow), or the numpy logistic regression
    (``enclaverec.logreg``) that protocol, fault and security tests use."""

    DLRM = "dlrm"
    LOGREG = "logreg"


def initial_model(
    kind: ModelKind, preset: str, features: FeatureSpec, seed: int
) -> tuple[Arrays, ModelLayout]:
    """The initial model of a plan (numpy, seeded: no TensorFlow) and its layout; every
    process of a federation or a job computes the same."""
    if kind is ModelKind.LOGREG:
        from enclaverec.logreg import LogisticRegressionTrainer

        empty = Examples(
            np.zeros((0, features.num_dense), np.float32),
            np.zeros((0, features.num_categorical), np.int32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
        )
        trainer = LogisticRegressionTrainer(features, empty, seed=seed)
        arrays = trainer.initial_arrays()
        return arrays, ModelLayout.of(arrays, tables=trainer.table_names())
    from enclaverec.dlrm.config import PRESETS, Preset
    from enclaverec.dlrm.weights import EMBEDDING_PREFIX, initial_arrays

    try:
        config = PRESETS[Preset(preset)].model
    except ValueError as exc:
        raise ConfigError(f"unknown preset {preset!r}") from exc
    arrays = initial_arrays(features, config, seed=seed)
    tables = [name for name in arrays if name.startswith(EMBEDDING_PREFIX)]
    return arrays, ModelLayout.of(arrays, tables=tables)


StepCallback = Callable[[int, int, float], None]
"""Called during ``fit`` as (steps done, steps in this fit, mean training loss so far)."""


@dataclass(frozen=True)
class FitConfig:
    """What one ``fit`` call does.

    ``epochs`` full passes over the trainer's local data, or, when ``max_steps`` is given,
    exactly that many steps (reshuffling at each pass). Batches follow a permutation
    seeded by (``seed``, ``round_index``, pass), so each round or epoch sees a new order
    and a rerun sees the same one. ``proximal_mu`` > 0 adds FedProx's proximal term
    mu/2 * ||w - w_start||^2 (Li et al. 2020, arXiv 1812.06127) over the dense weights and
    the embedding rows each step touches, w_start being the arrays passed to ``fit``.
    ``restart_optimizer`` starts the optimizer's state (Adagrad's accumulators) afresh
    before the first step, as a new optimizer would; otherwise it continues from the last
    fit (a federated party restarts it every round: docs/decisions.md, "Federated parity
    on a Criteo-format file", third look).
    """

    batch_size: int
    learning_rate: float
    epochs: int = 1
    max_steps: int | None = None
    seed: int = 0
    round_index: int = 0
    proximal_mu: float = 0.0
    restart_optimizer: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning rate must be positive, got {self.learning_rate}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.round_index < 0:
            raise ConfigError(f"round_index must not be negative, got {self.round_index}")
        if not (math.isfinite(self.proximal_mu) and self.proximal_mu >= 0):
            raise ConfigError(f"proximal_mu must be zero or positive, got {self.proximal_mu}")


@dataclass(frozen=True)
class FitMetrics:
    """What one ``fit`` call did: rows processed (with repeats), optimizer steps, the mean
    per-row training loss (binary cross-entropy, without the proximal term) and its wall
    time."""

    samples: int
    steps: int
    mean_loss: float
    wall_seconds: float

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.wall_seconds if self.wall_seconds > 0 else 0.0


@runtime_checkable
class Trainer(Protocol):
    """Trains one model on its own local data; weights travel as named numpy arrays.

    Implementations keep their optimizer state (e.g. Adagrad accumulators) across ``fit``
    calls unless ``FitConfig.restart_optimizer`` says to start it afresh (federated
    parties do, every round), and never return it.
    """

    def initial_arrays(self) -> Arrays:
        """Fresh weights, in the model's order."""
        ...

    def fit(
        self,
        arrays: Mapping[str, np.ndarray],
        config: FitConfig,
        *,
        on_steps: StepCallback | None = None,
    ) -> tuple[Arrays, FitMetrics]:
        """Set the weights to ``arrays``, train on the local data as ``config`` says, and
        return the new weights (fresh arrays the caller owns) and what was done.
        ``on_steps`` is for progress display; implementations may call it rarely or never."""
        ...

    def predict(self, arrays: Mapping[str, np.ndarray], examples: Examples) -> np.ndarray:
        """Click probabilities [N] of the model ``arrays`` for ``examples``."""
        ...


@dataclass(frozen=True)
class EvalRecord:
    """One entry of a run's history: the validation scores after an epoch, round or step
    interval, and the wall time since training started."""

    unit: str  # "epoch", "round" or "step": the key the history entry uses (DESIGN.md §4)
    index: int
    val_auc: float
    val_logloss: float
    wall_seconds: float
    train_loss: float | None = None

    def to_dict(self) -> dict[str, float | int]:
        entry: dict[str, float | int] = {
            self.unit: self.index,
            "val_auc": self.val_auc,
            "val_logloss": self.val_logloss,
            "wall_seconds": self.wall_seconds,
        }
        if self.train_loss is not None:
            entry["train_loss"] = self.train_loss
        return entry


class BestTracker:
    """Keeps the weights of the best validation AUC seen so far and decides early stopping:
    stop once ``patience`` evaluations in a row brought no improvement (None: never)."""

    def __init__(self, patience: int | None) -> None:
        if patience is not None and patience < 1:
            raise ConfigError(f"patience must be at least 1, got {patience}")
        self.patience = patience
        self.best_index: int | None = None
        self.best_score = -math.inf
        self.best_arrays: Arrays | None = None
        self.since_best = 0

    def offer(self, index: int, score: float, arrays: Mapping[str, np.ndarray]) -> bool:
        """Record evaluation ``index``'s score; keep a copy of ``arrays`` if it is the best
        so far (strictly: a tie keeps the earlier, cheaper model). Returns whether it was."""
        if score > self.best_score:
            self.best_index = index
            self.best_score = score
            # A copy: callers (aggregators) may update their arrays in place afterwards.
            self.best_arrays = {name: np.array(value, copy=True) for name, value in arrays.items()}
            self.since_best = 0
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.since_best >= self.patience


class TrainingObserver:
    """Hooks a training loop calls to show its progress; this base class shows nothing."""

    def phase_started(self, unit: str, index: int, last: int) -> None:
        """Training for epoch (round, ...) ``index`` of at most ``last`` begins."""

    def steps_done(self, done: int, total: int, mean_loss: float) -> None:
        """The current phase has done ``done`` of ``total`` steps."""

    def evaluated(self, record: EvalRecord, improved: bool) -> None:
        """The phase's validation scores, and whether they are the best so far."""


@dataclass(frozen=True)
class CentralizedConfig:
    """The centralized loop: at most ``epochs`` epochs, early stopping on validation AUC
    after ``patience`` epochs without improvement (None: run every epoch)."""

    epochs: int
    patience: int | None
    batch_size: int
    learning_rate: float
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be at least 1, got {self.patience}")
        # The FitConfig checks batch size and learning rate.
        self.fit_config(0)

    def fit_config(self, epoch_index: int) -> FitConfig:
        return FitConfig(
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            epochs=1,
            seed=self.seed,
            round_index=epoch_index,
        )


@dataclass(frozen=True)
class TrainingOutcome:
    """The result of a training loop: the best weights, where they were found, the history
    and the training throughput (samples over the wall time of the training phases)."""

    best_arrays: Arrays = field(repr=False)
    best_index: int
    history: tuple[EvalRecord, ...]
    train_samples: int
    train_seconds: float
    stopped_early: bool

    @property
    def train_samples_per_second(self) -> float:
        return self.train_samples / self.train_seconds if self.train_seconds > 0 else 0.0


def check_fit_metrics(metrics: FitMetrics) -> None:
    """Refuse a fit whose loss is not finite: the model diverged (lower the learning rate)."""
    if not math.isfinite(metrics.mean_loss):
        raise TrainingError(
            "training diverged (the loss is not finite); try a smaller learning rate"
        )


def train_centralized(
    trainer: Trainer,
    validation: Examples,
    config: CentralizedConfig,
    *,
    observer: TrainingObserver | None = None,
    initial: Mapping[str, np.ndarray] | None = None,
) -> TrainingOutcome:
    """Train epoch by epoch on the trainer's data, score each epoch on ``validation``, stop
    early as ``config`` says, and return the best epoch's weights with the history."""
    observer = observer or TrainingObserver()
    arrays: Mapping[str, np.ndarray] = initial if initial is not None else trainer.initial_arrays()
    tracker = BestTracker(config.patience)
    history: list[EvalRecord] = []
    train_samples = 0
    train_seconds = 0.0
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        observer.phase_started("epoch", epoch, config.epochs)
        fit_started = time.perf_counter()
        arrays, fit_metrics = trainer.fit(
            arrays, config.fit_config(epoch - 1), on_steps=observer.steps_done
        )
        train_seconds += time.perf_counter() - fit_started
        train_samples += fit_metrics.samples
        check_fit_metrics(fit_metrics)
        scores: BinaryMetrics = evaluate_split(trainer, arrays, validation)
        record = EvalRecord(
            unit="epoch",
            index=epoch,
            val_auc=scores.auc,
            val_logloss=scores.logloss,
            wall_seconds=time.perf_counter() - started,
            train_loss=fit_metrics.mean_loss,
        )
        history.append(record)
        improved = tracker.offer(epoch, scores.auc, arrays)
        observer.evaluated(record, improved)
        if tracker.should_stop:
            break
    if tracker.best_arrays is None or tracker.best_index is None:
        raise TrainingError("no epoch was evaluated")  # unreachable: epochs >= 1
    return TrainingOutcome(
        best_arrays=tracker.best_arrays,
        best_index=tracker.best_index,
        history=tuple(history),
        train_samples=train_samples,
        train_seconds=train_seconds,
        stopped_early=len(history) < config.epochs,
    )
