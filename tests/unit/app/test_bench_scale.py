"""``bench scale``'s arithmetic and settings (the run itself: tests/integration)."""

from __future__ import annotations

import pytest

from enclaverec.app.bench_scale import ScaleBenchConfig, ScalePoint, memory_slope_mib_per_party
from enclaverec.errors import UsageError


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
