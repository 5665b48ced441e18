"""The adaptive server optimizers of Reddi et al. 2021, "Adaptive Federated Optimization":
the round's FedAvg mean is a pseudo-gradient, which the server applies with Adagrad, Adam or
Yogi moments (lazily on the embedding rows touched in the round). FedAdam and FedYogi have
their own files; this base holds what they share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from enclaverec.arrays import ModelLayout, ModelUpdate
from enclaverec.federated.aggregate import (
    ServerOptimizerConfig,
    ServerOptimizerKind,
    ServerOptimizerState,
    server_optimizer_step,
)
from enclaverec.federated.strategies.base import Strategy
from enclaverec.paramservice.combine import RowNormalisation


class AdaptiveServerStrategy(Strategy):
    kind: ClassVar[ServerOptimizerKind]

    def __init__(
        self,
        *,
        eta: float = 1e-2,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        row_normalisation: RowNormalisation = RowNormalisation.ALL_CONTRIBUTORS,
    ) -> None:
        super().__init__(row_normalisation=row_normalisation)
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
