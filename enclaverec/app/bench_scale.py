"""The aggregator under many parties (``enclaverec bench scale``): enrollment time, round
time, aggregator CPU per round and peak memory, for each number of parties.

Only the aggregator is measured, so the parties are light: many per process (threads of a
few ``enclaverec.app.bench_scale_worker`` processes), yet each a real party: its own identity
key and simulated evidence, its own enrollment and mutual-TLS channel, training the numpy
logistic regression on its own share of MovieLens-100K (real SGD on a few hundred rows).
The aggregator is the real role, ``enclaverec federated aggregator``, in its own process:
its CPU time is read from ``/proc`` at each completed round and its peak resident memory
from the kernel when it exits (``wait4``), so nothing in the aggregator is instrumented.

Round times are the aggregator's own (its summary's history), median of rounds 2 onwards
(round 1 also waits for enrollment). Enrollment time runs from the moment every party
process is set up and told to go until the last party holds its client certificate.
Linux only (``/proc``, ``wait4``).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from enclaverec.data.partition import partition_dataset
from enclaverec.data.sources import DataSelection, load_dataset
from enclaverec.errors import TrainingError, UsageError
from enclaverec.federated.aggregator import AUDIT_FILE, SUMMARY_FILE
from enclaverec.federated.config import FederatedPlan, ModelKind
from enclaverec.federated.rounds import SelectionConfig
from enclaverec.federated.setup import init_federation
from enclaverec.federated.simulate import free_ports
from enclaverec.federated.strategies import LocalTraining, StrategyConfig
from enclaverec.processes import failure
from enclaverec.report import TEEKind

log = logging.getLogger(__name__)

DEFAULT_PARTIES = (4, 16, 64, 256)
DEFAULT_ROUNDS = 5
DEFAULT_PARTIES_PER_PROCESS = 64
DATASET = "movielens-100k"
SEED = 0
READY = "ready"
GO = "go\n"
DONE = "done"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ScaleBenchConfig:
    """What one ``bench scale`` invocation runs."""

    parties: tuple[int, ...] = DEFAULT_PARTIES
    rounds: int = DEFAULT_ROUNDS
    parties_per_process: int = DEFAULT_PARTIES_PER_PROCESS
    poll_seconds: float = 10.0
    timeout_seconds: float = 1800.0

    def __post_init__(self) -> None:
        if not self.parties or any(n < 1 for n in self.parties):
            raise UsageError("--parties takes one or more counts of at least 1")
        if self.rounds < 2:
            raise UsageError("--rounds must be at least 2 (round 1 also waits for enrollment)")
        if self.parties_per_process < 1:
            raise UsageError("parties per process must be at least 1")


@dataclass(frozen=True)
class ScalePoint:
    """The figures for one number of parties."""

    parties: int
    party_processes: int
    enrollment_seconds: float
    round_seconds: tuple[float, ...]
    median_round_seconds: float
    aggregator_cpu_seconds_per_round: float
    party_cpu_seconds_per_round: float
    """All light parties' processes together (they share the machine with the
    aggregator, so on a small machine their CPU lengthens the rounds too)."""
    aggregator_peak_rss_mib: float
    polls_expired: int
    overload_refusals: int
    rounds_completed: int
    test_auc: float | None
    load_average: tuple[float, float] = (0.0, 0.0)
    """The machine's 1-minute load average when the point started and ended."""


