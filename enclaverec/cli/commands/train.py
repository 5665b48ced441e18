"""``enclaverec train``: the centralized plaintext baseline (the DLRM trained on one
machine), which the secure modes are measured against.

The run itself (:func:`run_centralized`) is shared with ``enclaverec demo``. TensorFlow is
imported inside the run only, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enclaverec.cli.config import load_toml, merge_options
from enclaverec.cli.options import parse_choice, parse_integer, parse_path, parse_positive_float
from enclaverec.cli.output import progress, stderr_console, stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.dlrm.config import (
    PRESETS,
    SMALL_PRESET_MAX_TRAIN_ROWS,
    OptimizerKind,
    Preset,
    choose_preset,
)
from enclaverec.errors import ConfigError, TrainingError, UsageError
from enclaverec.trainer import EvalRecord, TrainingObserver

if TYPE_CHECKING:
    import numpy as np

    from enclaverec.data.schema import DataSet
    from enclaverec.data.sources import DataSelection
    from enclaverec.model.trainer import DLRMTrainer

log = logging.getLogger(__name__)

CONFIG_SECTION = "train"
BUILTIN_DATASETS = ("synthetic", "movielens-100k")
ON_BAD_LINE = ("fail", "skip")
CURVES_FILE = "curves.png"

# Every option of the command: argparse dest -> default when neither flag nor file gives
# it. None for the training options means "the preset's default".
DEFAULTS: dict[str, Any] = {
    "dataset": None,
    "data": None,
    "model": None,
    "epochs": None,
    "batch_size": None,
    "lr": None,
    "optimizer": None,
    "seed": 0,
    "table_size": None,
    "on_bad_line": "fail",
    "output": None,
    "export": None,
}


def read_config_section(path: Path | None, section: str) -> dict[str, Any]:
    """The ``[section]`` table of a TOML configuration file ({} without a file)."""
    if path is None:
        return {}
    document = load_toml(path)
    stray = [key for key, value in document.items() if not isinstance(value, dict)]
    if stray:
        raise ConfigError(
            f"{path}: put the options under a [{section}] table (found top-level "
            f"{', '.join(sorted(stray))})"
        )
    others = sorted(key for key in document if key != section)
    if others:
        # A misspelled table ([trian]) must not be silently ignored.
        raise ConfigError(
            f"{path}: unknown table(s) {', '.join(f'[{k}]' for k in others)}; "
            f"the options go under [{section}]"
        )
    table = document.get(section, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{section}] must be a table")
    return table


def data_selection(dataset: Any, data: Any) -> DataSelection:
    """Exactly one of a built-in data set's name or Criteo-format paths."""
    from enclaverec.data.sources import DataSelection

    if (dataset is None) == (data is None):
        raise UsageError(
            "give exactly one of --dataset (synthetic, movielens-100k) or --data PATH..."
        )
    if dataset is not None:
        if not isinstance(dataset, str):
            raise ConfigError(f"--dataset must be a name, got {dataset!r}")
        return DataSelection(dataset=dataset)
    if isinstance(data, str | Path):
        data = [data]
    if not isinstance(data, list | tuple) or not data:
        raise ConfigError(f"--data must be a list of paths, got {data!r}")
    return DataSelection(paths=tuple(parse_path("data", item) for item in data))


@dataclass(frozen=True)
class TrainJob:
    """A centralized run, resolved from flags, the file and defaults. ``None`` training
    options take the preset's default once the preset is known."""

    selection: DataSelection
    preset: Preset | None
    epochs: int | None
    batch_size: int | None
    learning_rate: float | None
    optimizer: OptimizerKind | None
    seed: int
    table_size: int | None
    on_bad_line: str
    output: Path | None
    export: Path | None


