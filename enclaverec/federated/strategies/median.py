"""Coordinate-wise median (Yin et al. 2018, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates"): each coordinate of the change is the median of the
parties' values, each table row over the parties that sent it. Fewer than half of the
parties cannot move a coordinate outside the honest parties' range."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from enclaverec.arrays import ModelLayout, ModelUpdate
from enclaverec.federated.robust import coordinate_median
from enclaverec.federated.strategies.base import Strategy


@dataclass(frozen=True)
class MedianOptions:
    """The median has no options."""


class Median(Strategy):
    name = "median"

    def aggregate(
        self,
        updates: Sequence[ModelUpdate],
        layout: ModelLayout,
        contributors: Sequence[str],
        norm_bound: float | None = None,
    ) -> ModelUpdate:
        return coordinate_median(self.prepare(updates, layout, contributors, norm_bound), layout)
