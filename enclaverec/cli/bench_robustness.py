"""``enclaverec bench robustness``: one malicious member against each defence.

Real federations (simulated TEE, attested parties, gRPC over loopback; the roles in
threads of this process), the DLRM on each data set's IID shares, with the last party
malicious: a scaled update claiming 2**62 rows, a sign-flipped update, or lying
evaluations. Each cell is the test AUC of the best model an honest party exported, scored
as ``enclaverec evaluate`` scores it; beside each defence, its honest parties alone.
The malicious behaviour lives only in the benchmark (``app/bench_robustness.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from enclaverec.app.bench_robustness import (
    COLUMNS,
    DEFAULT_DATASETS,
    DEFAULT_ROUNDS,
    DEFAULT_SCALE,
    DEFENCES,
    HONEST_ONLY,
    Attack,
    RobustnessConfig,
    run_robustness,
)
from enclaverec.cli.bench_runs import run_and_report
from enclaverec.cli.options import parse_integer
from enclaverec.cli.output import ConsoleEvents, stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.data.registry import dataset_names
from enclaverec.errors import UsageError


def parse_config(args: argparse.Namespace) -> RobustnessConfig:
    strategies = tuple(dict.fromkeys(args.defence)) if args.defence else None
    defences = tuple(d for d in DEFENCES if strategies is None or d.strategy in strategies)
    attacks = tuple(Attack(a) for a in dict.fromkeys(args.attack)) if args.attack else tuple(Attack)
    try:
        scale = float(args.scale)
    except ValueError as exc:
        raise UsageError(f"--scale must be a number, got {args.scale!r}") from exc
    return RobustnessConfig(
        datasets=tuple(dict.fromkeys(args.dataset)) if args.dataset else DEFAULT_DATASETS,
        defences=defences,
        attacks=attacks,
        rounds=parse_integer("rounds", args.rounds, minimum=1),
        scale=scale,
        seed=parse_integer("seed", args.seed, minimum=0),
    )


def _print(report: Mapping[str, Any]) -> None:
    from rich.table import Table

    console = stdout_console()
    cells = report["cells"]
    for dataset in dict.fromkeys(cell["dataset"] for cell in cells):
        table = Table(
            title=f"{dataset}: test AUC of the model an honest party exports "
            f"({report['rounds']} rounds; in brackets: minus honest-only)"
        )
        table.add_column("defence (parties)")
        columns = [c for c in COLUMNS if any(cell["column"] == c for cell in cells)]
        for column in columns:
            table.add_column(column, justify="right")
        for defence in dict.fromkeys(c["defence"] for c in cells if c["dataset"] == dataset):
            row = {
                c["column"]: c for c in cells if (c["dataset"], c["defence"]) == (dataset, defence)
            }
            honest = row.get(HONEST_ONLY)
            parties = max(c["parties"] for c in row.values())
            values = []
            for column in columns:
                cell = row.get(column)
                if cell is None:
                    values.append("-")
                elif column == HONEST_ONLY or honest is None:
                    values.append(f"{cell['test_auc']:.4f}")
                else:
                    gap = cell["test_auc"] - honest["test_auc"]
                    values.append(f"{cell['test_auc']:.4f} ({gap:+.4f})")
            table.add_row(f"{defence} ({parties})", *values)
        console.print(table)
    environment = report["environment"]
    before = environment["load_average_1min_before"]
    after = environment["load_average_1min_after"]
    console.print(
        f"{report['wall_seconds']:.0f} s; load average {before:.2f} before, {after:.2f} "
        f"after, on {environment['cpu_count']} cores",
        markup=False,
        soft_wrap=True,
    )


def _bench(args: argparse.Namespace) -> int:
    config = parse_config(args)
    return run_and_report(
        args,
        lambda work: run_robustness(config, work, events=ConsoleEvents()),
        _print,
        prefix="enclaverec-bench-robustness-",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``robustness`` to the ``bench`` group."""
    parser = add_command(
        subparsers,
        "robustness",
        help="one malicious member (scaled, sign-flipped, lying) against each defence",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        handler=_bench,
    )
    parser.add_argument("--output", metavar="FILE.json", help="also write the figures as JSON")
    parser.add_argument("--runs", metavar="DIR", help="keep every federation's folder here")
    parser.add_argument(
        "--dataset",
        action="append",
        choices=dataset_names(),
        help=f"repeatable (default: {', '.join(DEFAULT_DATASETS)})",
    )
    parser.add_argument(
        "--defence",
        action="append",
        choices=[d.strategy for d in DEFENCES],
        help="repeatable (default: all: "
        + "; ".join(f"{d.strategy} with {d.parties} parties" for d in DEFENCES)
        + ")",
    )
    parser.add_argument(
        "--attack",
        action="append",
        choices=[a.value for a in Attack],
        help="repeatable (default: all)",
    )
    parser.add_argument(
        "--rounds", default=str(DEFAULT_ROUNDS), metavar="R", help=f"(default: {DEFAULT_ROUNDS})"
    )
    parser.add_argument(
        "--scale",
        default=str(DEFAULT_SCALE),
        metavar="S",
        help=f"factor of the scaled update (default: {DEFAULT_SCALE:g})",
    )
    parser.add_argument("--seed", default="0", metavar="N", help="split, partition, weights")
