"""One contract suite run against every strategy, then what each one adds."""

from __future__ import annotations

import numpy as np
import pytest

from enclaverec.arrays import ModelLayout, ModelUpdate, densify, sparsify
from enclaverec.errors import AggregationRefusedError, ConfigError
from enclaverec.federated.strategies import (
    STRATEGIES,
    Clipping,
    LocalTraining,
    StrategyConfig,
    make_strategy,
)
from enclaverec.paramservice.combine import weighted_mean

ROWS = 40
LOCAL = LocalTraining(epochs=2, batch_size=32, learning_rate=0.1, seed=7)


@pytest.fixture
def layout() -> ModelLayout:
    arrays = {"w": np.zeros((3,), np.float32), "embedding/C1": np.zeros((ROWS, 2), np.float32)}
    return ModelLayout.of(arrays, tables=["embedding/C1"])


PARTIES = ["a", "b", "c", "d", "e"]  # enough for krum:1 (2F + 3)


def updates(layout: ModelLayout, seed: int, count: int = 2) -> list[ModelUpdate]:
    rng = np.random.default_rng(seed)
    result = []
    for samples in (5, 20, 7, 11, 13)[:count]:
        full = {n: rng.normal(size=s.shape).astype(np.float32) for n, s in layout.specs.items()}
        full["embedding/C1"][rng.random(ROWS) < 0.6] = 0
        result.append(sparsify(full, layout, samples))
    return result


def config(name: str, clipping: Clipping = Clipping.NONE) -> StrategyConfig:
    return StrategyConfig.parse(
        name, clipping=clipping, proximal_mu=0.1 if name == "fedprox" else None
    )


@pytest.fixture(params=STRATEGIES)
def strategy_name(request) -> str:
    return request.param


def test_contract_configure_fit_keeps_the_plan(strategy_name):
    fit = make_strategy(config(strategy_name)).configure_fit(3, LOCAL)
    assert (fit.epochs, fit.batch_size, fit.learning_rate, fit.seed, fit.round_index) == (
        2,
        32,
        0.1,
        7,
        3,
    )


@pytest.mark.parametrize("clipping", list(Clipping))
def test_contract_change_touches_only_rows_some_party_touched(strategy_name, layout, clipping):
    batch = updates(layout, 1, len(PARTIES))
    strategy = make_strategy(config(strategy_name, clipping))
    change = strategy.aggregate(batch, layout, PARTIES)
    union = np.unique(np.concatenate([u.sparse["embedding/C1"].row_ids for u in batch]))
    sent = change.sparse["embedding/C1"].row_ids
    assert np.all(np.isin(sent, union))
    # FedAvg leaves out updates that point against the others (these are random ones).
    kept = [u for u, party in zip(batch, PARTIES, strict=True) if party not in strategy.excluded]
    kept_union = np.unique(np.concatenate([u.sparse["embedding/C1"].row_ids for u in kept]))
    if strategy_name != "krum":  # Krum keeps only the selected updates' rows
        assert np.array_equal(sent, kept_union)
    assert change.dense["w"].shape == (3,) and np.all(np.isfinite(change.dense["w"]))


def test_contract_refuses_a_bad_update(strategy_name, layout):
    batch = updates(layout, 2, len(PARTIES))
    bad = dict(batch[1].dense)
    bad["w"] = np.array([np.nan, 0, 0], np.float32)
    batch[1] = ModelUpdate(bad, batch[1].sparse, batch[1].num_samples)
    with pytest.raises(AggregationRefusedError, match="b refused: w: non-finite"):
        make_strategy(config(strategy_name)).aggregate(batch, layout, PARTIES)


def test_contract_state_round_trip_gives_the_same_next_step(strategy_name, layout):
    first = make_strategy(config(strategy_name))
    first.aggregate(updates(layout, 3, len(PARTIES)), layout, PARTIES)
    second = make_strategy(config(strategy_name))
    second.load_state({k: v.copy() for k, v in first.state().items()})
    nxt = updates(layout, 4, len(PARTIES))
    a = densify(first.aggregate(nxt, layout, PARTIES), layout)
    b = densify(second.aggregate(nxt, layout, PARTIES), layout)
    assert all(np.array_equal(a[n], b[n]) for n in a)


def test_contract_plan_round_trip(strategy_name):
    chosen = config(strategy_name)
    assert StrategyConfig.from_toml(chosen.to_toml(), where="plan") == chosen


def test_fedavg_and_fedprox_move_by_the_weighted_mean(layout):
    batch = updates(layout, 5)
    mean = densify(weighted_mean(batch, layout), layout)
    for name in ("fedavg", "fedprox"):
        change = densify(make_strategy(config(name)).aggregate(batch, layout, ["a", "b"]), layout)
        assert all(np.array_equal(change[n], mean[n]) for n in mean)


def test_fedprox_sends_its_proximal_term_to_the_parties():
    assert make_strategy(config("fedprox")).configure_fit(1, LOCAL).proximal_mu == 0.1
    assert make_strategy(config("fedavg")).configure_fit(1, LOCAL).proximal_mu == 0.0


def test_adaptive_strategies_differ_from_fedavg(layout):
    batch = updates(layout, 6)
    mean = densify(weighted_mean(batch, layout), layout)
    for name in ("fedadam", "fedyogi", "fedadagrad"):
        change = densify(make_strategy(config(name)).aggregate(batch, layout, ["a", "b"]), layout)
        assert not np.allclose(change["w"], mean["w"])
        # Adaptive steps are bounded by about eta per coordinate (Reddi et al. 2021, §3).
        assert np.max(np.abs(change["w"])) < 0.011


@pytest.mark.parametrize(
    "spec, options, message",
    [
        ("fedsgd", {}, "unknown strategy"),
        ("fedavg", {"proximal_mu": 0.1}, "unknown option 'proximal_mu'"),
        ("fedprox", {"proximal_mu": 0.0}, "proximal_mu > 0"),
        ("median:3", {}, "median takes no argument"),
        ("fedavg:0.5", {}, r"min_agreement must be in \[-1, 0\]"),
        ("trimmed-mean:0.5", {}, "0 <= beta < 0.5"),
        ("trimmed-mean:x", {}, "beta must be a number"),
        ("krum:-1", {}, "f >= 0"),
        ("krum:1.5", {}, "f must be an integer"),
    ],
)
def test_refuses_bad_strategy_config(spec, options, message):
    with pytest.raises(ConfigError, match=message):
        make_strategy(StrategyConfig.parse(spec, **options))


def test_strategy_arguments_and_typed_options():
    assert config("trimmed-mean:0.1").options.beta == 0.1
    assert config("krum:2").options.f == 2
    assert StrategyConfig.parse("fedadam", eta=0.05).options.eta == 0.05
    assert StrategyConfig().spec == "fedavg" and config("krum:2").spec == "krum:2"
    with pytest.raises(ConfigError, match="needs at least 5 parties"):
        config("krum:1").check_parties(4)
    config("krum:1").check_parties(5)
