"""Test helpers: Criteo lines made on the spot, and a slow, obvious reference parser."""

from __future__ import annotations

import math
import random

import numpy as np

from enclaverec.data.hashing import CategoryHashing

NUM_FIELDS = 40


def random_fields(rng: random.Random) -> list[str]:
    """One valid line's fields, with the edge cases the format allows: empty values,
    negative integers, short, long and upper-case hex categories."""
    label = str(rng.randint(0, 1))
    ints = [
        rng.choice(["", "0", "-1", "-17", str(rng.randint(0, 10**6)), str(10**17 + 3)])
        for _ in range(13)
    ]
    cats = [
        rng.choice(
            [
                "",
                f"{rng.getrandbits(32):08x}",
                f"{rng.getrandbits(32):08X}",
                f"{rng.getrandbits(12):x}",
                f"{rng.getrandbits(64):016x}",
            ]
        )
        for _ in range(26)
    ]
    return [label, *ints, *cats]


def criteo_8hex_fields(rng: random.Random) -> list[str]:
    """A line as Criteo's own files have them: 8-digit lower-case hex or empty."""
    label = str(rng.randint(0, 1))
    ints = [rng.choice(["", str(rng.randint(-2, 5000))]) for _ in range(13)]
    cats = [rng.choice(["", f"{rng.getrandbits(32):08x}"]) for _ in range(26)]
    return [label, *ints, *cats]


def lines_text(rows: list[list[str]], *, newline: str = "\n", final_newline: bool = True) -> bytes:
    text = newline.join("\t".join(fields) for fields in rows)
    return (text + (newline if final_newline else "")).encode()


def reference_parse(
    rows: list[list[str]], hashing: CategoryHashing
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dense, categorical, labels) computed field by field with Python's int()."""
    dense = np.array(
        [[math.log1p(max(int(v), 0)) if v else 0.0 for v in fields[1:14]] for fields in rows],
        dtype=np.float64,
    ).astype(np.float32)
    values = np.array(
        [[int(v, 16) if v else 0 for v in fields[14:]] for fields in rows], dtype=np.uint64
    )
    missing = np.array([[v == "" for v in fields[14:]] for fields in rows], dtype=bool)
    labels = np.array([float(fields[0]) for fields in rows], dtype=np.float32)
    return dense, hashing.rows(values, missing), labels
