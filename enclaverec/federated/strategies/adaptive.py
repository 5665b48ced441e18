"""The adaptive server optimizers of Reddi et al. 2021, "Adaptive Federated Optimization":
the round's FedAvg mean is a pseudo-gradient, which the server applies with Adagrad, Adam or
Yogi moments (lazily on the embedding rows touched in the round). FedAdam and FedYogi have
their own files; this base holds what they share."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from enclaverec.arrays import ModelLayout, ModelUpdate
from enclaverec.errors import ConfigError
from enclaverec.federated.aggregate import (
    ServerOptimizerConfig,
    ServerOptimizerKind,
    ServerOptimizerState,
    server_optimizer_step,
)
from enclaverec.federated.strategies.base import Strategy


@dataclass(frozen=True)
class AdaptiveOptions:
    """Reddi et al. 2021, Algorithm 2: server learning rate ``eta``, momentum ``beta1``,
    second-moment decay ``beta2``, adaptivity ``tau`` (the paper's §D.2 defaults)."""

    eta: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.eta) and self.eta > 0):
            raise ConfigError(f"the server learning rate eta must be positive, got {self.eta}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ConfigError(f"tau must be positive, got {self.tau}")


class AdaptiveServerStrategy(Strategy):
    kind: ClassVar[ServerOptimizerKind]

    def __init__(
        self,
        *,
        eta: float = 1e-2,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        AdaptiveOptions(eta, beta1, beta2, tau)  # the same checks as the plan's
        self.config = ServerOptimizerConfig(self.kind, eta=eta, beta1=beta1, beta2=beta2, tau=tau)
        self._state: ServerOptimizerState | None = None

    def aggregate(
        self,
        updates: Sequence[ModelUpdate],
        layout: ModelLayout,
        contributors: Sequence[str],
        norm_bound: float | None = None,
    ) -> ModelUpdate:
        average = self.average(updates, layout, contributors, norm_bound)
        if self._state is None:
            self._state = ServerOptimizerState.zeros(layout, self.config)
        return server_optimizer_step(average, self._state, self.config)

    def state(self) -> Mapping[str, np.ndarray]:
        if self._state is None:
            return {}
        return {
            **{f"m/{name}": value for name, value in self._state.m.items()},
            **{f"v/{name}": value for name, value in self._state.v.items()},
        }

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        if not state:
            self._state = None
            return
        m = {k[2:]: np.array(v) for k, v in state.items() if k.startswith("m/")}
        v = {k[2:]: np.array(val) for k, val in state.items() if k.startswith("v/")}
        if set(m) != set(v) or len(m) + len(v) != len(state):
            raise ValueError(f"{self.name}: malformed server optimizer state")
        self._state = ServerOptimizerState(m=m, v=v)
