"""``enclaverec bench scale``: the aggregator under many light parties (issue 12); the
measurement itself is :mod:`enclaverec.app.bench_scale`, this module only wires the flags and
prints the table."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from enclaverec.cli.options import parse_integer
from enclaverec.cli.output import stdout_console
from enclaverec.cli.registry import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``scale`` to the ``bench`` group."""
    parser = add_command(
        subparsers,
        "scale",
        help="one aggregator, many light parties: enrollment, round time, CPU, memory",
        description=(
            "For each number of parties, a simulated-TEE federation with the real aggregator\n"
            "process and light parties (many per process, each with its own key, evidence,\n"
            "enrollment and mutual TLS, training logistic regression on its MovieLens-100K\n"
            "share). Prints enrollment time, median round time (rounds 2 on), aggregator CPU\n"
            "seconds per round and peak memory, and the slope of peak memory against N."
        ),
        handler=_run,
    )
    parser.add_argument(
        "--parties",
        nargs="+",
        default=None,
        metavar="N",
        help="numbers of parties (default: 4 16 64 256)",
    )
    parser.add_argument("--rounds", default=None, metavar="R", help="rounds (default: 5)")
    parser.add_argument("--output", type=Path, metavar="FILE.json", help="write figures as JSON")


def _run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from enclaverec.app import bench_scale as scale
    from enclaverec.report import write_json

    config = scale.ScaleBenchConfig(
        parties=tuple(parse_integer("parties", n, minimum=1) for n in args.parties)
        if args.parties
        else scale.DEFAULT_PARTIES,
        rounds=parse_integer("rounds", args.rounds, minimum=2)
        if args.rounds
        else scale.DEFAULT_ROUNDS,
    )
    if args.output is not None:
        from enclaverec.app.outputs import check_output_file

        check_output_file(args.output)
    console = stdout_console()

    def show(point: scale.ScalePoint) -> None:
        console.print(
            f"{point.parties} parties: enrolled in {point.enrollment_seconds:.1f} s, median "
            f"round {point.median_round_seconds:.2f} s",
            markup=False,
        )

    with tempfile.TemporaryDirectory(prefix="enclaverec-bench-scale-") as workdir:
        points = scale.run_scale_bench(config, Path(workdir), on_point=show)
    table = Table(title=f"bench scale ({config.rounds} rounds, logreg, simulated TEE)")
    for column in (
        "parties",
        "enroll s",
        "round s",
        "agg CPU s/round",
        "parties CPU s/round",
        "agg peak MiB",
        "polls expired",
        "busy",
        "load start/end",
    ):
        table.add_column(column, justify="right")
    for p in points:
        table.add_row(
            str(p.parties),
            f"{p.enrollment_seconds:.1f}",
            f"{p.median_round_seconds:.2f}",
            f"{p.aggregator_cpu_seconds_per_round:.2f}",
            f"{p.party_cpu_seconds_per_round:.2f}",
            f"{p.aggregator_peak_rss_mib:.0f}",
            str(p.polls_expired),
            str(p.overload_refusals),
            f"{p.load_average[0]:.1f}/{p.load_average[1]:.1f}",
        )
    console.print(table)
    console.print(
        "enroll: all parties, from go to the last certificate; round: median of rounds 2 on; "
        "polls expired: task requests that waited a whole poll; busy: calls refused at a bound; "
        "parties CPU: all light-party processes; load: 1-minute load average",
        markup=False,
        soft_wrap=True,
    )
    slope = scale.memory_slope_mib_per_party(points)
    if slope is not None:
        console.print(f"peak memory slope: {slope:.3f} MiB per party", markup=False)
    console.print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores: figures taken while "
        "other processes run are provisional",
        markup=False,
        soft_wrap=True,
    )
    if args.output is not None:
        write_json(args.output, scale.report(points))
        console.print(f"wrote {args.output}", markup=False, soft_wrap=True)
    return 0
