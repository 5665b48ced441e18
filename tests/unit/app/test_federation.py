"""The federation plan's defaults live in one place and resolve against the data."""

from __future__ import annotations

import functools

import pytest

from enclaverec.app.data import DataConfig, load_data
from enclaverec.app.federation import (
    DEFAULT_DEADLINE_SECONDS,
    LOGREG_LEARNING_RATE,
    MAX_DEFAULT_LOCAL_BATCH,
    FederationPlanConfig,
    FederationSetup,
    SimulationConfig,
    build_plan,
    load_party_shares,
)
from enclaverec.errors import ConfigError, UsageError
from enclaverec.federated.config import ModelKind
from enclaverec.federated.strategies import Clipping
from enclaverec.federated.strategies.fedprox import DEFAULT_PROXIMAL_MU
from enclaverec.tee.kinds import TEEKind


@functools.cache
def movielens():
    return load_data(DataConfig.builtin("movielens-100k"), progress=False)


def plan_for(parties: int = 3, **plan):
    setup = FederationSetup(
        data=DataConfig.builtin("movielens-100k"),
        parties=parties,
        plan=FederationPlanConfig(**plan),
    )
    dataset, shares = load_party_shares(setup, dataset=movielens())
    return build_plan(setup, dataset, shares)


def test_the_documented_defaults():
    plan = plan_for()
    assert plan.model is ModelKind.DLRM and plan.preset == "small"
    assert plan.local.batch_size == MAX_DEFAULT_LOCAL_BATCH
    assert plan.rounds == 10 and plan.local.epochs == 1
    # FedAvg (its typed options have no fields) with median-norm clipping.
    assert plan.strategy.name == "fedavg" and plan.strategy.clipping is Clipping.MEDIAN
    assert plan_for(strategy="fedadam").strategy.options.eta == 1e-2
    assert plan.selection.deadline_seconds == DEFAULT_DEADLINE_SECONDS == 600.0
    assert plan.selection.min_parties == 3 and plan.selection.fraction == 1.0


def test_logreg_and_fedprox_defaults():
    plan = plan_for(model="logreg", strategy="fedprox")
    assert plan.model is ModelKind.LOGREG and plan.optimizer == "sgd"
    assert plan.local.learning_rate == LOGREG_LEARNING_RATE == 0.5
    assert plan.local.batch_size == 256
    assert plan.strategy.options.proximal_mu == DEFAULT_PROXIMAL_MU == 0.01


def test_a_fraction_lowers_the_minimum_to_one():
    assert plan_for(fraction=0.5).selection.min_parties == 1
    assert plan_for(fraction=0.5, min_parties=2).selection.min_parties == 2


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rounds": 10**20}, "--rounds must be between 1 and 10000"),
        ({"local_epochs": 0}, "--local-epochs must be between 1 and 1000"),
        ({"proximal_mu": 0.1}, "--proximal-mu needs --strategy fedprox"),
        ({"strategy": "fedsgd"}, "unknown strategy 'fedsgd'; known: fedavg, fedprox"),
        ({"server_learning_rate": 0.1}, "--server-lr needs --strategy fedadam"),
        ({"strategy": "trimmed-mean:0.7"}, "0 <= beta < 0.5"),
        ({"model": "huge"}, "--model must be one of small, kaggle, logreg"),
        ({"learning_rate": float("nan")}, "--lr must be a positive number"),
    ],
)
def test_values_that_cannot_be_meant_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        FederationPlanConfig(**values)


def test_a_local_batch_above_a_partys_rows_is_refused():
    with pytest.raises(ConfigError, match="larger than the .* training rows"):
        plan_for(parties=4, batch_size=100_000_000)


def test_simulate_refuses_a_tee_that_cannot_run_here(tmp_path):
    setup = FederationSetup(data=DataConfig.builtin("synthetic"), parties=2)
    with pytest.raises(UsageError, match="every role on this machine: --tee simulated or none"):
        SimulationConfig(setup=setup, output=tmp_path, tee=TEEKind.GRAMINE)


def test_a_partition_typo_fails_before_the_data_is_read():
    with pytest.raises(UsageError):
        FederationSetup(data=DataConfig.builtin("synthetic"), parties=2, partition="by-usr")