def resolve_job(args: argparse.Namespace) -> TrainJob:
    """Flags over the ``[train]`` table of ``--config`` over defaults, each value checked."""
    section = dict(read_config_section(args.config, CONFIG_SECTION))
    if args.dataset is not None or args.data is not None:
        # A data selection on the command line replaces the file's, whichever form.
        section.pop("dataset", None)
        section.pop("data", None)
    values = merge_options(args, section, DEFAULTS, section_name=CONFIG_SECTION)

    def optional(key: str, convert):
        return None if values[key] is None else convert(key.replace("_", "-"), values[key])

    model = optional(
        "model", lambda n, v: Preset(parse_choice(n, v, tuple(p.value for p in Preset)))
    )
    optimizer = optional(
        "optimizer",
        lambda n, v: OptimizerKind(parse_choice(n, v, tuple(o.value for o in OptimizerKind))),
    )
    return TrainJob(
        selection=data_selection(values["dataset"], values["data"]),
        preset=model,
        epochs=optional("epochs", lambda n, v: parse_integer(n, v, minimum=1)),
        batch_size=optional("batch_size", lambda n, v: parse_integer(n, v, minimum=1)),
        learning_rate=optional("lr", parse_positive_float),
        optimizer=optimizer,
        seed=parse_integer("seed", values["seed"], minimum=0),
        table_size=optional("table_size", lambda n, v: parse_integer(n, v, minimum=2)),
        on_bad_line=parse_choice("on-bad-line", values["on_bad_line"], ON_BAD_LINE),
        output=optional("output", parse_path),
        export=optional("export", parse_path),
    )


