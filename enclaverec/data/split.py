"""The train/validation/test split: a pure function of (row id, seed), before partitioning.

Row ``r`` draws ``u = uniform01(r, key)`` with ``key = BLAKE2b-64(person="enclrec-split-v1",
data=decimal seed)`` (see ``enclaverec.data.hashing``) and goes to train if
``u < train``, to validation if ``u < train + validation``, else to test. Each row's
split depends only on its own id and the seed: not on the other rows, their order, the
file boundaries or the party that holds it, so every party and every mode agrees on the
one global test split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from enclaverec.data.hashing import HASH_FUNCTION, seed_key, uniform01
from enclaverec.data.schema import Examples
from enclaverec.errors import ConfigError

_SPLIT_PURPOSE = b"enclrec-split-v1"


@dataclass(frozen=True)
class SplitRule:
    """Fractions of rows in train, validation and test (default 80/10/10)."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1

    def __post_init__(self) -> None:
        fractions = (self.train, self.validation, self.test)
        if any(not (0.0 < f < 1.0) for f in fractions):
            raise ConfigError(f"split fractions must each be in (0, 1), got {fractions}")
        if not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
            raise ConfigError(f"split fractions must sum to 1, got {sum(fractions)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "function": HASH_FUNCTION,
            "purpose": _SPLIT_PURPOSE.decode("ascii"),
            "train": self.train,
            "validation": self.validation,
            "test": self.test,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitRule:
        if data.get("function") != HASH_FUNCTION or data.get("purpose") != _SPLIT_PURPOSE.decode():
            raise ConfigError(f"unknown split rule {data.get('function')!r}")
        return cls(
            train=float(data["train"]),
            validation=float(data["validation"]),
            test=float(data["test"]),
        )


SPLIT_NAMES = ("train", "validation", "test")
TRAIN, VALIDATION, TEST = 0, 1, 2


def assign_splits(row_ids: np.ndarray, *, seed: int, rule: SplitRule = SplitRule()) -> np.ndarray:
    """The split of each row (0 train, 1 validation, 2 test) as int8 [N]."""
    u = uniform01(
        np.asarray(row_ids, dtype=np.int64).astype(np.uint64), seed_key(_SPLIT_PURPOSE, seed)
    )
    assignment = np.full(len(u), TEST, dtype=np.int8)
    assignment[u < rule.train + rule.validation] = VALIDATION
    assignment[u < rule.train] = TRAIN
    return assignment


def split_examples(
    examples: Examples, *, seed: int, rule: SplitRule = SplitRule()
) -> tuple[Examples, Examples, Examples]:
    """(train, validation, test), each keeping the rows' original order."""
    assignment = assign_splits(examples.row_ids, seed=seed, rule=rule)
    return tuple(  # type: ignore[return-value]
        examples.take(np.flatnonzero(assignment == which)) for which in (TRAIN, VALIDATION, TEST)
    )
