"""Federated strategies, one file each, and the factory that builds one from a plan."""

from __future__ import annotations

from dataclasses import dataclass

from enclaverec.errors import ConfigError
from enclaverec.federated.strategies.base import LocalTraining, Strategy
from enclaverec.federated.strategies.fedadagrad import FedAdagrad
from enclaverec.federated.strategies.fedadam import FedAdam
from enclaverec.federated.strategies.fedavg import FedAvg
from enclaverec.federated.strategies.fedprox import FedProx
from enclaverec.federated.strategies.fedyogi import FedYogi
from enclaverec.paramservice.combine import RowNormalisation

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad")

__all__ = [
    "STRATEGIES",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedProx",
    "FedYogi",
    "LocalTraining",
    "Strategy",
    "StrategyConfig",
    "make_strategy",
]


@dataclass(frozen=True)
class StrategyConfig:
    """The plan's strategy section: the name and its hyper-parameters."""

    name: str = "fedavg"
    proximal_mu: float = 0.0
    server_learning_rate: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    row_normalisation: RowNormalisation = RowNormalisation.ALL_CONTRIBUTORS

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.name!r}; known: {', '.join(STRATEGIES)}")
        if self.name != "fedprox" and self.proximal_mu:
            raise ConfigError('proximal_mu is FedProx\'s: set strategy = "fedprox"')


def make_strategy(config: StrategyConfig) -> Strategy:
    rows = config.row_normalisation
    if config.name == "fedavg":
        return FedAvg(row_normalisation=rows)
    if config.name == "fedprox":
        return FedProx(config.proximal_mu, row_normalisation=rows)
    adaptive = {"fedadam": FedAdam, "fedyogi": FedYogi, "fedadagrad": FedAdagrad}[config.name]
    return adaptive(
        eta=config.server_learning_rate,
        beta1=config.beta1,
        beta2=config.beta2,
        tau=config.tau,
        row_normalisation=rows,
    )