def default_output(dataset_name: str, prefix: str) -> Path:
    """``runs/<prefix>-<data set>``, the data set's name made safe for a folder name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset_name).strip("-") or "data"
    return Path("runs") / f"{prefix}-{slug}"


# --- the run --------------------------------------------------------------------------


class RichObserver(TrainingObserver):
    """A progress bar per epoch (with the running loss) and a line per evaluation."""

    def __init__(self, bar) -> None:
        self.bar = bar
        self.task = None
        self.label = ""

    def phase_started(self, unit: str, index: int, last: int) -> None:
        self.label = f"{unit} {index}/{last}"
        self.task = self.bar.add_task(self.label, total=None, status="")

    def steps_done(self, done: int, total: int, mean_loss: float) -> None:
        if self.task is not None:
            self.bar.update(
                self.task, completed=done, total=total or None, status=f"loss {mean_loss:.4f}"
            )

    def evaluated(self, record: EvalRecord, improved: bool) -> None:
        if self.task is not None:
            self.bar.update(
                self.task,
                status=f"val AUC {record.val_auc:.4f}, log loss {record.val_logloss:.4f}"
                + (" (best)" if improved else ""),
            )


@dataclass(frozen=True)
class CentralizedRun:
    """What a centralized run produced: its metrics report and the files it wrote."""

    metrics: dict[str, Any]
    output: Path
    curves: Path
    export: Path | None


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


def load_job_data(job: TrainJob) -> DataSet:
    from enclaverec.data.sources import load_dataset

    return load_dataset(
        job.selection,
        seed=job.seed,
        table_size=job.table_size,
        on_bad_line=job.on_bad_line,
        progress=True,
    )


def run_centralized(job: TrainJob, *, dataset: DataSet | None = None) -> CentralizedRun:
    """Load the data (unless given), train the DLRM with per-epoch validation and early
    stopping, score the best epoch on the test split, and write metrics.json, the curves
    and (if asked) the SavedModel export."""
    started = time.perf_counter()
    if dataset is None:
        dataset = load_job_data(job)
    # Before any model is built: TensorFlow fixes its pools at its first operation.
    threads = start_tensorflow_threads()
    from enclaverec.data.schema import split_sha256
    from enclaverec.evaluation import evaluate_split
    from enclaverec.model.trainer import DLRMTrainer, DLRMTrainerConfig
    from enclaverec.plots import plot_training_curves
    from enclaverec.report import Mode, TEEKind, build_metrics, write_metrics
    from enclaverec.trainer import CentralizedConfig, train_centralized

    err = stderr_console()
    train_rows = len(dataset.train)
    if job.preset is None:
        preset = choose_preset(train_rows)
        relation = "<" if preset is Preset.SMALL else ">="
        err.print(
            f"preset: {preset.value} (training split has {train_rows:,} rows {relation} "
            f"{SMALL_PRESET_MAX_TRAIN_ROWS:,})",
            markup=False,
        )
    else:
        preset = job.preset
    defaults = PRESETS[preset]
    optimizer = job.optimizer or defaults.optimizer
    loop = CentralizedConfig(
        epochs=job.epochs or defaults.epochs,
        patience=defaults.patience,
        batch_size=job.batch_size or defaults.batch_size,
        learning_rate=job.learning_rate or defaults.learning_rate,
        seed=job.seed,
    )
    err.print(
        f"training {dataset.name}: {train_rows:,} training, {len(dataset.validation):,} "
        f"validation, {len(dataset.test):,} test rows; {optimizer.value} lr "
        f"{loop.learning_rate:g}, batch {loop.batch_size}, at most {loop.epochs} epoch(s); "
        f"TensorFlow threads {threads['intra_op']} intra-op, {threads['inter_op']} inter-op",
        markup=False,
    )
    trainer = DLRMTrainer(
        dataset.spec,
        DLRMTrainerConfig(
            model=defaults.model,
            optimizer=optimizer,
            init_seed=job.seed,
            jit_compile=defaults.jit_compile,
        ),
        dataset.train,
    )
    with progress() as bar:
        outcome = train_centralized(trainer, dataset.validation, loop, observer=RichObserver(bar))
    test = evaluate_split(trainer, outcome.best_arrays, dataset.test)
    wall_seconds = time.perf_counter() - started

    extra: dict[str, Any] = {
        "train_rows": train_rows,
        "validation_rows": len(dataset.validation),
        "epochs_completed": len(outcome.history),
        "stopped_early": outcome.stopped_early,
        "batch_size": loop.batch_size,
        "learning_rate": loop.learning_rate,
        "threads": threads,
    }
    references: dict[str, float] = {}
    if dataset.name == "synthetic":
        from enclaverec.data.baseline import baseline_logreg_auc

        extra["oracle_auc"] = float(dataset.info["oracle_auc"])
        extra["baseline_logreg_auc"] = float(baseline_logreg_auc(dataset, seed=job.seed))
        references = {
            "oracle": extra["oracle_auc"],
            "logistic regression": extra["baseline_logreg_auc"],
        }
    if "bad_lines_skipped" in dataset.info:
        extra["bad_lines_skipped"] = int(dataset.info["bad_lines_skipped"])
    metrics = build_metrics(
        mode=Mode.CENTRALIZED,
        tee=TEEKind.NONE,
        dataset=dataset.name,
        preset=preset.value,
        optimizer=optimizer.value,
        seed=job.seed,
        test=test,
        test_split_sha256=split_sha256(dataset.test.row_ids),
        history=outcome.history,
        best_index=outcome.best_index,
        train_samples_per_second=outcome.train_samples_per_second,
        wall_seconds=wall_seconds,
        extra=extra,
    )
    output = job.output or default_output(dataset.name, "train")
    write_metrics(output, metrics)
    curves = plot_training_curves(
        outcome.history,
        output / CURVES_FILE,
        title=f"DLRM {preset.value} on {dataset.name} (centralized)",
        best_index=outcome.best_index,
        reference_lines=references,
    )
    exported = None
    if job.export is not None:
        exported = _export(
            trainer, outcome.best_arrays, job.export, job, dataset, preset, optimizer
        )
    return CentralizedRun(metrics=metrics, output=output, curves=curves, export=exported)


def _export(
    trainer: DLRMTrainer,
    arrays: Mapping[str, np.ndarray],
    directory: Path,
    job: TrainJob,
    dataset: DataSet,
    preset: Preset,
    optimizer: OptimizerKind,
) -> Path:
    from enclaverec.model.export import ModelMetadata, export_saved_model

    hashing = dataset.info.get("hashing")
    metadata = ModelMetadata(
        spec=dataset.spec,
        model=trainer.config.model,
        preset=preset.value,
        optimizer=optimizer.value,
        dataset=dataset.name,
        seed=job.seed,
        table_size=job.table_size,
        hashing=plain_hashing(hashing),
    )
    return export_saved_model(trainer, arrays, directory, metadata)


def plain_hashing(hashing: Any) -> dict[str, Any] | None:
    """The data set's category hashing as a JSON object (it may be an object or a dict)."""
    if hashing is None:
        return None
    if isinstance(hashing, Mapping):
        return dict(hashing)
    if hasattr(hashing, "to_dict"):
        return dict(hashing.to_dict())
    raise ConfigError(f"cannot record the data set's hashing ({type(hashing).__name__})")


