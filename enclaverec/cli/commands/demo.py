"""``enclaverec demo``: the main job on embedded defaults. Every mode that exists trains
on MovieLens-100K with the same seed and is scored on the same test split; the command
prints a comparison table (the run itself is :func:`enclaverec.app.demo.run_demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from enclaverec.app.demo import DEFAULT_OUTPUT, DEMO_DATASET, DEMO_SEED, DemoConfig, run_demo
from enclaverec.cli.output import ConsoleEvents, stdout_console
from enclaverec.cli.registry import add_command


def _demo(args: argparse.Namespace) -> int:
    from rich.table import Table

    from enclaverec.report import SUMMARY_COLUMNS, format_summary_value

    config = DemoConfig(output=Path(args.output) if args.output is not None else DEFAULT_OUTPUT)
    result = run_demo(config, events=ConsoleEvents())
    table = Table(title=f"enclaverec demo on {config.dataset} (seed {config.seed})")
    for key, header in SUMMARY_COLUMNS:
        table.add_column(header, justify="left" if key in ("mode", "tee") else "right")
    for metrics in result.runs:
        table.add_row(*(format_summary_value(key, metrics[key]) for key, _ in SUMMARY_COLUMNS))
    console = stdout_console()
    console.print(table)
    console.print(f"report: {result.markdown} and {result.json}", markup=False)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "demo",
        help="the main job on embedded defaults: every mode on MovieLens-100K, one table",
        description=(
            f"Train every mode that exists on {DEMO_DATASET} (seed {DEMO_SEED}, the `small`\n"
            "preset), score each on the same test split, print a comparison table and write\n"
            "DIR/report.md, DIR/report.json and each mode's DIR/<mode>/metrics.json.\n"
            "Each mode's folder is marked as the demo's own: a rerun replaces those folders\n"
            "and stops at any other folder in its way.\n"
            "Needs the MovieLens files of `pip install --no-deps recbole==1.2.1`."
        ),
        handler=_demo,
    )
    parser.add_argument(
        "--output", metavar="DIR", help=f"where to write the report (default: {DEFAULT_OUTPUT})"
    )
