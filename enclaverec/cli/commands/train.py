"""``enclaverec train``: the centralized plaintext baseline (the DLRM trained on one
machine), which the secure modes are measured against.

This module turns flags and the ``[train]`` table into a
:class:`~enclaverec.app.centralized.CentralizedJob` and prints the result; the run itself
is :func:`enclaverec.app.centralized.run_centralized` (shared with ``demo``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from enclaverec.app.centralized import (
    METRICS_FILE,
    CentralizedJob,
    CentralizedResult,
    run_centralized,
)
from enclaverec.app.data import DataConfig
from enclaverec.cli.config import load_toml, merge_options
from enclaverec.cli.options import parse_choice, parse_integer, parse_path, parse_positive_float
from enclaverec.cli.output import ConsoleEvents, stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.data.criteo import OnBadLine
from enclaverec.data.registry import dataset_help, dataset_names
from enclaverec.data.sources import DataSelection
from enclaverec.dlrm.config import OptimizerKind, Preset
from enclaverec.errors import ConfigError, UsageError

CONFIG_SECTION = "train"
ON_BAD_LINE = tuple(mode.value for mode in OnBadLine)

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
    "overwrite": False,
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
    if (dataset is None) == (data is None):
        raise UsageError(
            f"give exactly one of --dataset ({', '.join(dataset_names())}) or --data PATH..."
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


def resolve_job(args: argparse.Namespace) -> CentralizedJob:
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
    overwrite = values["overwrite"]
    if not isinstance(overwrite, bool):
        raise ConfigError(f"--overwrite must be true or false, got {overwrite!r}")
    return CentralizedJob(
        data=DataConfig(
            selection=data_selection(values["dataset"], values["data"]),
            seed=parse_integer("seed", values["seed"], minimum=0),
            table_size=optional("table_size", lambda n, v: parse_integer(n, v, minimum=2)),
            on_bad_line=OnBadLine(parse_choice("on-bad-line", values["on_bad_line"], ON_BAD_LINE)),
        ),
        preset=model,
        epochs=optional("epochs", lambda n, v: parse_integer(n, v, minimum=1)),
        batch_size=optional("batch_size", lambda n, v: parse_integer(n, v, minimum=1)),
        learning_rate=optional("lr", parse_positive_float),
        optimizer=optimizer,
        output=optional("output", parse_path),
        export=optional("export", parse_path),
        overwrite=overwrite,
    )


def print_results(run: CentralizedResult) -> None:
    from rich.table import Table

    metrics = run.metrics()
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
    console.print(f"metrics: {run.output / METRICS_FILE}", markup=False)
    console.print(f"curves: {run.curves}", markup=False)
    if run.export is not None:
        console.print(f"model: {run.export}", markup=False)


def _train(args: argparse.Namespace) -> int:
    job = resolve_job(args)
    print_results(run_centralized(job, events=ConsoleEvents()))
    return 0


def add_data_options(parser: argparse.ArgumentParser, *, defaults_from: str) -> None:
    """--dataset / --data / --table-size / --on-bad-line / --seed, shared with evaluate."""
    parser.add_argument(
        "--dataset",
        metavar="NAME",
        help=f"a built-in data set ({dataset_help()})",
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
        "--output",
        metavar="DIR",
        help="where to write metrics.json and curves.png: a new or empty folder "
        "(default: runs/train-<data>)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="replace metrics.json and curves.png of a previous run in --output",
    )
    parser.add_argument(
        "--export", metavar="DIR", help="also write the best model as a SavedModel to DIR"
    )
