"""``enclaverec demo``: the main job on embedded defaults. Every mode that exists trains
on MovieLens-100K with the same seed and is scored on the same test split; the command
prints a comparison table and writes ``report.md``, ``report.json`` and each mode's own
``metrics.json``.

A mode is one runner function in :data:`MODES`: it receives the shared
:class:`DemoContext` and returns its validated metrics report. Adding a row to the demo
is adding one function to that tuple.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enclaverec.cli.commands.train import TrainJob, run_centralized
from enclaverec.cli.output import stderr_console, stdout_console
from enclaverec.cli.registry import add_command

if TYPE_CHECKING:
    from enclaverec.data.schema import DataSet

DEMO_DATASET = "movielens-100k"
DEMO_SEED = 0
DEFAULT_OUTPUT = Path("runs") / "demo"


@dataclass(frozen=True)
class DemoContext:
    """What every mode of the demo shares: the loaded data set, the seed, and the folder
    under which each mode writes its own results (``output / <mode>``)."""

    dataset: DataSet
    seed: int
    output: Path


ModeRunner = Callable[[DemoContext], dict[str, Any]]


def centralized_mode(context: DemoContext) -> dict[str, Any]:
    """The plaintext baseline: the DLRM trained on one machine, no TEE."""
    from enclaverec.data.sources import DataSelection

    job = TrainJob(
        selection=DataSelection(dataset=DEMO_DATASET),
        preset=None,
        epochs=None,
        batch_size=None,
        learning_rate=None,
        optimizer=None,
        seed=context.seed,
        table_size=None,
        on_bad_line="fail",
        output=context.output / "centralized",
        export=None,
    )
    return run_centralized(job, dataset=context.dataset).metrics


DEMO_PARTIES = 4


def _federated(context: DemoContext, tee: str) -> dict[str, Any]:
    # The demo runs exactly what `enclaverec federated simulate` runs with these flags.
    from enclaverec.cli.commands.federated import simulate_federation
    from enclaverec.cli.main import build_parser

    output = context.output / f"federated-{tee}"
    if (output / "federation" / "federation.toml").exists():
        # The demo's own previous run: simulate refuses to write into a used folder.
        import shutil

        shutil.rmtree(output)
    args = build_parser().parse_args(
        [
            "federated",
            "simulate",
            "--parties",
            str(DEMO_PARTIES),
            "--partition",
            "iid",
            "--dataset",
            DEMO_DATASET,
            "--seed",
            str(context.seed),
            "--tee",
            tee,
            "--output",
            str(output),
        ]
    )
    return simulate_federation(args=args, output=output, dataset=context.dataset)


def federated_mode(context: DemoContext) -> dict[str, Any]:
    """Horizontal federated learning: 4 parties (IID) and an aggregator, each its own
    process, the aggregator and parties in simulated enclaves with attested channels."""
    return _federated(context, "simulated")


def federated_baseline_mode(context: DemoContext) -> dict[str, Any]:
    """The same federation over plaintext loopback, no TEE: the price of security is the
    difference to the row above."""
    return _federated(context, "none")


# The demo's rows, in order. Distributed runners join here.
MODES: tuple[ModeRunner, ...] = (centralized_mode, federated_mode, federated_baseline_mode)


def _demo(args: argparse.Namespace) -> int:
    from rich.table import Table

    from enclaverec.data.sources import DataSelection, load_dataset
    from enclaverec.report import SUMMARY_COLUMNS, format_summary_value, write_comparison_report

    output = Path(args.output) if args.output is not None else DEFAULT_OUTPUT
    err = stderr_console()
    err.print(f"demo: {DEMO_DATASET}, seed {DEMO_SEED}, results in {output}", markup=False)
    dataset = load_dataset(DataSelection(dataset=DEMO_DATASET), seed=DEMO_SEED, progress=True)
    context = DemoContext(dataset=dataset, seed=DEMO_SEED, output=output)
    runs = []
    for runner in MODES:
        err.rule(runner.__name__.removesuffix("_mode"))
        runs.append(runner(context))
    markdown, json_path = write_comparison_report(
        output,
        runs,
        title=f"enclaverec demo: {DEMO_DATASET}",
        notes=[
            "tee none is the plaintext measurement baseline, not a deployment mode.",
            "Each mode's full metrics are in its own folder's metrics.json.",
        ],
    )
    table = Table(title=f"enclaverec demo on {DEMO_DATASET} (seed {DEMO_SEED})")
    for key, header in SUMMARY_COLUMNS:
        table.add_column(header, justify="left" if key in ("mode", "tee") else "right")
    for metrics in runs:
        table.add_row(*(format_summary_value(key, metrics[key]) for key, _ in SUMMARY_COLUMNS))
    console = stdout_console()
    console.print(table)
    console.print(f"report: {markdown} and {json_path}", markup=False)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "demo",
        help="the main job on embedded defaults: every mode on MovieLens-100K, one table",
        description=(
            "Train every mode that exists on MovieLens-100K (seed 0, the `small` preset),\n"
            "score each on the same test split, print a comparison table and write\n"
            "DIR/report.md, DIR/report.json and each mode's DIR/<mode>/metrics.json.\n"
            "Needs the MovieLens files of `pip install --no-deps recbole==1.2.1`."
        ),
        handler=_demo,
    )
    parser.add_argument(
        "--output", metavar="DIR", help=f"where to write the report (default: {DEFAULT_OUTPUT})"
    )
