"""FedAdagrad (Reddi et al. 2021, Algorithm 2 with Adagrad's accumulated second moment)."""

from __future__ import annotations

from dataclasses import dataclass

from enclaverec.federated.aggregate import ServerOptimizerKind
from enclaverec.federated.strategies.adaptive import AdaptiveOptions, AdaptiveServerStrategy


@dataclass(frozen=True)
class FedAdagradOptions(AdaptiveOptions):
    """FedAdagrad's options (Reddi et al. 2021's defaults)."""


class FedAdagrad(AdaptiveServerStrategy):
    name = "fedadagrad"
    kind = ServerOptimizerKind.FEDADAGRAD
