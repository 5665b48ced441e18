"""Partitioning a split data set across N parties: ``iid``, ``by-user``, ``dirichlet:ALPHA``.

The party of a row is a function of the row alone (its id, user or label) and the seed,
applied to every split: each party gets its share of train and validation, and its
share of the one global test split, so the parties' test rows together are exactly that
split and every mode is scored on the same rows.

- ``iid``: party = floor(N * uniform01(row id)).
- ``by-user``: party = floor(N * uniform01(user row)): all rows of a user go to one
  party. Needs a user feature (``DataSet.info["user_feature"]``): ``movielens-100k``
  (``user``) and ``synthetic`` (``C1``) have one; Criteo files have none and are refused.
- ``dirichlet:ALPHA``: label skew (Hsu, Qi and Brown, "Measuring the effects of
  non-identical data distribution for federated visual classification", 2019): for each
  label, the parties' shares are drawn from Dirichlet(ALPHA, ..., ALPHA) with a generator
  seeded from the seed; a row goes to the party whose cumulative share interval holds
  uniform01(row id). Small ALPHA: strong skew; large ALPHA: close to ``iid``. A draw
  that leaves a party without training or validation rows is redrawn (at most 10 draws).

uniform01 is the keyed mix of ``enclaverec.data.hashing`` under a key per rule, derived
from the seed, and independent of the split's key.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from enclaverec.data.hashing import derive_key, seed_key, uniform01
from enclaverec.data.schema import DataSet, Examples, split_sha256
from enclaverec.errors import UsageError

MAX_PARTIES = 1024
DIRICHLET_DRAWS = 10
_IID_PURPOSE = b"enclrec-part-iid"
_USER_PURPOSE = b"enclrec-part-usr"
_DIRICHLET_ROW_PURPOSE = b"enclrec-part-dir"
_DIRICHLET_SHARES_PURPOSE = b"enclrec-part-dsh"


class PartitionKind(enum.Enum):
    IID = "iid"
    BY_USER = "by-user"
    DIRICHLET = "dirichlet"


@dataclass(frozen=True)
class PartitionMode:
    """A parsed ``--partition`` value; ``alpha`` only for ``dirichlet``."""

    kind: PartitionKind
    alpha: float | None = None

    def __post_init__(self) -> None:
        if (self.kind is PartitionKind.DIRICHLET) != (self.alpha is not None):
            raise UsageError("a Dirichlet partition, and only it, takes ALPHA")
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha > 0):
            raise UsageError(f"dirichlet ALPHA must be a positive number, got {self.alpha}")

    def __str__(self) -> str:
        if self.kind is PartitionKind.DIRICHLET:
            return f"dirichlet:{self.alpha:g}"
        return self.kind.value


def parse_partition_mode(text: str | PartitionMode) -> PartitionMode:
    """``iid``, ``by-user`` or ``dirichlet:ALPHA`` (ALPHA a positive number).

    Raises:
        UsageError: anything else, naming the valid forms.
    """
    if isinstance(text, PartitionMode):
        return text
    valid = "valid: iid, by-user, dirichlet:ALPHA (ALPHA > 0, e.g. dirichlet:0.5)"
    if text in (PartitionKind.IID.value, PartitionKind.BY_USER.value):
        return PartitionMode(PartitionKind(text))
    prefix = PartitionKind.DIRICHLET.value + ":"
    if text.startswith(prefix):
        try:
            alpha = float(text[len(prefix) :])
        except ValueError as exc:
            raise UsageError(f"bad partition mode {text!r}; {valid}") from exc
        if not (math.isfinite(alpha) and alpha > 0):
            raise UsageError(f"bad partition mode {text!r}; {valid}")
        return PartitionMode(PartitionKind.DIRICHLET, alpha)
    raise UsageError(f"bad partition mode {text!r}; {valid}")


def dirichlet_shares(alpha: float, parties: int, *, seed: int, draw: int = 0) -> np.ndarray:
    """[2, parties]: each label's shares of the parties (rows sum to 1). ``draw`` numbers
    the redraws (see :func:`partition_dataset`)."""
    key = derive_key(_DIRICHLET_SHARES_PURPOSE, f"{seed}:{draw}".encode("ascii"))
    rng = np.random.default_rng(key)
    return rng.dirichlet(np.full(parties, alpha), size=2)


def assign_parties(
    examples: Examples,
    *,
    parties: int,
    mode: PartitionMode,
    seed: int,
    user_column: int | None = None,
    shares: np.ndarray | None = None,
) -> np.ndarray:
    """The party (int32 [N]) of each row under ``mode``; ``dirichlet`` needs ``shares``
    from :func:`dirichlet_shares`, ``by-user`` the user's column."""
    if mode.kind is PartitionKind.IID:
        u = uniform01(examples.row_ids.astype(np.uint64), seed_key(_IID_PURPOSE, seed))
    elif mode.kind is PartitionKind.BY_USER:
        if user_column is None:
            raise UsageError("by-user partitioning needs a user feature")
        users = examples.categorical[:, user_column].astype(np.uint64)
        u = uniform01(users, seed_key(_USER_PURPOSE, seed))
    else:
        if shares is None or shares.shape != (2, parties):
            raise UsageError(f"a Dirichlet partition needs shares of shape [2, {parties}]")
        u = uniform01(examples.row_ids.astype(np.uint64), seed_key(_DIRICHLET_ROW_PURPOSE, seed))
        bounds = np.cumsum(shares, axis=1)
        label = (examples.labels > 0.5).astype(np.int64)
        party = np.empty(len(examples), dtype=np.int32)
        for value in (0, 1):
            rows = label == value
            party[rows] = np.searchsorted(bounds[value], u[rows], side="right")
        return np.minimum(party, parties - 1)
    return np.minimum((u * parties).astype(np.int32), parties - 1)


