"""``enclaverec bench distributed``: what the enclaves cost a whole distributed job.

The same job (data set, workers, parameter servers, epochs, seed) runs as processes on
this machine with the simulated TEE (attested TLS everywhere, sealing) and with ``--tee
none`` (plaintext loopback), interleaved (simulated, none, simulated, ...), ``repeats``
times each; reports the median training throughput of each and their ratio, the median
step split into wait, pull, compute and push, and the payload bytes per step per worker.
Then the bytes per step per worker at the kaggle shape (26 tables of 100,000 rows,
synthetic Zipf ids), measured on the data plane alone (payload sizes do not depend on the
TEE: TLS adds a constant framing).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclaverec.errors import ConfigError
from enclaverec.tee.kinds import TEEKind

PHASES = ("wait", "pull", "compute", "push", "total")


@dataclass(frozen=True)
class DistributedBenchConfig:
    dataset: str = "movielens-100k"
    workers: int = 2
    paramservers: int = 1
    epochs: int = 1
    repeats: int = 3
    seed: int = 0
    kaggle_steps: int = 6

    def __post_init__(self) -> None:
        for name in ("workers", "paramservers", "epochs", "repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.kaggle_steps < 0:
            raise ConfigError("kaggle_steps must not be negative (0 skips the kaggle shape)")


@dataclass(frozen=True)
class BenchRun:
    tee: TEEKind
    repeat: int
    samples_per_second: float
    wall_seconds: float
    step_ms: dict[str, float]
    bytes_per_step_per_worker: float
    test_auc: float


def _run_once(
    config: DistributedBenchConfig, dataset: Any, tee: TEEKind, repeat: int, folder: Path
) -> BenchRun:
    from enclaverec.app.data import DataConfig
    from enclaverec.app.distributed import (
        DistributedSimulationConfig,
        PlanOptions,
        remove_simulation,
        simulate_distributed,
    )

    output = folder / f"{tee.value}-{repeat}"
    result = simulate_distributed(
        DistributedSimulationConfig(
            data=DataConfig.builtin(config.dataset, seed=config.seed),
            plan=PlanOptions(
                workers=config.workers, paramservers=config.paramservers, epochs=config.epochs
            ),
            output=output,
            tee=tee,
            log_level="warning",
        ),
        dataset=dataset,
    )
    metrics = result.metrics
    remove_simulation(output)
    return BenchRun(
        tee=tee,
        repeat=repeat,
        samples_per_second=float(metrics["train_samples_per_second"]),
        wall_seconds=float(metrics["wall_seconds"]),
        step_ms={p: 1000 * float(metrics["step_seconds_median"][p]) for p in PHASES},
        bytes_per_step_per_worker=float(metrics["bytes_per_step_per_worker"]),
        test_auc=float(metrics["test_auc"]),
    )


def _summary(runs: list[BenchRun]) -> dict[str, Any]:
    return {
        "samples_per_second_median": statistics.median(r.samples_per_second for r in runs),
        "samples_per_second": [round(r.samples_per_second, 1) for r in runs],
        "wall_seconds": [round(r.wall_seconds, 1) for r in runs],
        "step_ms_median": {
            p: round(statistics.median(r.step_ms[p] for r in runs), 3) for p in PHASES
        },
        "bytes_per_step_per_worker": statistics.median(r.bytes_per_step_per_worker for r in runs),
        "test_auc": [round(r.test_auc, 5) for r in runs],
    }


def run_distributed_bench(
    config: DistributedBenchConfig,
    workdir: Path,
    *,
    on_run: Callable[[BenchRun], None] | None = None,
) -> dict[str, Any]:
    """Measure (see the module docstring); ``workdir`` holds each run while it runs."""
    from enclaverec.app.bench_data_plane import DataPlaneBenchConfig, measure
    from enclaverec.app.data import DataConfig, load_data

    dataset = load_data(DataConfig.builtin(config.dataset, seed=config.seed), progress=False)
    runs: dict[TEEKind, list[BenchRun]] = {TEEKind.SIMULATED: [], TEEKind.NONE: []}
    for repeat in range(config.repeats):
        for tee in (TEEKind.SIMULATED, TEEKind.NONE):
            run = _run_once(config, dataset, tee, repeat, workdir)
            runs[tee].append(run)
            if on_run is not None:
                on_run(run)
    secure, plain = _summary(runs[TEEKind.SIMULATED]), _summary(runs[TEEKind.NONE])
    report: dict[str, Any] = {
        "dataset": dataset.name,
        "workers": config.workers,
        "paramservers": config.paramservers,
        "epochs": config.epochs,
        "repeats": config.repeats,
        "mode": "sync",
        "simulated": secure,
        "none": plain,
        "throughput_ratio": secure["samples_per_second_median"]
        / plain["samples_per_second_median"],
    }
    if config.kaggle_steps:
        kaggle = measure(
            DataPlaneBenchConfig(
                shape="kaggle",
                workers=config.workers,
                shards=config.paramservers,
                steps=config.kaggle_steps,
                warmup=1,
                seed=config.seed,
            )
        )
        report["kaggle_shape"] = {
            key: kaggle[key]
            for key in kaggle
            if key.endswith("bytes_per_step_per_worker")
            or key in ("data", "batch_size", "dense_bytes", "median_step_ms")
        }
    return report