def print_results(run: CentralizedRun) -> None:
    from rich.table import Table

    metrics = run.metrics
    table = Table(title=f"centralized DLRM on {metrics['dataset']}", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("preset / optimizer", f"{metrics['preset']} / {metrics['optimizer']}"),
        ("test AUC", f"{metrics['test_auc']:.4f}"),
        ("test log loss", f"{metrics['test_logloss']:.4f}"),
        ("test accuracy", f"{metrics['test_accuracy']:.4f}"),
        ("test rows", f"{metrics['test_rows']:,}"),
        ("best epoch", f"{metrics['best_epoch']} of {metrics['epochs_completed']}"),
        ("training samples/s", f"{metrics['train_samples_per_second']:,.0f}"),
        ("wall time", f"{metrics['wall_seconds']:.1f} s"),
    ]
    if "oracle_auc" in metrics:
        rows.insert(2, ("oracle AUC (planted model)", f"{metrics['oracle_auc']:.4f}"))
        rows.insert(3, ("logistic regression AUC", f"{metrics['baseline_logreg_auc']:.4f}"))
    for name, value in rows:
        table.add_row(name, value)
    console = stdout_console()
    console.print(table)
    console.print(f"metrics: {run.output / 'metrics.json'}", markup=False)
    console.print(f"curves: {run.curves}", markup=False)
    if run.export is not None:
        console.print(f"model: {run.export}", markup=False)


def _train(args: argparse.Namespace) -> int:
    job = resolve_job(args)
    print_results(run_centralized(job))
    return 0


def add_data_options(parser: argparse.ArgumentParser, *, defaults_from: str) -> None:
    """--dataset / --data / --table-size / --on-bad-line / --seed, shared with evaluate."""
    parser.add_argument(
        "--dataset",
        metavar="NAME",
        help=f"a built-in data set: {', '.join(BUILTIN_DATASETS)}",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        metavar="PATH",
        help="Criteo-format TSV file(s), plain or gzip (instead of --dataset)",
    )
    parser.add_argument(
        "--seed",
        metavar="N",
        help=f"seed of the split, shuffling and initial weights (default: {defaults_from})",
    )
    parser.add_argument(
        "--table-size",
        metavar="N",
        help="embedding rows per categorical feature for --data (default: 100000)",
    )
    parser.add_argument(
        "--on-bad-line",
        metavar="fail|skip",
        help="a malformed data line is fatal (fail, the default) or skipped and counted",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "train",
        help="train the DLRM centrally (the plaintext baseline)",
        description=(
            "Train the DLRM on one machine without a TEE: the baseline the secure modes\n"
            "are measured against. Evaluates on the validation split after every epoch,\n"
            "keeps the best epoch's weights and scores them on the test split. Writes\n"
            "DIR/metrics.json and DIR/curves.png, and with --export a SavedModel.\n\n"
            "Presets: small (embedding 16, bottom 64-16, top 64-32-1, sparse Adagrad lr\n"
            "0.05, batch 256, at most 10 epochs, early stopping after 2 epochs without a\n"
            "better validation AUC) and kaggle (bottom 512-256-64-16, top 512-256-1, SGD lr\n"
            "0.1, batch 128, 1 epoch). Default: small below 1,000,000 training rows.\n\n"
            "Options may also come from the [train] table of --config FILE.toml (keys as\n"
            "the long flags, e.g. batch-size = 512); flags given here override it."
        ),
        handler=_train,
    )
    add_data_options(parser, defaults_from="0")
    parser.add_argument("--model", metavar="small|kaggle", help="the preset (see above)")
    parser.add_argument("--epochs", metavar="N", help="at most N epochs (default: the preset's)")
    parser.add_argument("--batch-size", metavar="N", help="rows per step (default: the preset's)")
    parser.add_argument("--lr", metavar="RATE", help="learning rate (default: the preset's)")
    parser.add_argument(
        "--optimizer",
        metavar="sgd|adagrad",
        help="sgd, or adagrad (row-wise on embeddings); default: the preset's",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="a TOML file with [train]")
    parser.add_argument(
        "--output", metavar="DIR", help="where to write the results (default: runs/train-<data>)"
    )
    parser.add_argument(
        "--export", metavar="DIR", help="also write the best model as a SavedModel to DIR"
    )