def bench_plan(parties: int, rounds: int, features: Any, hashing: Any) -> FederatedPlan:
    """The logistic-regression plan of ``federated simulate --model logreg``, every party
    selected every round."""
    return FederatedPlan(
        model=ModelKind.LOGREG,
        preset="logreg",
        optimizer="sgd",
        dataset=DATASET,
        features=features,
        hashing=hashing,
        seed=SEED,
        rounds=rounds,
        local=LocalTraining(epochs=1, batch_size=256, learning_rate=0.5, seed=SEED),
        strategy=StrategyConfig(name="fedavg"),
        selection=SelectionConfig(min_parties=parties),
    )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from ``/proc/PID/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _read_events(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    if not path.exists():
        return [], offset
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    complete = data[: data.rfind(b"\n") + 1]
    lines = [json.loads(line) for line in complete.splitlines() if line.strip()]
    return lines, offset + len(complete)


def _role(*args: str) -> list[str]:
    return [sys.executable, "-m", "enclaverec.cli.main", *args]


def _expect(stream: IO[str], word: str, name: str) -> None:
    line = stream.readline()
    if line.strip() != word:
        raise TrainingError(f"{name}: expected {word!r}, got {line.strip()[:200]!r}")


def measure_point(
    parties: int, config: ScaleBenchConfig, workdir: Path, data: Any = None
) -> ScalePoint:
    """One federation of ``parties`` light parties to the end; its figures."""
    load_before = os.getloadavg()[0]
    data = data or load_dataset(DataSelection(dataset=DATASET), seed=SEED)
    shares = partition_dataset(data, parties=parties, mode="iid", seed=SEED)
    port, enrollment_port = free_ports(2)
    root = workdir / f"parties-{parties}"
    files = init_federation(
        root / "federation",
        parties=parties,
        plan=bench_plan(parties, config.rounds, data.spec, data.info.get("hashing")),
        tee=TEEKind.SIMULATED,
        parties_attest=True,
        party_data=shares,
        port=port,
        enrollment_port=enrollment_port,
    )
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handles: list[IO[Any]] = []
    workers: list[subprocess.Popen[str]] = []
    aggregator: subprocess.Popen[bytes] | None = None
    try:
        aggregator_log = (logs / "aggregator.log").open("wb")
        handles.append(aggregator_log)
        aggregator = subprocess.Popen(
            _role(
                "federated",
                "aggregator",
                "--config",
                str(files.federation_toml),
                "--state-dir",
                str(files.aggregator_dir),
                "--port",
                str(port),
                "--enrollment-port",
                str(enrollment_port),
                "--log-level",
                "warning",
            ),  # fmt: skip
            stdout=aggregator_log,
            stderr=subprocess.STDOUT,
        )
        # The light parties: set up (keys, evidence backends, data) before the clock runs.
        configs = [str(path) for path in files.party_configs]
        per = config.parties_per_process
        for index, start in enumerate(range(0, parties, per)):
            listing = root / f"worker-{index}.json"
            listing.write_text(
                json.dumps({"configs": configs[start : start + per], "poll": config.poll_seconds})
            )
            error_log = (logs / f"worker-{index}.log").open("wb")
            handles.append(error_log)
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "enclaverec.app.bench_scale_worker", str(listing)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=error_log,
                    text=True,
                )
            )
        for index, worker in enumerate(workers):
            assert worker.stdout is not None
            _expect(worker.stdout, READY, f"party process {index} (see {logs})")
        # The clock starts with the aggregator serving: its own start is not enrollment.
        _wait_started(aggregator, files.aggregator_dir / AUDIT_FILE, logs)
        go = time.time()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(GO)
            worker.stdin.flush()
        cpu_at_round, party_cpu_at_round = _follow(
            aggregator, files.aggregator_dir / AUDIT_FILE, config, workers, logs
        )
        # Reap the aggregator with its resource usage: the kernel's peak resident memory.
        _, status, usage = os.wait4(aggregator.pid, 0)
        aggregator.returncode = os.waitstatus_to_exitcode(status)
        if aggregator.returncode != 0:
            raise TrainingError(
                "the aggregator failed: " + failure("aggregator", aggregator.returncode, logs)
            )
        results = [
            result
            for index, worker in enumerate(workers)
            for result in _worker_results(worker, index, logs)
        ]
    finally:
        for process in [*workers, *([aggregator] if aggregator else [])]:
            if process.poll() is None:
                process.kill()
                process.wait(30)
        for handle in handles:
            handle.close()
    summary = json.loads((files.aggregator_dir / SUMMARY_FILE).read_text())
    round_seconds = tuple(float(r["round_seconds"]) for r in summary["history"])
    events, _ = _read_events(files.aggregator_dir / AUDIT_FILE, 0)
    return ScalePoint(
        parties=parties,
        party_processes=len(workers),
        enrollment_seconds=max(r["enrolled_at"] for r in results) - go,
        round_seconds=round_seconds,
        median_round_seconds=statistics.median(round_seconds[1:]),
        aggregator_cpu_seconds_per_round=_per_round(cpu_at_round),
        party_cpu_seconds_per_round=_per_round(party_cpu_at_round),
        # ru_maxrss is in KiB on Linux.
        aggregator_peak_rss_mib=usage.ru_maxrss / 1024,
        polls_expired=sum(r["polls_expired"] for r in results),
        overload_refusals=sum(1 for e in events if e.get("event") == "overloaded"),
        rounds_completed=int(summary["rounds_completed"]),
        test_auc=(summary.get("best_test") or {}).get("test_auc"),
        load_average=(load_before, os.getloadavg()[0]),
    )


