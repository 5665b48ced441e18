"""The aggregator's sealed checkpoint: everything needed to resume after a restart.

Written after every aggregation and every completed round, sealed to the aggregator
enclave's sealing key (so a restarted enclave with another measurement cannot read it, and
the host cannot read or modify it). The plaintext inside the seal is one ``.npz`` archive,
loaded without pickle: arrays under ``store/``, ``strategy/`` and ``best/`` names, and a
JSON document of the bookkeeping under ``meta``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from enclaverec.arrays import Arrays, ModelLayout
from enclaverec.errors import MalformedInputError
from enclaverec.paramservice import checkpoint as archive
from enclaverec.paramservice.store import ParameterStore

CHECKPOINT_FILE = "checkpoint.sealed"
SEALING_PURPOSE = "federated/aggregator-checkpoint"
SEALING_LABEL = "federated-aggregator"
FORMAT = 1


@dataclass
class AggregatorState:
    """The aggregator's progress. ``completed_round`` rounds are done (aggregated and
    evaluated); ``aggregated_round`` equals it, or is one ahead when the latest round was
    aggregated but not yet evaluated."""

    store: ParameterStore
    completed_round: int = 0
    aggregated_round: int = 0
    strategy_state: dict[str, np.ndarray] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_round: int | None = None
    best_val_auc: float | None = None
    best_arrays: Arrays | None = None
    best_test: dict[str, Any] | None = None
    contributions: dict[str, list[int]] = field(default_factory=dict)
    train_samples: int = 0
    train_seconds: float = 0.0
    wall_seconds_before: float = 0.0
    restarts: int = 0

    def meta(self, wall_seconds: float) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "completed_round": self.completed_round,
            "aggregated_round": self.aggregated_round,
            "history": self.history,
            "best_round": self.best_round,
            "best_val_auc": self.best_val_auc,
            "best_test": self.best_test,
            "contributions": self.contributions,
            "train_samples": self.train_samples,
            "train_seconds": self.train_seconds,
            "wall_seconds_before": wall_seconds,
            "restarts": self.restarts,
            "store_version": self.store.version,
            "store_array_version": self.store.state()["array_version"],
        }


def encode_state(state: AggregatorState, *, wall_seconds: float) -> bytes:
    """``wall_seconds``: the federation's wall time so far, which a resumed run adds to."""
    store_state = state.store.state()
    arrays: dict[str, np.ndarray] = {}
    for name, value in store_state["arrays"].items():  # type: ignore[union-attr]
        arrays[f"store/arrays/{name}"] = value
    for name, value in store_state["row_version"].items():  # type: ignore[union-attr]
        arrays[f"store/row_version/{name}"] = value
    for name, value in state.strategy_state.items():
        arrays[f"strategy/{name}"] = value
    for name, value in (state.best_arrays or {}).items():
        arrays[f"best/{name}"] = value
    return archive.pack(arrays, state.meta(wall_seconds))


def decode_state(data: bytes, layout: ModelLayout) -> AggregatorState:
    contents, meta = archive.unpack(data)
    if meta.get("format") != FORMAT:
        raise MalformedInputError(f"checkpoint format {meta.get('format')!r} is not {FORMAT}")

    def section(prefix: str) -> dict[str, np.ndarray]:
        return archive.section(contents, prefix)

    store_arrays = section("store/arrays/")
    if list(store_arrays) != list(layout.names):
        # The plan (which fixes the layout) is measured: a checkpoint of another plan is
        # not this federation's.
        ordered = {name: store_arrays.get(name) for name in layout.names}
        if any(value is None for value in ordered.values()) or set(store_arrays) != set(
            layout.names
        ):
            raise MalformedInputError("the checkpoint holds another model layout")
        store_arrays = ordered  # type: ignore[assignment]
    store = ParameterStore.from_state(
        {
            "version": meta["store_version"],
            "arrays": store_arrays,
            "array_version": meta["store_array_version"],
            "row_version": section("store/row_version/"),
        },
        layout,
    )
    best = section("best/")
    return AggregatorState(
        store=store,
        completed_round=meta["completed_round"],
        aggregated_round=meta["aggregated_round"],
        strategy_state=section("strategy/"),
        history=meta["history"],
        best_round=meta["best_round"],
        best_val_auc=meta["best_val_auc"],
        best_arrays={name: best[name] for name in layout.names} if best else None,
        best_test=meta["best_test"],
        contributions=meta["contributions"],
        train_samples=meta["train_samples"],
        train_seconds=meta["train_seconds"],
        wall_seconds_before=meta["wall_seconds_before"],
        restarts=meta["restarts"],
    )


def save_checkpoint(
    state_dir: Path, sealing_key: bytes, state: AggregatorState, *, wall_seconds: float
) -> None:
    """Seal and write atomically: a crash leaves the previous checkpoint or this one."""
    plaintext = encode_state(state, wall_seconds=wall_seconds)
    archive.save_sealed(state_dir / CHECKPOINT_FILE, sealing_key, SEALING_PURPOSE, plaintext)


def load_checkpoint(
    state_dir: Path, sealing_key: bytes, layout: ModelLayout
) -> AggregatorState | None:
    """The last checkpoint, or None if there is none. A checkpoint that does not unseal
    (modified, or sealed by another enclave) is an ``IntegrityError``: the aggregator
    refuses to start rather than silently starting over."""
    path = state_dir / CHECKPOINT_FILE
    plaintext = archive.load_sealed(path, sealing_key, SEALING_PURPOSE)
    if plaintext is None:
        return None
    try:
        return decode_state(plaintext, layout)
    except MalformedInputError as exc:
        raise archive.integrity(path, exc) from exc
