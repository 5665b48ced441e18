"""The server side of the federated strategies, in pure functions: FedAvg is the
parameter service's weighted mean (``enclaverec.paramservice.combine``) applied as is; the
adaptive server optimizers of Reddi et al. 2021 (FedAdagrad, FedAdam, FedYogi) treat that
mean as a pseudo-gradient.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from enclaverec.arrays import Arrays, ModelLayout, ModelUpdate, SparseRows
from enclaverec.paramservice.combine import ACCUMULATOR_DTYPE, apply_update

# --- adaptive server optimizers (Reddi et al. 2021, "Adaptive Federated Optimization") ---


class ServerOptimizerKind(enum.Enum):
    FEDADAGRAD = "fedadagrad"
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"


@dataclass(frozen=True)
class ServerOptimizerConfig:
    """Hyper-parameters of Reddi et al. 2021, Algorithm 2: server learning rate ``eta``,
    momentum ``beta1``, second-moment decay ``beta2`` and adaptivity ``tau``. The paper's
    defaults (§D.2 grid) are beta1 0.9, beta2 0.99, tau 1e-3."""

    kind: ServerOptimizerKind
    eta: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3


@dataclass
class ServerOptimizerState:
    """First and second moments, one pair per array (float64). Kept inside the
    aggregator's enclave and its sealed checkpoints."""

    m: Arrays
    v: Arrays

    @classmethod
    def zeros(cls, layout: ModelLayout, config: ServerOptimizerConfig) -> ServerOptimizerState:
        v0 = config.tau**2  # v_{-1} >= tau^2 in the paper's experiments (§D.2)
        return cls(
            m={n: np.zeros(s.shape, ACCUMULATOR_DTYPE) for n, s in layout.specs.items()},
            v={n: np.full(s.shape, v0, ACCUMULATOR_DTYPE) for n, s in layout.specs.items()},
        )


def _moments_step(
    config: ServerOptimizerConfig, m: np.ndarray, v: np.ndarray, pseudo_gradient: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of Algorithm 2 on some entries: returns (m, v, step)."""
    delta = pseudo_gradient.astype(ACCUMULATOR_DTYPE)
    m = config.beta1 * m + (1.0 - config.beta1) * delta
    squared = delta * delta
    if config.kind is ServerOptimizerKind.FEDADAGRAD:
        v = v + squared
    elif config.kind is ServerOptimizerKind.FEDADAM:
        v = config.beta2 * v + (1.0 - config.beta2) * squared
    else:  # FEDYOGI
        v = v - (1.0 - config.beta2) * squared * np.sign(v - squared)
    step = config.eta * m / (np.sqrt(v) + config.tau)
    return m, v, step


def server_optimizer_step(
    average: ModelUpdate,
    state: ServerOptimizerState,
    config: ServerOptimizerConfig,
) -> ModelUpdate:
    """The step FedAdagrad/FedAdam/FedYogi take from the averaged delta (the
    pseudo-gradient), as an update to add to the model; ``state`` advances in place.

    Dense arrays step whole. Tables sent sparse step lazily: only the rows touched in the
    round have their moments and weights changed, as in sparse ("lazy") Adam; an untouched
    row keeps its weights and moments bit-identical.
    """
    dense: Arrays = {}
    sparse: dict[str, SparseRows] = {}
    for name, value in average.dense.items():
        m, v, step = _moments_step(config, state.m[name], state.v[name], value)
        state.m[name], state.v[name] = m, v
        dense[name] = step.astype(value.dtype)
    for name, rows in average.sparse.items():
        ids = rows.row_ids
        m, v, step = _moments_step(config, state.m[name][ids], state.v[name][ids], rows.values)
        state.m[name][ids] = m
        state.v[name][ids] = v
        sparse[name] = SparseRows(ids, step.astype(rows.values.dtype))
    return ModelUpdate(dense=dense, sparse=sparse, num_samples=average.num_samples)


def apply_server_optimizer(
    arrays: Arrays,
    average: ModelUpdate,
    state: ServerOptimizerState,
    config: ServerOptimizerConfig,
) -> None:
    """``arrays += server_optimizer_step(...)``, in place."""
    apply_update(arrays, server_optimizer_step(average, state, config))
