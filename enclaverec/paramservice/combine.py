"""Combining updates by weights, in pure functions: the pre-check that refuses
inconsistent updates, the weighted mean (FedAvg's average; the synchronous step of
distributed training), and applying a delta to the model.

Updates are deltas against the version the contributors started from. Sums run in float64
in the order the updates are given, then are cast back, so that sparse and dense means give
bit-identical results: a row a contributor did not touch adds exactly zero at that
contributor's weight, which is what skipping it does.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Sequence

import numpy as np

from enclaverec.arrays import Arrays, ModelLayout, ModelUpdate, SparseRows
from enclaverec.errors import AggregationRefusedError, NonFiniteError

ACCUMULATOR_DTYPE = np.float64


class RowNormalisation(enum.Enum):
    """How a table row's average is weighted.

    ``ALL_CONTRIBUTORS`` (FedAvg, McMahan et al. 2017): every contributor's weight counts,
    a row it did not touch being a zero delta; sparse equals dense exactly.
    ``TOUCHING_CONTRIBUTORS``: divide by the weights of the contributors that touched the
    row only; rare rows then move as fast as common ones, at the cost of no longer being
    FedAvg. A named option, never the default.
    """

    ALL_CONTRIBUTORS = "all"
    TOUCHING_CONTRIBUTORS = "touching"


# --- the pre-check ----------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _dtype(name: str) -> np.dtype:
    """The dtype a layout names. Comparing dtypes, not their names: ``str(dtype)`` per
    array was a third of the pre-check's time with hundreds of updates a round. The same
    test: a byte-swapped or other dtype differs either way."""
    return np.dtype(name)


def _refuse(contributor: str, message: str) -> AggregationRefusedError:
    return AggregationRefusedError(f"update from {contributor} refused: {message}")


def check_update(
    update: ModelUpdate,
    layout: ModelLayout,
    *,
    contributor: str = "a contributor",
    norm_bound: float | None = None,
) -> None:
    """Refuse an update that does not fit the model: unknown or missing names, a name sent
    both dense and sparse, wrong shapes or dtypes, row ids out of range, repeated or
    unsorted, non-finite values, a global L2 norm above ``norm_bound``, or a weight that is
    not a positive number of samples."""
    names = set(update.dense) | set(update.sparse)
    both = set(update.dense) & set(update.sparse)
    if both:
        raise _refuse(contributor, f"sent both dense and sparse: {sorted(both)}")
    unknown = names - set(layout.specs)
    if unknown:
        raise _refuse(contributor, f"unknown array names {sorted(unknown)}")
    missing = set(layout.specs) - names
    if missing:
        raise _refuse(contributor, f"missing array names {sorted(missing)}")
    if not isinstance(update.num_samples, int) or update.num_samples <= 0:
        raise _refuse(
            contributor, f"weight must be a positive sample count, got {update.num_samples}"
        )
    squared_norm = 0.0
    for name, value in update.dense.items():
        spec = layout.specs[name]
        if tuple(value.shape) != spec.shape or value.dtype != _dtype(spec.dtype):
            raise _refuse(
                contributor,
                f"{name}: got {value.dtype}{list(value.shape)}, "
                f"expected {spec.dtype}{list(spec.shape)}",
            )
        if not np.all(np.isfinite(value)):
            raise NonFiniteError(f"update from {contributor} refused: {name}: non-finite values")
        squared_norm += float(np.sum(np.square(value, dtype=ACCUMULATOR_DTYPE)))
    for name, rows in update.sparse.items():
        spec = layout.specs[name]
        if not spec.table:
            raise _refuse(contributor, f"{name}: sparse rows for an array that is not a table")
        _check_rows(rows, spec.shape, spec.dtype, name, contributor)
        squared_norm += float(np.sum(np.square(rows.values, dtype=ACCUMULATOR_DTYPE)))
    if norm_bound is not None and math.sqrt(squared_norm) > norm_bound:
        raise _refuse(
            contributor, f"L2 norm {math.sqrt(squared_norm):.6g} exceeds the bound {norm_bound:.6g}"
        )


def bounded_weight(claimed: int, max_rows: int | None) -> int:
    """A contributor's weight: the rows it claims, never more than the measured plan's
    bound for it (one member cannot outweigh the others by claiming 2**62 rows)."""
    return claimed if max_rows is None else min(claimed, max_rows)


def check_reported(contributor: str, *, train_loss: float, train_seconds: float) -> None:
    """Refuse the numbers reported beside an update that are not finite (or negative time):
    they are summed into the federation's summary."""
    if not math.isfinite(train_loss):
        raise NonFiniteError(f"update from {contributor} refused: train_loss is {train_loss}")
    if not (math.isfinite(train_seconds) and train_seconds >= 0):
        raise NonFiniteError(f"update from {contributor} refused: train_seconds is {train_seconds}")


def check_finite_result(update: ModelUpdate, what: str) -> None:
    """Refuse a combination whose result is not finite (finite inputs can overflow)."""
    for name, value in update.dense.items():
        if not np.all(np.isfinite(value)):
            raise NonFiniteError(f"{what}: {name} is not finite; the model is kept as it was")
    for name, rows in update.sparse.items():
        if not np.all(np.isfinite(rows.values)):
            raise NonFiniteError(f"{what}: {name} is not finite; the model is kept as it was")


