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
import itertools
import platform
import resource
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from enclaverec.app.centralized import start_tensorflow_threads
from enclaverec.cli.options import parse_choice, parse_integer, parse_path
from enclaverec.cli.output import stderr_console, stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.errors import ConfigError

NUM_TABLES = 26
TABLE_ROWS = 100_000
NUM_DENSE = 13
ZIPF_EXPONENT = 1.2
LEARNING_RATE = 0.1
DEFAULT_BATCH_SIZES = "128,2048"
DEFAULT_STEPS = 100
# Timed runs per figure: the median resists a neighbour's burst of work on a shared
# machine; the best shows what the machine can do when left alone.
DEFAULT_REPEATS = 3
# The original PyTorch DLRM on a 2-core x86-64 machine (the issue's reference figures).
PYTORCH_REFERENCE = {128: 15_800, 2048: 32_000}


def warmup_steps(steps: int) -> int:
    """Steps run before the clock starts: the same block shapes as a run of ``steps``
    (each shape is traced and compiled once), so no compilation falls in the timed part."""
    from enclaverec.model.trainer import STEPS_PER_CALL

    return steps % STEPS_PER_CALL + (STEPS_PER_CALL if steps >= STEPS_PER_CALL else 0)


def zipf_ids(rng: np.random.Generator, rows: int, size: tuple[int, ...]) -> np.ndarray:
    """Ids in [0, rows) with P(rank k) proportional to k^-1.2, ranks shuffled over the
    table so that frequent rows are not all adjacent."""
    weights = np.arange(1, rows + 1, dtype=np.float64) ** -ZIPF_EXPONENT
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    ranks = np.searchsorted(cdf, rng.random(size), side="right")
    ranks = np.minimum(ranks, rows - 1)
    return rng.permutation(rows)[ranks].astype(np.int32)


def benchmark_rows(rows: int, seed: int):
    """Criteo-shaped rows: integer counts, Zipf category ids, labels at a 25% click rate.

    Returns (Examples in the model's form, the raw integers for the TSV file)."""
    from enclaverec.data.schema import Examples

    rng = np.random.default_rng(seed)
    integers = rng.geometric(0.05, size=(rows, NUM_DENSE)).astype(np.int64) - 1
    categorical = zipf_ids(rng, TABLE_ROWS, (rows, NUM_TABLES))
    labels = (rng.random(rows) < 0.25).astype(np.float32)
    examples = Examples(
        dense=np.log1p(integers).astype(np.float32),
        categorical=categorical,
        labels=labels,
        row_ids=np.arange(rows, dtype=np.int64),
    )
    return examples, integers


def write_criteo_file(path: Path, examples, integers: np.ndarray, seed: int) -> None:
    """The rows as a Criteo TSV file; category ids become distinct 8-hex-digit values."""
    rng = np.random.default_rng(seed + 1)
    # One random 32-bit value per (table, id), as a Criteo category looks; formatted once
    # per id actually used.
    codes = rng.integers(0, 2**32, size=(NUM_TABLES, TABLE_ROWS), dtype=np.uint64)
    hex_columns = []
    for table in range(NUM_TABLES):
        ids = examples.categorical[:, table]
        used, inverse = np.unique(ids, return_inverse=True)
        names = np.array([f"{code:08x}" for code in codes[table, used].tolist()])
        hex_columns.append(names[inverse].tolist())
    columns = [examples.labels.astype(np.int64).astype(str).tolist()]
    columns += [integers[:, i].astype(str).tolist() for i in range(NUM_DENSE)]
    columns += hex_columns
    with path.open("w", encoding="ascii") as handle:
        handle.writelines("\t".join(fields) + "\n" for fields in zip(*columns, strict=True))


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024