def partition_dataset(
    dataset: DataSet, *, parties: int, mode: str | PartitionMode, seed: int
) -> list[DataSet]:
    """One DataSet per party: its shares of train, validation and the global test split.

    Every party must receive training and validation rows. ``dirichlet`` redraws its
    shares (draw 1, 2, ... from the same seed; at most ``DIRICHLET_DRAWS``) until that
    holds, as Flower's ``DirichletPartitioner`` does for its minimum partition size; the
    draw used is recorded. Each party's ``info`` is the data set's, plus ``partition``
    (mode, parties, party, seed, and ``dirichlet_draw``) and ``global_test_split_sha256``.

    Raises:
        UsageError: a malformed mode, a bad number of parties, ``by-user`` without a user
            feature, or a party left without training or validation rows.
    """
    parsed = parse_partition_mode(mode)
    if isinstance(parties, bool) or not isinstance(parties, int) or not 1 <= parties <= MAX_PARTIES:
        raise UsageError(f"--parties must be an integer from 1 to {MAX_PARTIES}, got {parties!r}")
    user_column = None
    if parsed.kind is PartitionKind.BY_USER:
        user_feature = dataset.info.get("user_feature")
        if user_feature is None:
            raise UsageError(
                f"{dataset.name} has no user column, so by-user cannot keep users whole; "
                "use iid or dirichlet:ALPHA"
            )
        user_column = dataset.spec.categorical_names.index(user_feature)

    splits = {"train": dataset.train, "validation": dataset.validation, "test": dataset.test}
    draws = DIRICHLET_DRAWS if parsed.kind is PartitionKind.DIRICHLET else 1
    for draw in range(draws):
        shares = None
        if parsed.alpha is not None:
            shares = dirichlet_shares(parsed.alpha, parties, seed=seed, draw=draw)
        assigned = {
            name: assign_parties(
                examples,
                parties=parties,
                mode=parsed,
                seed=seed,
                user_column=user_column,
                shares=shares,
            )
            for name, examples in splits.items()
        }
        empty = [
            (p, name)
            for name in ("train", "validation")
            for p in range(parties)
            if not (assigned[name] == p).any()
        ]
        if not empty:
            break
    if empty:
        party, name = empty[0]
        tries = f" in {draws} draws" if draws > 1 else ""
        raise UsageError(
            f"partition {parsed} over {parties} parties leaves party {party} without "
            f"{name} rows{tries}; use fewer parties"
            + (" or a larger ALPHA" if parsed.kind is PartitionKind.DIRICHLET else "")
        )

    global_test = split_sha256(dataset.test.row_ids)
    described = {"mode": str(parsed), "parties": parties, "seed": seed}
    if parsed.kind is PartitionKind.DIRICHLET:
        described["dirichlet_draw"] = draw
    result = []
    for p in range(parties):
        share = {name: splits[name].take(np.flatnonzero(assigned[name] == p)) for name in splits}
        info = {
            **dataset.info,
            "partition": {**described, "party": p},
            "global_test_split_sha256": global_test,
        }
        result.append(
            DataSet(
                name=dataset.name,
                spec=dataset.spec,
                train=share["train"],
                validation=share["validation"],
                test=share["test"],
                info=info,
            )
        )
    return result
