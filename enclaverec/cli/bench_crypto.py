"""``enclaverec bench crypto``: throughput of AES-256-GCM, sealing and encrypted data files.

Figures are GB/s (10**9 bytes per second) of plaintext, single-threaded: "wall" divides by
elapsed time, "per core" by the thread's CPU time (user + system), which stays meaningful
when other processes share the machine. The data file figures run on a generated
Criteo-shaped file in a temporary folder: "memory to memory" is the format's own cost;
"file to file" adds reading (warm page cache: the file was just written), writing and the
fsync that makes the output durable, so it depends on the disk.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from enclaverec.app.bench_crypto import MAX_SIZE_MB, run_benchmarks
from enclaverec.app.bench_crypto import environment as bench_environment
from enclaverec.cli.output import stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``crypto`` to the ``bench`` group."""
    parser = add_command(
        subparsers,
        "crypto",
        help="AES-256-GCM, sealing and encrypted data file throughput (GB/s per core)",
        description=(
            "Measure encryption and decryption throughput, single-threaded: the raw\n"
            "AES-256-GCM primitive, sealing, and end to end through the encrypted data file\n"
            "format (encrypt a generated Criteo file, verify it in memory, decrypt it to a\n"
            "file). Prints a table and writes the figures as JSON with --output."
        ),
        handler=_run,
    )
    parser.add_argument(
        "--size-mb",
        type=int,
        default=128,
        metavar="N",
        help="megabytes (2**20 bytes) of plaintext per measurement (default: 128)",
    )
    parser.add_argument("--output", type=Path, metavar="FILE.json", help="write figures as JSON")


def _run(args: argparse.Namespace) -> int:
    if not 1 <= args.size_mb <= MAX_SIZE_MB:
        raise UsageError(f"--size-mb must be 1 to {MAX_SIZE_MB}, got {args.size_mb}")
    if args.output is not None:
        from enclaverec.app.outputs import check_output_file

        check_output_file(args.output)
    with tempfile.TemporaryDirectory(prefix="enclaverec-bench-") as workdir:
        results = run_benchmarks(args.size_mb, Path(workdir))
    environment = bench_environment()

    from rich.table import Table

    table = Table(title=f"bench crypto ({args.size_mb} MiB per measurement, 1 thread)")
    table.add_column("operation")
    table.add_column("GB/s (wall)", justify="right")
    table.add_column("GB/s per core (CPU time)", justify="right")
    for m in results:
        table.add_row(m.name, f"{m.gb_per_second:.2f}", f"{m.gb_per_second_per_core:.2f}")
    console = stdout_console()
    console.print(table)
    console.print(
        f"load average {environment['load_average_1min']:.2f} on {environment['cpu_count']} "
        "cores: figures taken while other processes run are provisional",
        markup=False,
        soft_wrap=True,
    )
    if args.output is not None:
        report = {
            "benchmark": "crypto",
            "size_mb": args.size_mb,
            "unit": "GB/s = 1e9 bytes of plaintext per second, one thread",
            "environment": environment,
            "results": [m.to_dict() for m in results],
        }
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {args.output}", markup=False, soft_wrap=True)
    return 0
