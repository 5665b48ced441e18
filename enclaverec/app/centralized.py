"""Centralized training, the plaintext baseline: :class:`CentralizedJob` in,
:class:`CentralizedResult` out, ``metrics.json`` and ``curves.png`` written from the result.

Every output path is checked before the data is read, and every training value against
the data before the first step, so a run never ends in a refusal to save its work.
TensorFlow is imported inside :func:`run_centralized` only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enclaverec.app.data import DataConfig, default_output, load_data, synthetic_references
from enclaverec.app.events import JobEvents, QuietEvents
from enclaverec.app.outputs import check_export_folder, check_output_folder, prepare_output_folder
from enclaverec.dlrm.config import (
    PRESETS,
    SMALL_PRESET_MAX_TRAIN_ROWS,
    OptimizerKind,
    Preset,
    choose_preset,
)
from enclaverec.errors import ConfigError, TrainingError
from enclaverec.evaluation import BinaryMetrics
from enclaverec.trainer import EvalRecord

if TYPE_CHECKING:
    from enclaverec.data.schema import DataSet

log = logging.getLogger(__name__)

CURVES_FILE = "curves.png"
METRICS_FILE = "metrics.json"
OUTPUT_ENTRIES = (METRICS_FILE, CURVES_FILE)
"""What a centralized run writes into its folder (and replaces with ``overwrite``)."""

# No preset trains anywhere near this long; a larger value is a typo (an extra zero, an
# exponent), refused before hours are spent.
MAX_EPOCHS = 1000


@dataclass(frozen=True)
class CentralizedJob:
    """A centralized run. ``None`` for a training value means the preset's default (the
    preset's own table, :data:`enclaverec.dlrm.config.PRESETS`, is the one place of those
    defaults); ``preset=None`` chooses by the training rows. ``output=None`` is
    ``runs/train-<data set>``."""

    data: DataConfig
    preset: Preset | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    optimizer: OptimizerKind | None = None
    output: Path | None = None
    export: Path | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.epochs is not None and not 1 <= self.epochs <= MAX_EPOCHS:
            raise ConfigError(f"--epochs must be between 1 and {MAX_EPOCHS}, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")

    @property
    def output_folder(self) -> Path:
        return self.output or default_output(self.data.selection.name, "train")


@dataclass(frozen=True)
class CentralizedResult:
    """What a centralized run measured, and the files it wrote."""

    dataset: str
    preset: Preset
    optimizer: OptimizerKind
    seed: int
    test: BinaryMetrics
    test_split_sha256: str
    history: tuple[EvalRecord, ...]
    best_epoch: int
    stopped_early: bool
    train_rows: int
    validation_rows: int
    batch_size: int
    learning_rate: float
    train_samples_per_second: float
    wall_seconds: float
    threads: Mapping[str, int]
    references: Mapping[str, float] = field(default_factory=dict)
    bad_lines_skipped: int | None = None
    output: Path = Path()
    curves: Path = Path()
    export: Path | None = None

    def metrics(self) -> dict[str, Any]:
        """The DESIGN.md §4 report (validated)."""
        from enclaverec.report import Mode, build_metrics
        from enclaverec.tee.kinds import TEEKind

        extra: dict[str, Any] = {
            "train_rows": self.train_rows,
            "validation_rows": self.validation_rows,
            "epochs_completed": len(self.history),
            "stopped_early": self.stopped_early,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "threads": dict(self.threads),
            **self.references,
        }
        if self.bad_lines_skipped is not None:
            extra["bad_lines_skipped"] = self.bad_lines_skipped
        return build_metrics(
            mode=Mode.CENTRALIZED,
            tee=TEEKind.NONE,
            dataset=self.dataset,
            preset=self.preset.value,
            optimizer=self.optimizer.value,
            seed=self.seed,
            test=self.test,
            test_split_sha256=self.test_split_sha256,
            history=self.history,
            best_index=self.best_epoch,
            train_samples_per_second=self.train_samples_per_second,
            wall_seconds=self.wall_seconds,
            extra=extra,
        )


def start_tensorflow_threads() -> dict[str, int]:
    """Give TensorFlow every core of the machine, before its first operation, and return
    the thread counts in effect (0: TensorFlow's default)."""
    from enclaverec.model.threads import ThreadSettings, configure_threads, current_threads

    try:
        configure_threads(ThreadSettings.for_processes(1))
    except TrainingError as exc:
        # Only an in-process caller (a test, a notebook) can have started TensorFlow
        # before us; its pools stay, which changes speed, not results.
        log.warning("%s; continuing with them", exc)
    intra, inter = current_threads()
    return {"intra_op": intra, "inter_op": inter}


def check_batch_size(batch_size: int, train_rows: int, *, flag: str = "--batch-size") -> None:
    """A batch larger than the training rows cannot be meant: every step would be one
    short epoch, and the run quietly learns nothing."""
    if batch_size > train_rows:
        raise ConfigError(f"{flag} {batch_size:,} is larger than the {train_rows:,} training rows")


def run_centralized(
    job: CentralizedJob,
    *,
    dataset: DataSet | None = None,
    events: JobEvents | None = None,
) -> CentralizedResult:
    """Check the outputs, load the data (unless given), train the DLRM with per-epoch
    validation and early stopping, score the best epoch on the test split, and write
    metrics.json, the curves and (if asked) the SavedModel export.

    Raises:
        OutputFolderError: an output or export folder that cannot be used (before any work).
        ConfigError: a training value the data makes impossible (before the first step).
    """
    events = events or QuietEvents()
    started = time.perf_counter()
    output = check_output_folder(job.output_folder, overwrite=job.overwrite)
    if job.export is not None:
        check_export_folder(job.export)
    if dataset is None:
        dataset = load_data(job.data)
    train_rows = len(dataset.train)
    preset = job.preset or choose_preset(train_rows)
    defaults = PRESETS[preset]
    optimizer = job.optimizer or defaults.optimizer
    from enclaverec.trainer import CentralizedConfig, train_centralized

    loop = CentralizedConfig(
        epochs=job.epochs or defaults.epochs,
        patience=defaults.patience,
        batch_size=job.batch_size or defaults.batch_size,
        learning_rate=job.learning_rate or defaults.learning_rate,
        seed=job.data.seed,
    )
    check_batch_size(loop.batch_size, train_rows)
    if job.preset is None:
        relation = "<" if preset is Preset.SMALL else ">="
        events.note(
            f"preset: {preset.value} (training split has {train_rows:,} rows {relation} "
            f"{SMALL_PRESET_MAX_TRAIN_ROWS:,})"
        )
    # Before any model is built: TensorFlow fixes its pools at its first operation.
    threads = start_tensorflow_threads()
    from enclaverec.data.schema import split_sha256
    from enclaverec.evaluation import evaluate_split
    from enclaverec.model.trainer import DLRMTrainer, DLRMTrainerConfig
    from enclaverec.plots import plot_training_curves
    from enclaverec.report import write_metrics

    events.note(
        f"training {dataset.name}: {train_rows:,} training, {len(dataset.validation):,} "
        f"validation, {len(dataset.test):,} test rows; {optimizer.value} lr "
        f"{loop.learning_rate:g}, batch {loop.batch_size}, at most {loop.epochs} epoch(s); "
        f"TensorFlow threads {threads['intra_op']} intra-op, {threads['inter_op']} inter-op"
    )
    trainer = DLRMTrainer(
        dataset.spec,
        DLRMTrainerConfig(
            model=defaults.model,
            optimizer=optimizer,
            init_seed=job.data.seed,
            jit_compile=defaults.jit_compile,
        ),
        dataset.train,
    )
    with events.training() as observer:
        outcome = train_centralized(trainer, dataset.validation, loop, observer=observer)
    test = evaluate_split(trainer, outcome.best_arrays, dataset.test)
    wall_seconds = time.perf_counter() - started
    references = synthetic_references(dataset, job.data.seed)
    skipped = dataset.info.get("bad_lines_skipped")
    result = CentralizedResult(
        dataset=dataset.name,
        preset=preset,
        optimizer=optimizer,
        seed=job.data.seed,
        test=test,
        test_split_sha256=split_sha256(dataset.test.row_ids),
        history=outcome.history,
        best_epoch=outcome.best_index,
        stopped_early=outcome.stopped_early,
        train_rows=train_rows,
        validation_rows=len(dataset.validation),
        batch_size=loop.batch_size,
        learning_rate=loop.learning_rate,
        train_samples_per_second=outcome.train_samples_per_second,
        wall_seconds=wall_seconds,
        threads=threads,
        references=references,
        bad_lines_skipped=None if skipped is None else int(skipped),
        output=output,
        curves=output / CURVES_FILE,
    )
    prepare_output_folder(output, overwrite=job.overwrite, owned=OUTPUT_ENTRIES)
    write_metrics(output, result.metrics())
    curves = plot_training_curves(
        outcome.history,
        output / CURVES_FILE,
        title=f"DLRM {preset.value} on {dataset.name} (centralized)",
        best_index=outcome.best_index,
        reference_lines={
            label: references[key]
            for key, label in (
                ("oracle_auc", "oracle"),
                ("baseline_logreg_auc", "logistic regression"),
            )
            if key in references
        },
    )
    exported = None
    if job.export is not None:
        from enclaverec.model.export import ModelMetadata, export_saved_model

        metadata = ModelMetadata(
            spec=dataset.spec,
            model=trainer.config.model,
            preset=preset.value,
            optimizer=optimizer.value,
            dataset=dataset.name,
            seed=job.data.seed,
            table_size=job.data.table_size,
            hashing=plain_hashing(dataset.info.get("hashing")),
        )
        exported = export_saved_model(trainer, outcome.best_arrays, job.export, metadata)
    return replace(result, curves=curves, export=exported)


def plain_hashing(hashing: Any) -> dict[str, Any] | None:
    """The data set's category hashing as a JSON object (it may be an object or a dict)."""
    if hashing is None:
        return None
    if isinstance(hashing, Mapping):
        return dict(hashing)
    if hasattr(hashing, "to_dict"):
        return dict(hashing.to_dict())
    raise ConfigError(f"cannot record the data set's hashing ({type(hashing).__name__})")
