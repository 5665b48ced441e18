"""``bench scale``'s arithmetic and settings (the run itself: tests/integration)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from enclaverec.app.bench_scale import (
    ScaleBenchConfig,
    ScalePoint,
    _follow,
    memory_slope_mib_per_party,
)
from enclaverec.errors import TrainingError, UsageError


def point(parties: int, peak: float) -> ScalePoint:
    return ScalePoint(
        parties=parties,
        party_processes=1,
        enrollment_seconds=1.0,
        round_seconds=(2.0, 0.5, 0.5),
        median_round_seconds=0.5,
        aggregator_cpu_seconds_per_round=0.1,
        party_cpu_seconds_per_round=0.2,
        aggregator_peak_rss_mib=peak,
        polls_expired=0,
        overload_refusals=0,
        rounds_completed=3,
        test_auc=0.6,
    )


def test_the_memory_slope_is_the_least_squares_line():
    points = [point(4, 102.0), point(16, 108.0), point(64, 132.0), point(256, 228.0)]
    assert memory_slope_mib_per_party(points) == pytest.approx(0.5)


def test_no_slope_from_one_count():
    assert memory_slope_mib_per_party([point(4, 100.0), point(4, 101.0)]) is None


@pytest.mark.parametrize(
    "settings",
    [{"parties": ()}, {"parties": (0,)}, {"rounds": 1}, {"parties_per_process": 0}],
)
def test_refuses_settings_that_measure_nothing(settings):
    with pytest.raises(UsageError):
        ScaleBenchConfig(**settings)


def test_a_failed_party_process_is_reported_with_the_cause_from_its_log(tmp_path):
    # The cause goes into the error itself: the log may be in a temporary folder gone by
    # the time someone reads the failure (a CI run).
    logs = tmp_path / "logs"
    logs.mkdir()
    with (logs / "worker-0.log").open("wb") as log:
        party = subprocess.Popen(
            [sys.executable, "-c", "import sys; print('enclaverec: error: boom'); sys.exit(3)"],
            stdout=log,
        )
        party.wait(30)
    aggregator = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(TrainingError) as failed:
            _follow(
                aggregator, tmp_path / "audit.jsonl", ScaleBenchConfig(parties=(1,)), [party], logs
            )
    finally:
        aggregator.kill()
        aggregator.wait(30)
    assert "worker-0 (exit 3: enclaverec: error: boom" in str(failed.value)