def _bench(args: argparse.Namespace) -> int:
    threads = start_tensorflow_threads()
    from enclaverec.data.criteo import CategoryHashing, iter_criteo_examples
    from enclaverec.data.schema import FeatureSpec
    from enclaverec.dlrm.config import KAGGLE, OptimizerKind
    from enclaverec.model._tf import tf
    from enclaverec.model.trainer import DLRMTrainer, DLRMTrainerConfig
    from enclaverec.report import write_json
    from enclaverec.trainer import FitConfig

    batch_sizes = _batch_sizes(args.batch_sizes or DEFAULT_BATCH_SIZES)
    steps = parse_integer(
        "steps", args.steps if args.steps is not None else DEFAULT_STEPS, minimum=1
    )
    err = stderr_console()
    repeats = parse_integer(
        "repeats", args.repeats if args.repeats is not None else DEFAULT_REPEATS, minimum=1
    )
    warm = warmup_steps(steps)
    rows = (steps + warm) * max(batch_sizes)
    err.print(f"generating {rows:,} rows (26 tables x 100,000, Zipf {ZIPF_EXPONENT})", markup=False)
    examples, integers = benchmark_rows(rows, seed=0)
    spec = FeatureSpec(
        dense_names=tuple(f"I{i}" for i in range(1, NUM_DENSE + 1)),
        categorical_names=tuple(f"C{i}" for i in range(1, NUM_TABLES + 1)),
        table_sizes=(TABLE_ROWS,) * NUM_TABLES,
    )
    xla = parse_choice("xla", args.xla or ("on" if KAGGLE.jit_compile else "off"), ("on", "off"))
    trainer = DLRMTrainer(
        spec,
        DLRMTrainerConfig(model=KAGGLE.model, optimizer=OptimizerKind.SGD, jit_compile=xla == "on"),
        examples,
    )
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="enclaverec-bench-") as tmp:
        criteo_path = Path(tmp) / "bench.tsv"
        err.print(f"writing the rows as a Criteo file ({rows:,} lines)", markup=False)
        write_criteo_file(criteo_path, examples, integers, seed=0)
        hashing = CategoryHashing.uniform(NUM_TABLES, TABLE_ROWS)
        for batch in batch_sizes:
            err.print(f"batch {batch}: compute only, {repeats} x {steps} steps", markup=False)
            trainer.train_local(FitConfig(batch, LEARNING_RATE, max_steps=warm))
            compute = [
                trainer.train_local(FitConfig(batch, LEARNING_RATE, max_steps=steps))
                for _ in range(repeats)
            ]
            err.print(
                f"batch {batch}: end to end (Criteo reader), {repeats} x {steps} steps",
                markup=False,
            )
            with closing_stream(
                iter_criteo_examples([criteo_path], hashing=hashing, batch_size=batch)
            ) as stream:
                warm_batches = list(itertools.islice(stream, warm))
            trainer.train_batches(warm_batches, learning_rate=LEARNING_RATE, prefetch=0)
            end_to_end = []
            for _ in range(repeats):
                with closing_stream(
                    iter_criteo_examples([criteo_path], hashing=hashing, batch_size=batch)
                ) as stream:
                    timed = itertools.islice(stream, steps)
                    end_to_end.append(trainer.train_batches(timed, learning_rate=LEARNING_RATE))
            results.append(
                {
                    "batch_size": batch,
                    "steps": steps,
                    "repeats": repeats,
                    "pytorch_reference_samples_per_second": PYTORCH_REFERENCE.get(batch),
                    **_figures("compute", compute),
                    **_figures("end_to_end", end_to_end),
                }
            )
    report = {
        "benchmark": "train",
        "shape": {
            "tables": NUM_TABLES,
            "rows_per_table": TABLE_ROWS,
            "dense_features": NUM_DENSE,
            "zipf_exponent": ZIPF_EXPONENT,
            "preset": "kaggle",
            "optimizer": "sgd",
            "learning_rate": LEARNING_RATE,
        },
        "threads": threads,
        "tensorflow": tf.__version__,
        "jit_compile": trainer.config.jit_compile,
        "results": results,
        "peak_rss_mb": _peak_rss_mb(),
        "note": "provisional unless the machine was otherwise idle",
    }
    _print(report)
    if args.output is not None:
        path = write_json(parse_path("output", args.output), report)
        stdout_console().print(f"written: {path}", markup=False)
    return 0


@contextmanager
def closing_stream(stream: Iterator[Any]) -> Iterator[Iterator[Any]]:
    """Close a generator (and the file it reads) when the block ends, even half-read."""
    try:
        yield stream
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def _figures(way: str, runs: list) -> dict[str, Any]:
    """The median and best samples/s of the repeats, and every run's figure."""
    rates = [run.samples_per_second for run in runs]
    return {
        f"{way}_samples_per_second": float(np.median(rates)),
        f"{way}_best_samples_per_second": max(rates),
        f"{way}_runs_samples_per_second": rates,
    }


def _batch_sizes(text: str) -> list[int]:
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    if not parts:
        raise ConfigError("--batch-sizes needs at least one batch size, e.g. 128,2048")
    return [parse_integer("batch-sizes", part, minimum=1) for part in parts]


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
        help=f"comma-separated batch sizes (default: {DEFAULT_BATCH_SIZES})",
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
