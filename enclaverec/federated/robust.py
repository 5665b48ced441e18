"""Byzantine-robust combination of a round's updates, in pure functions: norm clipping with
an adaptive bound, the coordinate-wise median and trimmed mean (Yin et al. 2018,
"Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates") and Krum /
multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine Tolerant
Gradient Descent").

Embedding tables are combined row by row over the contributors that sent that row: a
party that did not touch a row (it has none of that user's or item's rows) casts no vote
for it, rather than a vote for zero that would freeze every rare row at its initial value.
Updates must have passed ``combine.check_updates``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from enclaverec.arrays import Arrays, ModelLayout, ModelUpdate, SparseRows, touched_rows
from enclaverec.errors import AggregationRefusedError
from enclaverec.paramservice.combine import ACCUMULATOR_DTYPE

# --- clipping ------------------------------------------------------------------------------


def update_norm(update: ModelUpdate) -> float:
    """The global L2 norm of an update (dense arrays and sent rows)."""
    total = sum(float(np.sum(np.square(v, dtype=ACCUMULATOR_DTYPE))) for v in update.dense.values())
    total += sum(
        float(np.sum(np.square(r.values, dtype=ACCUMULATOR_DTYPE))) for r in update.sparse.values()
    )
    return math.sqrt(total)


def scaled(update: ModelUpdate, factor: float) -> ModelUpdate:
    return ModelUpdate(
        dense={n: (v * factor).astype(v.dtype) for n, v in update.dense.items()},
        sparse={
            n: SparseRows(r.row_ids, (r.values * factor).astype(r.values.dtype))
            for n, r in update.sparse.items()
        },
        num_samples=update.num_samples,
    )


def clip_to_median_norm(updates: Sequence[ModelUpdate]) -> tuple[list[ModelUpdate], float]:
    """Scale every update whose L2 norm exceeds the median of the round's norms down to it.

    The bound adapts to the round (as in Andrew et al. 2021, "Differentially Private
    Learning with Adaptive Clipping", which tracks a quantile of the norms; here the
    quantile is the median, taken over this round's updates): honest updates of one
    federation have norms of one scale, so a scaled-up update from one member is cut to
    that scale, whatever it claims. Returns the updates and the bound.
    """
    norms = [update_norm(u) for u in updates]
    bound = float(np.median(norms))
    clipped = [
        scaled(u, bound / norm) if norm > bound and norm > 0 else u
        for u, norm in zip(updates, norms, strict=True)
    ]
    return clipped, bound


# --- per-coordinate statistics ----------------------------------------------------------------


def _rows_of(update: ModelUpdate, name: str) -> SparseRows:
    """A table's rows an update carries (dense tables: their non-zero rows)."""
    if name in update.sparse:
        return update.sparse[name]
    value = update.dense[name]
    ids = touched_rows(value)
    return SparseRows(ids, value[ids])


def _combine_per_coordinate(
    updates: Sequence[ModelUpdate],
    layout: ModelLayout,
    statistic: Callable[[np.ndarray], np.ndarray],
) -> ModelUpdate:
    """``statistic`` over axis 0 of the stacked contributions: for dense arrays over every
    update, for each table row over the updates that sent it."""
    dense: Arrays = {}
    sparse: dict[str, SparseRows] = {}
    for name, spec in layout.specs.items():
        if not spec.table:
            stack = np.stack([u.dense[name].astype(ACCUMULATOR_DTYPE) for u in updates])
            dense[name] = statistic(stack).astype(spec.dtype)
            continue
        parts = [_rows_of(u, name) for u in updates]
        union = np.unique(np.concatenate([p.row_ids for p in parts]).astype(np.int64))
        width = tuple(spec.shape[1:])
        values = np.zeros((len(union), *width), ACCUMULATOR_DTYPE)
        # NaN marks "not sent"; the statistic sees only the values that were sent.
        stack = np.full((len(parts), len(union), *width), np.nan, ACCUMULATOR_DTYPE)
        for index, part in enumerate(parts):
            stack[index, np.searchsorted(union, part.row_ids)] = part.values
        present = ~np.isnan(stack[:, :, 0] if width else stack)
        counts = present.sum(axis=0)
        for count in np.unique(counts):
            rows = np.flatnonzero(counts == count)
            # Rows sent by the same number of contributors: gather exactly those values.
            chosen = stack[:, rows]
            mask = present[:, rows]
            order = np.argsort(~mask, axis=0, kind="stable")[:count]
            gathered = np.take_along_axis(
                chosen, order.reshape(order.shape + (1,) * len(width)), axis=0
            )
            values[rows] = statistic(gathered)
        sparse[name] = SparseRows(union, values.astype(spec.dtype))
    total = sum(u.num_samples for u in updates)
    return ModelUpdate(dense=dense, sparse=sparse, num_samples=total)


def coordinate_median(updates: Sequence[ModelUpdate], layout: ModelLayout) -> ModelUpdate:
    """The coordinate-wise median (unweighted: a weight is a claim, a vote is not)."""
    if not updates:
        raise AggregationRefusedError("no updates to aggregate")
    return _combine_per_coordinate(updates, layout, lambda s: np.median(s, axis=0))


def trimmed_mean(updates: Sequence[ModelUpdate], layout: ModelLayout, beta: float) -> ModelUpdate:
    """The coordinate-wise beta-trimmed mean: drop the floor(beta * k) largest and smallest
    of the k values of each coordinate, average the rest (the median when nothing would be
    left)."""
    if not 0 <= beta < 0.5:
        raise AggregationRefusedError(f"trimmed mean needs 0 <= beta < 0.5, got {beta}")
    if not updates:
        raise AggregationRefusedError("no updates to aggregate")

    def statistic(stack: np.ndarray) -> np.ndarray:
        count = stack.shape[0]
        cut = math.floor(beta * count)
        if count - 2 * cut < 1:
            return np.median(stack, axis=0)
        ordered = np.sort(stack, axis=0)
        return ordered[cut : count - cut].mean(axis=0)

    return _combine_per_coordinate(updates, layout, statistic)


# --- Krum ------------------------------------------------------------------------------------


def _squared_distance(a: ModelUpdate, b: ModelUpdate, layout: ModelLayout) -> float:
    total = 0.0
    for name, spec in layout.specs.items():
        if not spec.table:
            diff = a.dense[name].astype(ACCUMULATOR_DTYPE) - b.dense[name]
            total += float(np.sum(diff * diff))
            continue
        ra, rb = _rows_of(a, name), _rows_of(b, name)
        va, vb = ra.values.astype(ACCUMULATOR_DTYPE), rb.values.astype(ACCUMULATOR_DTYPE)
        # ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a.b, the dot over the rows both sent.
        _, ia, ib = np.intersect1d(ra.row_ids, rb.row_ids, return_indices=True)
        total += float(np.sum(va * va) + np.sum(vb * vb) - 2.0 * np.sum(va[ia] * vb[ib]))
    return max(total, 0.0)


def krum_select(
    updates: Sequence[ModelUpdate], layout: ModelLayout, f: int, m: int = 1
) -> list[int]:
    """Indices of the ``m`` updates with the lowest Krum scores (the sum of squared
    distances to their n - f - 2 nearest neighbours). Refused unless n >= 2f + 3."""
    n = len(updates)
    if f < 0 or n < 2 * f + 3:
        raise AggregationRefusedError(
            f"Krum with f = {f} needs at least {2 * f + 3} updates, got {n}"
        )
    if not 1 <= m <= n - f:
        raise AggregationRefusedError(f"multi-Krum selects 1 to n - f = {n - f}, got m = {m}")
    distances = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            distances[i, j] = distances[j, i] = _squared_distance(updates[i], updates[j], layout)
    neighbours = n - f - 2
    scores = [float(np.sum(np.sort(np.delete(distances[i], i))[:neighbours])) for i in range(n)]
    return sorted(range(n), key=lambda i: (scores[i], i))[:m]


# --- agreement with the others ---------------------------------------------------------------


def _sum_of(
    updates: Sequence[ModelUpdate], layout: ModelLayout
) -> dict[str, SparseRows | np.ndarray]:
    """The unweighted sum of the updates: dense arrays, and each table's rows summed over
    the updates that sent them (sorted row ids)."""
    total: dict[str, SparseRows | np.ndarray] = {}
    for name, spec in layout.specs.items():
        if not spec.table:
            total[name] = np.sum([u.dense[name].astype(ACCUMULATOR_DTYPE) for u in updates], axis=0)
            continue
        parts = [_rows_of(u, name) for u in updates]
        ids = np.concatenate([p.row_ids for p in parts]).astype(np.int64)
        union, inverse = np.unique(ids, return_inverse=True)
        values = np.zeros((len(union), *spec.shape[1:]), ACCUMULATOR_DTYPE)
        np.add.at(values, inverse, np.concatenate([p.values for p in parts]))
        total[name] = SparseRows(union, values)
    return total


def _dot_with(update: ModelUpdate, total: dict, layout: ModelLayout) -> float:
    dot = 0.0
    for name, spec in layout.specs.items():
        if not spec.table:
            dot += float(np.sum(update.dense[name].astype(ACCUMULATOR_DTYPE) * total[name]))
            continue
        rows, summed = _rows_of(update, name), total[name]
        where = np.searchsorted(summed.row_ids, rows.row_ids)  # every sent row is in the union
        dot += float(np.sum(rows.values.astype(ACCUMULATOR_DTYPE) * summed.values[where]))
    return dot


def agreement_with_others(updates: Sequence[ModelUpdate], layout: ModelLayout) -> list[float]:
    """For each update, the cosine between it and the unweighted sum of the others' updates
    (0.0 where either is zero). Unweighted, because a weight is a claim."""
    total = _sum_of(updates, layout)
    total_squared = _dot_with_sum(total)
    cosines = []
    for update in updates:
        own = update_norm(update)
        dot_total = _dot_with(update, total, layout)
        # u . (S - u) and |S - u|^2 from u . S, |u|^2 and |S|^2: one pass per update.
        dot_others = dot_total - own * own
        others_squared = max(total_squared - 2.0 * dot_total + own * own, 0.0)
        denominator = own * math.sqrt(others_squared)
        cosines.append(dot_others / denominator if denominator > 0 else 0.0)
    return cosines


def _dot_with_sum(total: dict) -> float:
    return sum(
        float(np.sum(np.square(v.values if isinstance(v, SparseRows) else v)))
        for v in total.values()
    )


def agreeing(
    updates: Sequence[ModelUpdate], layout: ModelLayout, min_cosine: float
) -> tuple[list[int], list[float]]:
    """Indices of the updates to keep, and every update's cosine with the sum of the others.

    An update is left out when its cosine is below ``min_cosine`` *and* the round has a
    consensus at least as strong as that disagreement: the median cosine is positive and
    the update's cosine is below minus the median. Without the second condition, honest
    updates that have become nearly orthogonal (parties fitting their own rows late in
    training; measured cosines of -0.06 to 0 on synthetic data) would be left out at
    random. A sign-flipped update always meets it when the others share a direction (its
    cosine is about three times the honest ones', with the opposite sign, for one flipper
    of four). Every update is kept with fewer than 3 (two cannot tell who disagrees)."""
    if len(updates) < 3:
        return list(range(len(updates))), []
    cosines = agreement_with_others(updates, layout)
    consensus = float(np.median(cosines))
    if consensus <= 0:
        return list(range(len(updates))), cosines
    bound = min(min_cosine, -consensus)
    return [i for i, c in enumerate(cosines) if c >= bound], cosines
