"""Federated strategies, one file each, and the registry that builds one from a plan."""

from __future__ import annotations

from enclaverec.federated.strategies.base import Clipping, LocalTraining, Strategy
from enclaverec.federated.strategies.fedadagrad import FedAdagrad
from enclaverec.federated.strategies.fedadam import FedAdam
from enclaverec.federated.strategies.fedavg import FedAvg
from enclaverec.federated.strategies.fedprox import FedProx
from enclaverec.federated.strategies.fedyogi import FedYogi
from enclaverec.federated.strategies.krum import Krum
from enclaverec.federated.strategies.median import Median
from enclaverec.federated.strategies.registry import (
    DEFAULT_STRATEGY,
    REGISTRY,
    STRATEGIES,
    StrategyConfig,
    StrategyEntry,
    make_strategy,
    strategy_help,
)
from enclaverec.federated.strategies.trimmed_mean import TrimmedMean

__all__ = [
    "DEFAULT_STRATEGY",
    "REGISTRY",
    "STRATEGIES",
    "Clipping",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedProx",
    "FedYogi",
    "Krum",
    "LocalTraining",
    "Median",
    "Strategy",
    "StrategyConfig",
    "StrategyEntry",
    "TrimmedMean",
    "make_strategy",
    "strategy_help",
]
