"""``enclaverec bench train``: DLRM training throughput at Criteo Kaggle shape.

26 embedding tables of 100,000 rows with Zipf(1.2)-distributed ids, 13 dense features, the
``kaggle`` preset with SGD; for each batch size, samples per second computed two ways:

- compute only: the rows are in memory and the trainer gathers its batches itself;
- end to end: the same rows written as a Criteo TSV file (before the clock starts), then
  read, parsed and hashed by the streaming reader while the model trains on its batches.

Reference: the original PyTorch DLRM trains this shape at about 15,800 samples/s (batch
128) and 32,000 (batch 2048) on a 2-core x86-64 machine. Figures taken while other work
runs on the machine are not comparable.
"""

from __future__ import annotations

import argparse
from typing import Any

from enclaverec.app.bench_train import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_REPEATS,
    DEFAULT_STEPS,
    BenchTrainConfig,
    run_train_benchmark,
)
from enclaverec.cli.options import parse_choice, parse_integer, parse_path
from enclaverec.cli.output import ConsoleEvents, stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.errors import ConfigError


def _bench(args: argparse.Namespace) -> int:
    from enclaverec.report import write_json

    xla = None if args.xla is None else parse_choice("xla", args.xla, ("on", "off")) == "on"
    config = BenchTrainConfig(
        batch_sizes=_batch_sizes(args.batch_sizes)
        if args.batch_sizes is not None
        else DEFAULT_BATCH_SIZES,
        steps=DEFAULT_STEPS
        if args.steps is None
        else parse_integer("steps", args.steps, minimum=1),
        repeats=DEFAULT_REPEATS
        if args.repeats is None
        else parse_integer("repeats", args.repeats, minimum=1),
        jit_compile=xla,
    )
    output = None if args.output is None else parse_path("output", args.output)
    report = run_train_benchmark(config, events=ConsoleEvents())
    _print(report)
    if output is not None:
        path = write_json(output, report)
        stdout_console().print(f"written: {path}", markup=False)
    return 0


def _batch_sizes(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    if not parts:
        raise ConfigError("--batch-sizes needs at least one batch size, e.g. 128,2048")
    return tuple(parse_integer("batch-sizes", part, minimum=1) for part in parts)


def _print(report: dict[str, Any]) -> None:
    from rich.table import Table

    threads = report["threads"]
    table = Table(
        title=(
            f"DLRM kaggle preset, SGD, 26 x 100k tables (TensorFlow {report['tensorflow']}, "
            f"XLA {'on' if report['jit_compile'] else 'off'}, {threads['intra_op']} intra-op / "
            f"{threads['inter_op']} inter-op threads)"
        )
    )
    for header in (
        "batch",
        "compute samples/s\nmedian (best)",
        "end-to-end samples/s\nmedian (best)",
        "PyTorch DLRM\nreference",
    ):
        table.add_column(header, justify="right")
    for row in report["results"]:
        reference = row["pytorch_reference_samples_per_second"]
        table.add_row(
            str(row["batch_size"]),
            f"{row['compute_samples_per_second']:,.0f} "
            f"({row['compute_best_samples_per_second']:,.0f})",
            f"{row['end_to_end_samples_per_second']:,.0f} "
            f"({row['end_to_end_best_samples_per_second']:,.0f})",
            f"{reference:,}" if reference else "-",
        )
    console = stdout_console()
    console.print(table)
    console.print(f"peak memory (max RSS): {report['peak_rss_mb']:,.0f} MB", markup=False)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the group's subparsers."""
    parser = add_command(
        subparsers,
        "train",
        help="DLRM training throughput (samples/s), compute only and end to end",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        handler=_bench,
    )
    parser.add_argument(
        "--batch-sizes",
        metavar="LIST",
        help="comma-separated batch sizes (default: "
        + ",".join(str(size) for size in DEFAULT_BATCH_SIZES)
        + ")",
    )
    parser.add_argument(
        "--steps",
        metavar="N",
        help=f"timed steps per batch size and way (default: {DEFAULT_STEPS})",
    )
    parser.add_argument(
        "--repeats",
        metavar="N",
        help=f"timed runs per figure; the median is shown (default: {DEFAULT_REPEATS})",
    )
    parser.add_argument(
        "--xla",
        metavar="on|off",
        help="compile the training step with XLA (default: on, as the kaggle preset)",
    )
    parser.add_argument("--output", metavar="FILE", help="also write the figures as JSON")