def _per_round(cpu_at_round: dict[int, float]) -> float:
    """CPU seconds per round between the first and the last round sampled."""
    timed = sorted(cpu_at_round)
    return (cpu_at_round[timed[-1]] - cpu_at_round[timed[0]]) / max(len(timed) - 1, 1)


def _wait_started(aggregator: subprocess.Popen[bytes], audit: Path, logs: Path) -> None:
    give_up = time.monotonic() + 120
    while not any(e.get("event") == "started" for e in _read_events(audit, 0)[0]):
        if aggregator.poll() is not None or time.monotonic() > give_up:
            raise TrainingError(f"the aggregator did not start; see {logs / 'aggregator.log'}")
        time.sleep(0.05)


def _follow(
    aggregator: subprocess.Popen[bytes],
    audit: Path,
    config: ScaleBenchConfig,
    workers: Sequence[subprocess.Popen[str]],
    logs: Path,
) -> tuple[dict[int, float], dict[int, float]]:
    """Until the aggregator exits: its CPU seconds, and the party processes' together,
    when each round completed."""
    cpu_at_round: dict[int, float] = {}
    party_cpu_at_round: dict[int, float] = {}
    offset = 0
    give_up = time.monotonic() + config.timeout_seconds
    # waitid with WNOWAIT: learn that it exited without reaping it (wait4 reaps it later).
    while True:
        events, offset = _read_events(audit, offset)
        for event in events:
            if event.get("event") == "round_completed":
                try:
                    cpu_at_round[int(event["round"])] = _cpu_seconds(aggregator.pid)
                    party_cpu_at_round[int(event["round"])] = sum(
                        _cpu_seconds(worker.pid) for worker in workers
                    )
                except (OSError, IndexError, ValueError):
                    pass  # it is exiting; this round's sample is lost
        exited = os.waitid(os.P_PID, aggregator.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if exited is not None:
            return cpu_at_round, party_cpu_at_round
        for index, worker in enumerate(workers):
            if worker.poll() not in (None, 0):
                # The cause on the terminal: the log may be in a folder gone by then.
                raise TrainingError(
                    "a party process failed: " + failure(f"worker-{index}", worker.returncode, logs)
                )
        if time.monotonic() > give_up:
            raise TrainingError(f"the federation did not finish in {config.timeout_seconds} s")
        time.sleep(0.05)


def _worker_results(worker: subprocess.Popen[str], index: int, logs: Path) -> list[dict]:
    out, _ = worker.communicate(timeout=300)
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    if worker.returncode != 0 or not lines or lines[-1] != {DONE: True}:
        raise TrainingError(
            "a party process failed: " + failure(f"worker-{index}", worker.returncode, logs)
        )
    return lines[:-1]


def run_scale_bench(
    config: ScaleBenchConfig,
    workdir: Path,
    *,
    on_point: Callable[[ScalePoint], None] | None = None,
) -> list[ScalePoint]:
    """Every point of ``config``, in order; ``on_point`` sees each as it is measured."""
    data = load_dataset(DataSelection(dataset=DATASET), seed=SEED)
    points = []
    for parties in config.parties:
        point = measure_point(parties, config, workdir, data)
        if on_point is not None:
            on_point(point)
        points.append(point)
    return points


def memory_slope_mib_per_party(points: Sequence[ScalePoint]) -> float | None:
    """Least-squares slope of the aggregator's peak memory against the number of parties
    (MiB per party); None with fewer than two distinct counts."""
    counts = np.array([p.parties for p in points], dtype=float)
    if len(set(counts.tolist())) < 2:
        return None
    peaks = np.array([p.aggregator_peak_rss_mib for p in points])
    slope, _ = np.polyfit(counts, peaks, 1)
    return float(slope)


def report(points: Sequence[ScalePoint]) -> dict[str, Any]:
    """The figures as JSON."""
    return {
        "benchmark": "scale",
        "dataset": DATASET,
        "model": "logreg",
        "tee": "simulated",
        "cores": os.cpu_count(),
        "points": [asdict(p) for p in points],
        "peak_memory_slope_mib_per_party": memory_slope_mib_per_party(points),
    }
