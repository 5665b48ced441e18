"""``bench scale`` end to end on two light parties: the real aggregator process, a party
process, every figure present and consistent."""

from __future__ import annotations

import pytest

from enclaverec.app.bench_scale import ScaleBenchConfig, run_scale_bench

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


def test_two_light_parties_report_every_figure(tmp_path):
    config = ScaleBenchConfig(parties=(2,), rounds=2)
    (point,) = run_scale_bench(config, tmp_path)
    assert point.parties == 2 and point.party_processes == 1
    assert point.rounds_completed == 2 and len(point.round_seconds) == 2
    assert point.median_round_seconds == point.round_seconds[1]
    assert point.enrollment_seconds > 0
    assert point.aggregator_cpu_seconds_per_round > 0
    assert point.party_cpu_seconds_per_round > 0
    assert all(load >= 0 for load in point.load_average)
    assert point.aggregator_peak_rss_mib > 10  # a Python process with gRPC and numpy
    assert point.polls_expired == 0 and point.overload_refusals == 0
    assert 0.5 < point.test_auc < 1.0
