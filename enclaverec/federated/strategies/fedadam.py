"""FedAdam (Reddi et al. 2021, Algorithm 2 with Adam's second moment)."""

from __future__ import annotations

from dataclasses import dataclass

from enclaverec.federated.aggregate import ServerOptimizerKind
from enclaverec.federated.strategies.adaptive import AdaptiveOptions, AdaptiveServerStrategy


@dataclass(frozen=True)
class FedAdamOptions(AdaptiveOptions):
    """FedAdam's options (Reddi et al. 2021's defaults)."""


class FedAdam(AdaptiveServerStrategy):
    name = "fedadam"
    kind = ServerOptimizerKind.FEDADAM
