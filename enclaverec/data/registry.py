"""The built-in data sets, in one table: ``--dataset`` choices, help texts and loading all
come from :data:`DATASETS`.

Adding a data set is one module in ``enclaverec/data/`` that defines ``DATASET`` (a
:class:`~enclaverec.data.schema.BuiltinDataSet` with its loader) and one entry below
(docs/data.md, "Adding a data set"). Entries are imported explicitly, never by name.
"""

from __future__ import annotations

from enclaverec.data import movielens, synthetic
from enclaverec.data.schema import BuiltinDataSet
from enclaverec.errors import UsageError

DATASETS: tuple[BuiltinDataSet, ...] = (
    synthetic.DATASET,
    movielens.DATASET,
)


def dataset_names() -> tuple[str, ...]:
    """The ``--dataset`` choices, in the table's order."""
    return tuple(entry.name for entry in DATASETS)


def builtin_dataset(name: str) -> BuiltinDataSet:
    """The entry called ``name``, or a ``UsageError`` naming every built-in data set."""
    for entry in DATASETS:
        if entry.name == name:
            return entry
    raise UsageError(
        f"unknown data set {name!r}; built-in data sets: {', '.join(dataset_names())} "
        "(or --data PATH... for Criteo files)"
    )


def dataset_help() -> str:
    """One line per built-in data set, for ``--dataset`` help texts."""
    return "; ".join(f"{entry.name}: {entry.summary}" for entry in DATASETS)
