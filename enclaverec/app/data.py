"""Which data a job trains on (:class:`DataConfig`), loading it, and the reference scores
that a synthetic run reports beside its own (DESIGN.md §4)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from enclaverec.data.criteo import OnBadLine
from enclaverec.data.sources import DataSelection
from enclaverec.errors import ConfigError

if TYPE_CHECKING:
    from enclaverec.data.schema import DataSet

DEFAULT_SEED = 0


@dataclass(frozen=True)
class DataConfig:
    """A data selection and how to read and split it. ``table_size`` (rows per embedding
    table) applies to Criteo files only; ``None`` is the hashing's default."""

    selection: DataSelection
    seed: int = DEFAULT_SEED
    table_size: int | None = None
    on_bad_line: OnBadLine = OnBadLine.FAIL

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"--seed must be an integer of at least 0, got {self.seed!r}")
        if self.table_size is not None and self.table_size < 2:
            raise ConfigError(f"--table-size must be at least 2, got {self.table_size}")
        object.__setattr__(self, "on_bad_line", OnBadLine.parse(self.on_bad_line))

    @classmethod
    def builtin(cls, name: str, *, seed: int = DEFAULT_SEED) -> DataConfig:
        return cls(DataSelection(dataset=name), seed=seed)


def load_data(config: DataConfig, *, progress: bool = True) -> DataSet:
    """The selected data set, split by the seed (see :func:`data.sources.load_dataset`)."""
    from enclaverec.data.sources import load_dataset

    return load_dataset(
        config.selection,
        seed=config.seed,
        table_size=config.table_size,
        on_bad_line=config.on_bad_line.value,
        progress=progress,
    )


def synthetic_references(dataset: DataSet, seed: int) -> dict[str, float]:
    """For synthetic data, the planted model's test AUC and the logistic baseline's, so a
    trained model's AUC can be read against both; nothing for other data sets."""
    if "oracle_auc" not in dataset.info:
        return {}
    from enclaverec.data.baseline import baseline_logreg_auc

    return {
        "oracle_auc": float(dataset.info["oracle_auc"]),
        "baseline_logreg_auc": float(baseline_logreg_auc(dataset, seed=seed)),
    }


def default_output(dataset_name: str, prefix: str) -> Path:
    """``runs/<prefix>-<data set>``, the data set's name made safe for a folder name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset_name).strip("-") or "data"
    return Path("runs") / f"{prefix}-{slug}"
