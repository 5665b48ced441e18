"""``enclaverec bench distributed``: a whole distributed job with the simulated TEE and
without, interleaved (:mod:`enclaverec.app.bench_distributed` measures; this module wires
the flags and prints the figures)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from enclaverec.cli.options import parse_integer
from enclaverec.cli.output import stdout_console
from enclaverec.cli.registry import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``distributed`` to the ``bench`` group."""
    parser = add_command(
        subparsers,
        "distributed",
        help="secure distributed training: samples/s simulated TEE vs --tee none, step split, "
        "bytes per step",
        description=(
            "Runs the same job (owner, key broker, parameter servers, workers as processes)\n"
            "with the simulated TEE and with --tee none, interleaved, --repeats times each;\n"
            "prints the median samples/s of each and their ratio, the median step split\n"
            "(wait, pull, compute, push), the bytes per step per worker, and the bytes per\n"
            "step per worker at the kaggle shape (26 x 100,000-row tables, synthetic)."
        ),
        handler=_run,
    )
    parser.add_argument("--dataset", default="movielens-100k", help="(default: movielens-100k)")
    parser.add_argument("--workers", default="2", metavar="W", help="(default: 2)")
    parser.add_argument("--ps", default="1", metavar="P", help="parameter servers (default: 1)")
    parser.add_argument("--epochs", default="1", metavar="E", help="epochs per run (default: 1)")
    parser.add_argument("--repeats", default="3", metavar="N", help="runs per mode (default: 3)")
    parser.add_argument(
        "--kaggle-steps", default="6", metavar="S", help="steps at the kaggle shape (0: skip)"
    )
    parser.add_argument("--output", type=Path, metavar="FILE.json", help="write figures as JSON")


def _run(args: argparse.Namespace) -> int:
    from enclaverec.app import bench_distributed as bench
    from enclaverec.report import write_json

    config = bench.DistributedBenchConfig(
        dataset=args.dataset,
        workers=parse_integer("workers", args.workers, minimum=1),
        paramservers=parse_integer("ps", args.ps, minimum=1),
        epochs=parse_integer("epochs", args.epochs, minimum=1),
        repeats=parse_integer("repeats", args.repeats, minimum=1),
        kaggle_steps=parse_integer("kaggle-steps", args.kaggle_steps, minimum=0),
    )
    if args.output is not None:
        from enclaverec.app.outputs import check_output_file

        check_output_file(args.output)
    console = stdout_console()

    def show(run: bench.BenchRun) -> None:
        console.print(
            f"run {run.repeat + 1} tee {run.tee.value}: {run.samples_per_second:,.0f} samples/s, "
            f"median step {run.step_ms['total']:.1f} ms, wall {run.wall_seconds:.1f} s",
            markup=False,
        )

    with tempfile.TemporaryDirectory(prefix="enclaverec-bench-distributed-") as workdir:
        report = bench.run_distributed_bench(config, Path(workdir), on_run=show)
    for tee in ("simulated", "none"):
        part = report[tee]
        steps = part["step_ms_median"]
        console.print(
            f"tee {tee}: median {part['samples_per_second_median']:,.0f} samples/s; median step "
            f"{steps['total']:.1f} ms = wait {steps['wait']:.1f} + pull {steps['pull']:.1f} + "
            f"compute {steps['compute']:.1f} + push {steps['push']:.1f}; "
            f"{part['bytes_per_step_per_worker']:,.0f} B per step per worker",
            markup=False,
        )
    console.print(
        f"throughput simulated / none: {report['throughput_ratio']:.3f} (target >= 0.9)",
        markup=False,
    )
    if "kaggle_shape" in report:
        kaggle = report["kaggle_shape"]
        console.print(
            f"kaggle shape ({kaggle['data']}, batch {kaggle['batch_size']}): "
            f"{kaggle['pulled_bytes_per_step_per_worker']:,} B pulled + "
            f"{kaggle['pushed_bytes_per_step_per_worker']:,} B pushed per step per worker "
            f"(dense arrays {kaggle['dense_bytes']:,} B)",
            markup=False,
        )
    if args.output is not None:
        write_json(args.output, report)
        console.print(f"figures: {args.output}", markup=False)
    return 0
