"""FedAdagrad (Reddi et al. 2021, Algorithm 2 with Adagrad's accumulated second moment)."""

from __future__ import annotations

from enclaverec.federated.aggregate import ServerOptimizerKind
from enclaverec.federated.strategies.adaptive import AdaptiveServerStrategy


class FedAdagrad(AdaptiveServerStrategy):
    name = "fedadagrad"
    kind = ServerOptimizerKind.FEDADAGRAD
