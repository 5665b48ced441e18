"""FedYogi (Reddi et al. 2021, Algorithm 2 with Yogi's additive second moment, which
grows or shrinks by at most (1 - beta2) * g^2 per round)."""

from __future__ import annotations

from dataclasses import dataclass

from enclaverec.federated.aggregate import ServerOptimizerKind
from enclaverec.federated.strategies.adaptive import AdaptiveOptions, AdaptiveServerStrategy


@dataclass(frozen=True)
class FedYogiOptions(AdaptiveOptions):
    """FedYogi's options (Reddi et al. 2021's defaults)."""


class FedYogi(AdaptiveServerStrategy):
    name = "fedyogi"
    kind = ServerOptimizerKind.FEDYOGI
