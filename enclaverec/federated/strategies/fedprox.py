"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"): FedAvg on
the server; each party adds the proximal term mu/2 * ||w - w_global||^2 to its local loss,
which keeps heterogeneous parties close to the global model."""

from __future__ import annotations

import dataclasses

from enclaverec.errors import ConfigError
from enclaverec.federated.strategies.base import LocalTraining
from enclaverec.federated.strategies.fedavg import FedAvg
from enclaverec.paramservice.combine import RowNormalisation
from enclaverec.training import FitConfig


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(
        self,
        proximal_mu: float,
        *,
        row_normalisation: RowNormalisation = RowNormalisation.ALL_CONTRIBUTORS,
    ) -> None:
        super().__init__(row_normalisation=row_normalisation)
        if not proximal_mu > 0:
            raise ConfigError(f"FedProx needs proximal_mu > 0, got {proximal_mu}")
        self.proximal_mu = proximal_mu

    def configure_fit(self, round_index: int, local: LocalTraining) -> FitConfig:
        config = super().configure_fit(round_index, local)
        return dataclasses.replace(config, proximal_mu=self.proximal_mu)
