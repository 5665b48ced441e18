"""FedAdam (Reddi et al. 2021, Algorithm 2 with Adam's second moment)."""

from __future__ import annotations

from enclaverec.federated.aggregate import ServerOptimizerKind
from enclaverec.federated.strategies.adaptive import AdaptiveServerStrategy


class FedAdam(AdaptiveServerStrategy):
    name = "fedadam"
    kind = ServerOptimizerKind.FEDADAM
