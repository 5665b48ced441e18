"""Keyed, vectorised 64-bit mixing for category hashing, the split and partitioning.

One mixing function serves three purposes, each under its own key so the results are
independent: category value -> embedding row (``CategoryHashing``), row index -> split
(``enclaverec.data.split``), row index or user -> party (``enclaverec.data.partition``).

The mix is the output function of SplitMix64 (Steele, Lea and Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014; constants as in Vigna's ``splitmix64.c``),
applied to ``value XOR key``. It is a bijection on 64-bit integers with full avalanche,
vectorises in numpy at hundreds of millions of values per second, and gives every party
the same answer on every platform. Keys are derived from a salt or seed with BLAKE2b
(``hashlib``).

Security: this is bucketing, not cryptography. Anyone who knows the salt (it is part of a
federation's plan, not a secret) can compute which row a category maps to, and so craft
collisions; the threat model does not rely on it (which rows a party touches is an
acknowledged side channel, DESIGN.md §2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from enclaverec.errors import ConfigError

# SplitMix64 output function (Vigna, splitmix64.c; Stafford's "Mix13" variant).
_MIX_M1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TWO_POW_MINUS_53 = 2.0**-53

HASH_FUNCTION = "splitmix64-keyed"
HASH_VERSION = 1
# The project's fixed default salt: BLAKE2b-128 of a fixed label, so anyone can re-derive
# it. A federation may choose another in its plan; every party must use the same one.
DEFAULT_SALT = hashlib.blake2b(b"enclaverec category hashing v1", digest_size=16).hexdigest()
DEFAULT_TABLE_SIZE = 100_000
# Row 0 of every table is reserved for a missing category, so a missing value never
# shares a row with a real one; hashed categories land in rows 1 .. size-1.
MISSING_ROW = 0


def mix64(values: np.ndarray, key: int | np.ndarray) -> np.ndarray:
    """SplitMix64's output function of ``values XOR key`` (uint64 in, uint64 out); an
    array ``key`` broadcasts against ``values`` (one key per column)."""
    if isinstance(key, np.ndarray):
        key_array = key.astype(np.uint64, copy=False)
    else:
        key_array = np.uint64(key & 0xFFFFFFFFFFFFFFFF)
    z = np.asarray(values, dtype=np.uint64) ^ key_array
    # numpy wraps uint64 array arithmetic modulo 2**64, which is what the mix needs.
    z = (z ^ (z >> _S30)) * _MIX_M1
    z = (z ^ (z >> _S27)) * _MIX_M2
    return z ^ (z >> _S31)


def uniform01(values: np.ndarray, key: int) -> np.ndarray:
    """A float64 in [0, 1) per value: the top 53 bits of :func:`mix64`."""
    return (mix64(values, key) >> _S11).astype(np.float64) * _TWO_POW_MINUS_53


def derive_key(purpose: bytes, data: bytes, *, salt: bytes = b"") -> int:
    """A 64-bit key: BLAKE2b-64 of ``data`` keyed with ``salt``, personalised by
    ``purpose`` (at most 16 bytes), read little-endian."""
    digest = hashlib.blake2b(data, digest_size=8, key=salt, person=purpose).digest()
    return int.from_bytes(digest, "little")


def seed_key(purpose: bytes, seed: int) -> int:
    """The key for a seeded rule (split, partition): :func:`derive_key` over the decimal
    seed, so that seed 7 means the same thing on every platform."""
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    return derive_key(purpose, str(seed).encode("ascii"))


_CATEGORY_PURPOSE = b"enclrec-cat-v1"


MAX_TABLE_SIZE = 2**31 - 1


@dataclass(frozen=True)
class CategoryHashing:
    """How a categorical value becomes an embedding row: part of a federation's measured
    plan, so every party hashes identically.

    Feature ``i`` (0-based; Criteo's ``C{i+1}``) has the key
    ``BLAKE2b-64(key=salt, person="enclrec-cat-v1", data="C{i+1}")`` and a value ``v``
    (the category's hex string read as an unsigned integer) goes to row
    ``1 + mix64(v, key) mod (table_size - 1)``; a missing value goes to row 0.
    """

    table_sizes: tuple[int, ...]
    salt: str = DEFAULT_SALT
    function: str = HASH_FUNCTION
    version: int = HASH_VERSION

    def __post_init__(self) -> None:
        if self.function != HASH_FUNCTION or self.version != HASH_VERSION:
            raise ConfigError(
                f"unknown category hashing {self.function!r} version {self.version}; "
                f"this build knows {HASH_FUNCTION!r} version {HASH_VERSION}"
            )
        try:
            salt = bytes.fromhex(self.salt)
        except ValueError as exc:
            raise ConfigError("category hashing salt must be a hex string") from exc
        if not 1 <= len(salt) <= 64:
            raise ConfigError(f"category hashing salt must be 1 to 64 bytes, got {len(salt)}")
        if not self.table_sizes:
            raise ConfigError("category hashing needs at least one table size")
        for size in self.table_sizes:
            if isinstance(size, bool) or not isinstance(size, int) or size < 2:
                raise ConfigError(
                    f"table sizes must be integers >= 2 (row 0 is reserved), got {size!r}"
                )
            if size > MAX_TABLE_SIZE:
                # Row ids are int32 (the model's embedding lookups take them as such).
                raise ConfigError(f"table sizes must be at most {MAX_TABLE_SIZE}, got {size}")

    @classmethod
    def uniform(
        cls, num_features: int, table_size: int = DEFAULT_TABLE_SIZE, salt: str = DEFAULT_SALT
    ) -> CategoryHashing:
        """The same table size for every feature (the ``--table-size`` flag)."""
        return cls(table_sizes=(table_size,) * num_features, salt=salt)

    @property
    def num_features(self) -> int:
        return len(self.table_sizes)

    def feature_key(self, index: int) -> int:
        return derive_key(
            _CATEGORY_PURPOSE, f"C{index + 1}".encode("ascii"), salt=bytes.fromhex(self.salt)
        )

    @cached_property
    def _keys(self) -> np.ndarray:
        return np.array([self.feature_key(i) for i in range(self.num_features)], np.uint64)

    def rows(self, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Embedding rows (int32 [N, F]) of uint64 category values [N, F]; cells where
        ``missing`` is true go to row 0."""
        values = np.asarray(values, dtype=np.uint64)
        if values.ndim != 2 or values.shape[1] != self.num_features:
            raise ValueError(f"expected values of shape [N, {self.num_features}]")
        z = mix64(values, self._keys)
        modulus = np.array(self.table_sizes, dtype=np.uint64) - np.uint64(1)
        rows = (z % modulus + np.uint64(1)).astype(np.int32)
        rows[missing] = MISSING_ROW
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "version": self.version,
            "salt": self.salt,
            "missing_row": MISSING_ROW,
            "table_sizes": list(self.table_sizes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoryHashing:
        known = {"function", "version", "salt", "missing_row", "table_sizes"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown category hashing key(s): {', '.join(unknown)}")
        try:
            hashing = cls(
                table_sizes=tuple(data["table_sizes"]),
                salt=str(data["salt"]),
                function=str(data["function"]),
                version=data["version"],
            )
        except KeyError as exc:
            raise ConfigError(f"category hashing is missing the key {exc.args[0]!r}") from exc
        except TypeError as exc:
            raise ConfigError(f"invalid category hashing: {exc}") from exc
        if data.get("missing_row", MISSING_ROW) != MISSING_ROW:
            raise ConfigError(f"category hashing missing_row must be {MISSING_ROW}")
        return hashing