def _check_rows(
    rows: SparseRows, shape: tuple[int, ...], dtype: str, name: str, contributor: str
) -> None:
    ids = rows.row_ids
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise _refuse(contributor, f"{name}: row ids must be a 1-d integer array")
    expected_values = (len(ids), *shape[1:])
    if tuple(rows.values.shape) != expected_values or rows.values.dtype != _dtype(dtype):
        raise _refuse(
            contributor,
            f"{name}: got rows {rows.values.dtype}{list(rows.values.shape)}, "
            f"expected {dtype}{list(expected_values)}",
        )
    if len(ids) and (ids[0] < 0 or ids[-1] >= shape[0]):
        raise _refuse(contributor, f"{name}: row ids outside [0, {shape[0]})")
    if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
        raise _refuse(contributor, f"{name}: row ids must be unique and ascending")
    if not np.all(np.isfinite(rows.values)):
        raise NonFiniteError(f"update from {contributor} refused: {name}: non-finite values")


def check_updates(
    updates: Sequence[ModelUpdate],
    layout: ModelLayout,
    *,
    contributors: Sequence[str] | None = None,
    norm_bound: float | None = None,
) -> None:
    """:func:`check_update` on each, and refuse an empty round (zero total weight)."""
    if not updates:
        raise AggregationRefusedError("no updates to aggregate (zero total weight)")
    names = (
        list(contributors)
        if contributors is not None
        else [f"contributor {i}" for i in range(len(updates))]
    )
    for update, contributor in zip(updates, names, strict=True):
        check_update(update, layout, contributor=contributor, norm_bound=norm_bound)


# --- the weighted mean ---------------------------------------------------------------


def weighted_mean(
    updates: Sequence[ModelUpdate],
    layout: ModelLayout,
    *,
    row_normalisation: RowNormalisation = RowNormalisation.ALL_CONTRIBUTORS,
) -> ModelUpdate:
    """The sample-weighted average of the updates (FedAvg's average, McMahan et al. 2017).

    Dense arrays average densely. A table averages over the union of the rows any update
    touched, in sparse form when every update sent it sparse; the result's ``num_samples``
    is the total weight. Call :func:`check_updates` first.
    """
    total = float(sum(update.num_samples for update in updates))
    if total <= 0:
        raise AggregationRefusedError("zero total weight")
    dense: Arrays = {}
    sparse: dict[str, SparseRows] = {}
    for name, spec in layout.specs.items():
        if spec.table and all(name in update.sparse for update in updates):
            sparse[name] = _sparse_mean(
                [(u.sparse[name], float(u.num_samples)) for u in updates],
                spec.dtype,
                total,
                row_normalisation,
            )
            continue
        if spec.table and row_normalisation is RowNormalisation.TOUCHING_CONTRIBUTORS:
            raise AggregationRefusedError(
                f"{name}: per-row normalisation needs every update's rows in sparse form"
            )
        accumulator = np.zeros(spec.shape, ACCUMULATOR_DTYPE)
        for update in updates:
            accumulator += float(update.num_samples) * _dense_value(update, name, spec.shape)
        dense[name] = (accumulator / total).astype(spec.dtype)
    return ModelUpdate(dense=dense, sparse=sparse, num_samples=int(total))


def _dense_value(update: ModelUpdate, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name in update.dense:
        return update.dense[name].astype(ACCUMULATOR_DTYPE)
    rows = update.sparse[name]
    full = np.zeros(shape, ACCUMULATOR_DTYPE)
    full[rows.row_ids] = rows.values
    return full


def _sparse_mean(
    contributions: Sequence[tuple[SparseRows, float]],
    dtype: str,
    total: float,
    row_normalisation: RowNormalisation,
) -> SparseRows:
    union = np.unique(np.concatenate([rows.row_ids.astype(np.int64) for rows, _ in contributions]))
    width = next(rows.values.shape[1:] for rows, _ in contributions)
    accumulator = np.zeros((len(union), *width), ACCUMULATOR_DTYPE)
    touching_weight = np.zeros(len(union), ACCUMULATOR_DTYPE)
    for rows, weight in contributions:
        positions = np.searchsorted(union, rows.row_ids)
        accumulator[positions] += weight * rows.values.astype(ACCUMULATOR_DTYPE)
        touching_weight[positions] += weight
    if row_normalisation is RowNormalisation.TOUCHING_CONTRIBUTORS:
        divisor = touching_weight.reshape(-1, *([1] * len(width)))
        mean = accumulator / divisor
    else:
        mean = accumulator / total
    return SparseRows(union, mean.astype(dtype))


def apply_update(arrays: Arrays, update: ModelUpdate, *, scale: float = 1.0) -> None:
    """``arrays += scale * update`` in place (only the touched rows of sparse tables)."""
    for name, value in update.dense.items():
        arrays[name] += (scale * value).astype(arrays[name].dtype) if scale != 1.0 else value
    for name, rows in update.sparse.items():
        values = rows.values if scale == 1.0 else (scale * rows.values).astype(rows.values.dtype)
        arrays[name][rows.row_ids] += values
