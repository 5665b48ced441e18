"""Batches for training from stored data: the rows of an encrypted data file, parsed and
cut into batches (optionally in a seeded shuffled order), exactly as the plaintext Criteo
reader batches the same file.

The encrypted format (:mod:`enclaverec.data.encrypted`) only authenticates and returns
chunks of whole lines; turning lines into batches is the data pipeline's job, here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from enclaverec.data.criteo import BadLineCounter, OnBadLine, parse_criteo_block
from enclaverec.data.encrypted.reader import EncryptedDataReader
from enclaverec.data.hashing import CategoryHashing
from enclaverec.data.schema import Examples
from enclaverec.errors import UsageError


def encrypted_batches(
    reader: EncryptedDataReader,
    hashing: CategoryHashing,
    batch_size: int,
    shuffle_seed: int | None = None,
    on_bad_line: str | OnBadLine = "fail",
    *,
    start_row_id: int = 0,
    counter: BadLineCounter | None = None,
    shuffle_buffer_chunks: int = 4,
) -> Iterator[Examples]:
    """Batches of parsed rows from an encrypted file, as
    :func:`enclaverec.data.criteo.iter_criteo_examples` gives for the plaintext file: the
    same arrays, the same row ids (line index from ``start_row_id``, malformed lines
    included) and the same batch boundaries.

    With ``shuffle_seed``, chunks are read in a seeded random order and the rows of
    ``shuffle_buffer_chunks`` chunks at a time (plus the rows left over from the
    previous group) are shuffled together; the same seed gives the same batches.
    """
    if batch_size < 1:
        raise UsageError(f"batch size must be positive, got {batch_size}")
    if shuffle_buffer_chunks < 1:
        raise UsageError(f"shuffle buffer must be positive, got {shuffle_buffer_chunks}")
    mode = OnBadLine.parse(on_bad_line)

    def parse(index: int) -> Examples:
        first_line, _ = reader.chunk_lines(index)
        return parse_criteo_block(
            reader.read_chunk(index),
            hashing=hashing,
            first_row_id=start_row_id + first_line,
            source=str(reader.path),
            first_line_number=first_line + 1,
            on_bad_line=mode,
            counter=counter,
        )

    if shuffle_seed is None:
        groups: Iterable[Sequence[int]] = ([i] for i in range(reader.num_chunks))
        rng = None
    else:
        rng = np.random.default_rng(shuffle_seed)
        order = [int(i) for i in rng.permutation(reader.num_chunks)]
        groups = (
            order[i : i + shuffle_buffer_chunks]
            for i in range(0, len(order), shuffle_buffer_chunks)
        )
    leftover: list[Examples] = []
    for group in groups:
        parts = leftover + [parse(index) for index in group]
        parts = [part for part in parts if len(part)]
        if not parts:
            leftover = []
            continue
        merged = parts[0] if len(parts) == 1 else Examples.concatenate(parts)
        if rng is not None:
            merged = merged.take(rng.permutation(len(merged)))
        full = len(merged) - len(merged) % batch_size
        for start in range(0, full, batch_size):
            yield merged.slice(start, start + batch_size)
        leftover = [merged.slice(full, len(merged))] if full < len(merged) else []
    if leftover:
        yield leftover[0]
