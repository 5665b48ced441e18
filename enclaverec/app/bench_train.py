"""The training benchmark: DLRM throughput at Criteo Kaggle shape (``enclaverec bench
train`` is its command line).

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

import itertools
import platform
import resource
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from enclaverec.app.centralized import start_tensorflow_threads
from enclaverec.app.events import JobEvents, QuietEvents
from enclaverec.errors import ConfigError

NUM_TABLES = 26
TABLE_ROWS = 100_000
NUM_DENSE = 13
ZIPF_EXPONENT = 1.2
LEARNING_RATE = 0.1
DEFAULT_BATCH_SIZES = (128, 2048)
DEFAULT_STEPS = 100
# Timed runs per figure: the median resists a neighbour's burst of work on a shared
# machine; the best shows what the machine can do when left alone.
DEFAULT_REPEATS = 3
# The original PyTorch DLRM on a 2-core x86-64 machine (the reference figures).
PYTORCH_REFERENCE = {128: 15_800, 2048: 32_000}


@dataclass(frozen=True)
class BenchTrainConfig:
    """What one run measures; ``jit_compile=None`` is the kaggle preset's choice."""

    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    steps: int = DEFAULT_STEPS
    repeats: int = DEFAULT_REPEATS
    jit_compile: bool | None = None

    def __post_init__(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"--batch-sizes must be positive, got {self.batch_sizes}")
        if self.steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {self.steps}")
        if self.repeats < 1:
            raise ConfigError(f"--repeats must be at least 1, got {self.repeats}")


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


def run_train_benchmark(
    config: BenchTrainConfig, *, events: JobEvents | None = None
) -> dict[str, Any]:
    """Every batch size of ``config``, compute only and end to end; returns the report."""
    events = events or QuietEvents()
    threads = start_tensorflow_threads()
    from enclaverec.data.criteo import CategoryHashing, iter_criteo_examples
    from enclaverec.data.schema import FeatureSpec
    from enclaverec.dlrm.config import KAGGLE, OptimizerKind
    from enclaverec.model._tf import tf
    from enclaverec.model.trainer import DLRMTrainer, DLRMTrainerConfig
    from enclaverec.trainer import FitConfig

    batch_sizes, steps, repeats = list(config.batch_sizes), config.steps, config.repeats
    warm = warmup_steps(steps)
    rows = (steps + warm) * max(batch_sizes)
    events.note(f"generating {rows:,} rows (26 tables x 100,000, Zipf {ZIPF_EXPONENT})")
    examples, integers = benchmark_rows(rows, seed=0)
    spec = FeatureSpec(
        dense_names=tuple(f"I{i}" for i in range(1, NUM_DENSE + 1)),
        categorical_names=tuple(f"C{i}" for i in range(1, NUM_TABLES + 1)),
        table_sizes=(TABLE_ROWS,) * NUM_TABLES,
    )
    jit_compile = KAGGLE.jit_compile if config.jit_compile is None else config.jit_compile
    trainer = DLRMTrainer(
        spec,
        DLRMTrainerConfig(model=KAGGLE.model, optimizer=OptimizerKind.SGD, jit_compile=jit_compile),
        examples,
    )
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="enclaverec-bench-") as tmp:
        criteo_path = Path(tmp) / "bench.tsv"
        events.note(f"writing the rows as a Criteo file ({rows:,} lines)")
        write_criteo_file(criteo_path, examples, integers, seed=0)
        hashing = CategoryHashing.uniform(NUM_TABLES, TABLE_ROWS)
        for batch in batch_sizes:
            events.note(f"batch {batch}: compute only, {repeats} x {steps} steps")
            trainer.train_local(FitConfig(batch, LEARNING_RATE, max_steps=warm))
            compute = [
                trainer.train_local(FitConfig(batch, LEARNING_RATE, max_steps=steps))
                for _ in range(repeats)
            ]
            events.note(f"batch {batch}: end to end (Criteo reader), {repeats} x {steps} steps")
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
    return report


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
