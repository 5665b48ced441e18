"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"): FedAvg on
the server; each party adds the proximal term mu/2 * ||w - w_global||^2 to its local loss,
which keeps heterogeneous parties close to the global model."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from enclaverec.errors import ConfigError
from enclaverec.federated.strategies.base import LocalTraining
from enclaverec.federated.strategies.fedavg import FedAvg
from enclaverec.trainer import FitConfig

# Li et al. 2020 tune mu over {0.001, 0.01, 0.1, 1}; 0.01 is a middle value.
DEFAULT_PROXIMAL_MU = 0.01


@dataclass(frozen=True)
class FedProxOptions:
    proximal_mu: float = DEFAULT_PROXIMAL_MU

    def __post_init__(self) -> None:
        if not (math.isfinite(self.proximal_mu) and self.proximal_mu > 0):
            raise ConfigError(f"FedProx needs proximal_mu > 0, got {self.proximal_mu}")


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(self, proximal_mu: float = DEFAULT_PROXIMAL_MU, **common: Any) -> None:
        super().__init__(**common)
        FedProxOptions(proximal_mu)  # the same check as the plan's
        self.proximal_mu = proximal_mu

    def configure_fit(self, round_index: int, local: LocalTraining) -> FitConfig:
        config = super().configure_fit(round_index, local)
        return dataclasses.replace(config, proximal_mu=self.proximal_mu)
