"""Streaming reader of Criteo TSV files (plain or gzip) into numpy ``Examples`` batches.

A line is ``label <TAB> I1..I13 <TAB> C1..C26``: the label ``0`` or ``1``; each integer
an optional ``-`` and 1 to 18 decimal digits, or empty; each category 1 to 16 hex digits
(either case), or empty. Integers: empty and negative become 0, then ``log(1 + x)``.
Categories become embedding rows through :class:`CategoryHashing` (empty: row 0).

Parsing is vectorised over a block of whole lines: the separators are found with numpy
in the block's bytes and every field is decoded column-wise, so there is no Python work
per field. ``parse_criteo_block`` does not read files, so the encrypted-data-set reader
decrypts a chunk of whole lines and hands it over.

A malformed line is reported with its file and 1-based line number (and never its
content: it is plaintext data). It is fatal by default; with ``on_bad_line="skip"`` it is
skipped and counted. Row ids are the 0-based index of the line among all lines of all
files read (malformed ones included), so skipping a line never renumbers the others.
"""

from __future__ import annotations

import enum
import gzip
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from enclaverec.data.hashing import MISSING_ROW, CategoryHashing
from enclaverec.data.schema import (
    DENSE_DTYPE,
    LABEL_DTYPE,
    ROW_ID_DTYPE,
    SPARSE_DTYPE,
    Examples,
    FeatureSpec,
)
from enclaverec.errors import ConfigError, DataFormatError, PathError, UsageError

__all__ = [
    "CATEGORICAL_NAMES",
    "INTEGER_NAMES",
    "MISSING_ROW",
    "BadLineCounter",
    "CategoryHashing",
    "OnBadLine",
    "criteo_feature_spec",
    "empty_examples",
    "iter_criteo_examples",
    "parse_criteo_block",
    "parse_criteo_lines",
]

NUM_INTEGER = 13
NUM_CATEGORICAL = 26
NUM_FIELDS = 1 + NUM_INTEGER + NUM_CATEGORICAL
INTEGER_NAMES = tuple(f"I{i}" for i in range(1, NUM_INTEGER + 1))
CATEGORICAL_NAMES = tuple(f"C{i}" for i in range(1, NUM_CATEGORICAL + 1))
# 18 decimal digits always fit int64; 16 hex digits are exactly uint64.
MAX_INTEGER_DIGITS = 18
MAX_HEX_DIGITS = 16
_CRITEO_HEX_DIGITS = 8
# Bytes read per block: large enough that numpy's per-call overhead vanishes, small
# enough that the per-field gather arrays stay a few MB.
READ_BLOCK_BYTES = 1 << 20
# How many bad-line messages a counter keeps for the report (the count is exact).
KEEP_BAD_LINE_MESSAGES = 5

_TAB, _NEWLINE, _MINUS, _ZERO, _ONE = 9, 10, 45, 48, 49
_INVALID_NIBBLE = 255
_HEX_VALUE = np.full(256, _INVALID_NIBBLE, dtype=np.uint8)
for _offset, _base in ((0, ord("0")), (10, ord("a")), (10, ord("A"))):
    for _i in range(10 if _offset == 0 else 6):
        _HEX_VALUE[_base + _i] = _offset + _i
GZIP_MAGIC = b"\x1f\x8b"  # RFC 1952 §2.3.1
# Bytes per gather window: the longest field decoded (an integer: minus and 18 digits).
_WINDOW = MAX_INTEGER_DIGITS + 1


class OnBadLine(enum.Enum):
    """What to do with a malformed line."""

    FAIL = "fail"
    SKIP = "skip"

    @classmethod
    def parse(cls, value: str | OnBadLine) -> OnBadLine:
        if isinstance(value, OnBadLine):
            return value
        try:
            return cls(value)
        except ValueError as exc:
            raise UsageError(f"--on-bad-line must be 'fail' or 'skip', got {value!r}") from exc


@dataclass
class BadLineCounter:
    """Counts the lines skipped with ``on_bad_line="skip"`` and keeps the first few
    messages (file, line number and reason; never the line's content)."""

    skipped: int = 0
    messages: list[str] = field(default_factory=list)

    def record(self, message: str) -> None:
        self.skipped += 1
        if len(self.messages) < KEEP_BAD_LINE_MESSAGES:
            self.messages.append(message)


def criteo_feature_spec(hashing: CategoryHashing) -> FeatureSpec:
    """The Criteo schema: 13 dense features (log1p of the integers), 26 categorical."""
    if hashing.num_features != NUM_CATEGORICAL:
        raise ConfigError(
            f"Criteo data has {NUM_CATEGORICAL} categorical features, but the category "
            f"hashing has {hashing.num_features} table sizes"
        )
    return FeatureSpec(
        dense_names=INTEGER_NAMES,
        categorical_names=CATEGORICAL_NAMES,
        table_sizes=hashing.table_sizes,
    )


def empty_examples(
    num_dense: int = NUM_INTEGER, num_categorical: int = NUM_CATEGORICAL
) -> Examples:
    return Examples(
        dense=np.zeros((0, num_dense), dtype=DENSE_DTYPE),
        categorical=np.zeros((0, num_categorical), dtype=SPARSE_DTYPE),
        labels=np.zeros(0, dtype=LABEL_DTYPE),
        row_ids=np.zeros(0, dtype=ROW_ID_DTYPE),
    )


def parse_criteo_lines(
    lines: Sequence[bytes],
    *,
    hashing: CategoryHashing,
    first_row_id: int,
    source: str,
    first_line_number: int,
    on_bad_line: str | OnBadLine = "fail",
    counter: BadLineCounter | None = None,
) -> Examples:
    """Parse whole lines (each element one line, with or without its trailing newline).

    Line ``i`` of ``lines`` is line ``first_line_number + i`` of ``source`` (for messages)
    and gets row id ``first_row_id + i``.
    """
    data = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
    return parse_criteo_block(
        data,
        hashing=hashing,
        first_row_id=first_row_id,
        source=source,
        first_line_number=first_line_number,
        on_bad_line=on_bad_line,
        counter=counter,
    )


def parse_criteo_block(
    data: bytes,
    *,
    hashing: CategoryHashing,
    first_row_id: int,
    source: str,
    first_line_number: int,
    on_bad_line: str | OnBadLine = "fail",
    counter: BadLineCounter | None = None,
) -> Examples:
    """Parse a block of whole lines (``\\n``-terminated; the last newline may be absent;
    ``\\r\\n`` is accepted) into Examples.

    Raises:
        DataFormatError: with ``on_bad_line="fail"``, for the first malformed line, naming
            ``source`` and the line number.
    """
    mode = OnBadLine.parse(on_bad_line)
    criteo_feature_spec(hashing)  # checks the number of tables
    if not data:
        return empty_examples()
    if not data.endswith(b"\n"):
        data += b"\n"
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    buf = np.frombuffer(data, dtype=np.uint8)

    # 1. Lines and fields: every field ends at a tab or at its line's newline, so a line's
    # field count is the number of separators up to and including its newline.
    is_newline = buf == _NEWLINE
    newline_pos = np.flatnonzero(is_newline)
    num_lines = len(newline_pos)
    sep_pos = np.flatnonzero(is_newline | (buf == _TAB))
    fields_per_line = np.diff(np.flatnonzero(is_newline[sep_pos]), prepend=-1)
    shape_ok = fields_per_line == NUM_FIELDS
    if not shape_ok.all():
        sep_pos = sep_pos[np.repeat(shape_ok, fields_per_line)]
    line_index = np.flatnonzero(shape_ok)
    ends = sep_pos.reshape(-1, NUM_FIELDS)
    starts = np.empty_like(ends)
    starts[:, 0] = np.concatenate(([0], newline_pos[:-1] + 1))[line_index]
    starts[:, 1:] = ends[:, :-1] + 1
    lengths = ends - starts
    # Byte windows: row p is buf[p : p + _WINDOW], zero-padded past the end, so gathering
    # a field's bytes takes one index per field instead of one per byte.
    padded = np.concatenate((buf, np.zeros(_WINDOW, dtype=np.uint8)))
    windows = np.lib.stride_tricks.as_strided(
        padded, shape=(len(buf), _WINDOW), strides=(1, 1), writeable=False
    )

    # 2. Label: exactly "0" or "1".
    first_byte = windows[starts[:, 0], 0]
    label_ok = (lengths[:, 0] == 1) & ((first_byte == _ZERO) | (first_byte == _ONE))
    labels = (first_byte == _ONE).astype(LABEL_DTYPE)

    # 3. Integers, then Criteo's transform: missing and negative -> 0, then log(1 + x).
    integers, integer_ok = _parse_integers(windows, starts[:, 1:14], lengths[:, 1:14])
    dense = np.log1p(integers.astype(np.float64)).astype(DENSE_DTYPE)

    # 4. Categories: hex -> uint64 -> embedding row.
    values, category_ok = _parse_hex(padded, windows, starts[:, 14:], lengths[:, 14:])
    missing = lengths[:, 14:] == 0

    line_ok = label_ok & integer_ok.all(axis=1) & category_ok.all(axis=1)
    if not (line_ok.all() and len(line_index) == num_lines):
        _report_bad_lines(
            mode,
            counter,
            source=source,
            first_line_number=first_line_number,
            fields_per_line=fields_per_line,
            line_index=line_index,
            line_ok=line_ok,
            label_ok=label_ok,
            integer_ok=integer_ok,
            category_ok=category_ok,
        )
        keep = np.flatnonzero(line_ok)
        line_index, labels, dense = line_index[keep], labels[keep], dense[keep]
        values, missing = values[keep], missing[keep]

    return Examples(
        dense=dense,
        categorical=hashing.rows(values, missing),
        labels=labels,
        row_ids=(line_index + first_row_id).astype(ROW_ID_DTYPE),
    )


def _parse_integers(
    windows: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Criteo integers of cells [N, K]: (values clamped at 0 as int64, cell ok)."""
    width = int(min(lengths.max(initial=0), MAX_INTEGER_DIGITS + 1))
    values = np.zeros(lengths.shape, dtype=np.int64)
    ok = lengths <= MAX_INTEGER_DIGITS + 1
    if width == 0:
        return values, ok
    chars = windows[starts, :width]
    negative = (chars[..., 0] == _MINUS) & (lengths > 0)
    # A leading minus needs at least one digit after it; 18 digits at most either way.
    ok &= ~(negative & (lengths == 1))
    ok &= ~(~negative & (lengths > MAX_INTEGER_DIGITS))
    # Horner's rule, one digit position at a time across all cells (positions past a
    # cell's length leave it unchanged).
    for k in range(width):
        present = lengths > k
        digit = chars[..., k] - np.uint8(_ZERO)  # wraps below '0': > 9 is "not a digit"
        is_digit = digit <= 9
        if k == 0:
            ok &= is_digit | negative | ~present
        else:
            ok &= is_digit | ~present
        values = np.where(present & is_digit, values * 10 + digit, values)
    values[negative | ~ok] = 0
    return values, ok


def _parse_hex(
    padded: np.ndarray, windows: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Hex categories of cells [N, K]: (uint64 values, cell ok); empty cells are ok."""
    width = int(min(lengths.max(initial=0), MAX_HEX_DIGITS))
    too_long = lengths > MAX_HEX_DIGITS
    if width == 0:
        return np.zeros(lengths.shape, dtype=np.uint64), ~too_long
    missing = lengths == 0
    if width == _CRITEO_HEX_DIGITS and ((lengths == width) | missing).all():
        # Criteo's own files: always 8 digits. Gather each field's 8 bytes as one unaligned
        # uint64 (one index per field), decode the nibbles, pack nibble pairs into bytes
        # and read them as a big-endian uint32.
        words = np.ndarray(shape=(windows.shape[0],), dtype="<u8", buffer=padded, strides=(1,))
        nibbles = np.take(_HEX_VALUE, words[starts].view(np.uint8).reshape(starts.shape + (8,)))
        nibbles[missing] = 0
        # "All 8 nibbles valid" as one comparison per cell: view the 8 flags as a uint64.
        ok = (nibbles == _INVALID_NIBBLE).view("<u8")[..., 0] == 0
        packed = np.ascontiguousarray((nibbles[..., 0::2] << 4) | nibbles[..., 1::2])
        return packed.view(">u4")[..., 0].astype(np.uint64), ok
    # Any length: digit k of a field of length L is worth 16 ** (L - 1 - k).
    nibbles = np.take(_HEX_VALUE, windows[starts, :width])
    position = np.arange(width)
    present = position < lengths[..., None]
    ok = ((nibbles != _INVALID_NIBBLE) | ~present).all(axis=-1) & ~too_long
    shifts = (lengths[..., None] - 1 - position) * 4
    np.clip(shifts, 0, 60, out=shifts)
    terms = np.where(present, nibbles, 0).astype(np.uint64) << shifts.astype(np.uint64)
    return np.bitwise_or.reduce(terms, axis=-1), ok


def _report_bad_lines(
    mode: OnBadLine,
    counter: BadLineCounter | None,
    *,
    source: str,
    first_line_number: int,
    fields_per_line: np.ndarray,
    line_index: np.ndarray,
    line_ok: np.ndarray,
    label_ok: np.ndarray,
    integer_ok: np.ndarray,
    category_ok: np.ndarray,
) -> None:
    """Raise for the first malformed line (``fail``), or count every one (``skip``)."""
    reasons: dict[int, str] = {}
    for i in np.flatnonzero(fields_per_line != NUM_FIELDS):
        reasons[int(i)] = (
            f"expected {NUM_FIELDS} tab-separated fields, got {int(fields_per_line[i])}"
        )
    for k in np.flatnonzero(~line_ok):
        if not label_ok[k]:
            reason = "label must be 0 or 1"
        elif not integer_ok[k].all():
            name = INTEGER_NAMES[int(np.argmin(integer_ok[k]))]
            reason = (
                f"integer feature {name} is not an integer "
                f"(optional '-' and 1 to {MAX_INTEGER_DIGITS} digits)"
            )
        else:
            name = CATEGORICAL_NAMES[int(np.argmin(category_ok[k]))]
            reason = f"categorical feature {name} is not 1 to {MAX_HEX_DIGITS} hex digits"
        reasons[int(line_index[k])] = reason
    for i in sorted(reasons):
        line_number = first_line_number + i
        if mode is OnBadLine.FAIL:
            raise DataFormatError(reasons[i], path=source, line=line_number)
        if counter is not None:
            counter.record(f"{source}:{line_number}: {reasons[i]}")


# --- files ---------------------------------------------------------------------------


def starts_gzip(handle: BinaryIO) -> bool:
    """Whether a seekable binary file is gzip, by its magic bytes (not its name); the
    position is back at the start afterwards."""
    magic = handle.read(len(GZIP_MAGIC))
    handle.seek(0)
    return magic == GZIP_MAGIC


def _open(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """(raw file, stream to read): gzip is recognised by its magic bytes, not the name."""
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise PathError.from_os_error(exc, path=path, what="data file") from exc
    if starts_gzip(raw):
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw, raw


def _read_blocks(
    path: Path, *, block_bytes: int, on_bytes: Callable[[int], None] | None
) -> Iterator[tuple[bytes, int]]:
    """Blocks of whole lines of one file, each with its number of newlines; the last
    block's last line may lack its newline."""
    raw, stream = _open(path)
    position = 0
    try:
        carry = b""
        while True:
            try:
                chunk = stream.read(block_bytes)
            except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                raise DataFormatError(f"corrupt gzip stream: {exc}", path=str(path)) from exc
            except OSError as exc:
                raise UsageError(f"cannot read data file {path}: {exc}") from exc
            if on_bytes is not None:
                now = raw.tell()
                on_bytes(now - position)
                position = now
            if not chunk:
                if carry:
                    yield carry, carry.count(b"\n") + (0 if carry.endswith(b"\n") else 1)
                return
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                carry = data
                continue
            block, carry = data[:cut], data[cut:]
            yield block, block.count(b"\n")
    finally:
        stream.close()
        raw.close()


def check_paths(paths: Iterable[Path]) -> tuple[Path, ...]:
    """The paths as a tuple, each an existing regular file (else UsageError)."""
    checked = tuple(Path(p) for p in paths)
    if not checked:
        raise UsageError("no data file given")
    for path in checked:
        if not path.exists():
            raise PathError(path, "not found", what="data file")
        if path.is_dir():
            raise PathError(path, "is a folder, not a file", what="data file")
        if not path.is_file():
            raise PathError(path, "is not a regular file", what="data file")
    return checked


def iter_criteo_examples(
    paths: Sequence[Path | str],
    *,
    hashing: CategoryHashing,
    batch_size: int,
    on_bad_line: str | OnBadLine = "fail",
    start_row_id: int = 0,
    counter: BadLineCounter | None = None,
    on_bytes: Callable[[int], None] | None = None,
    block_bytes: int = READ_BLOCK_BYTES,
) -> Iterator[Examples]:
    """Stream the files in order as batches of ``batch_size`` rows (the last one may be
    shorter; with ``skip``, batches still have ``batch_size`` rows except the last).

    Row ids count lines across all files from ``start_row_id``. ``counter`` receives the
    skipped lines; ``on_bytes`` the number of (compressed) bytes read, for progress bars.
    """
    if batch_size < 1:
        raise UsageError(f"batch size must be positive, got {batch_size}")
    mode = OnBadLine.parse(on_bad_line)
    criteo_feature_spec(hashing)
    checked = check_paths(paths)
    pending: list[Examples] = []
    pending_rows = 0
    row_id = start_row_id
    for path in checked:
        line_number = 1
        for block, lines in _read_blocks(path, block_bytes=block_bytes, on_bytes=on_bytes):
            parsed = parse_criteo_block(
                block,
                hashing=hashing,
                first_row_id=row_id,
                source=str(path),
                first_line_number=line_number,
                on_bad_line=mode,
                counter=counter,
            )
            row_id += lines
            line_number += lines
            if not len(parsed):
                continue
            pending.append(parsed)
            pending_rows += len(parsed)
            if pending_rows < batch_size:
                continue
            merged = pending[0] if len(pending) == 1 else Examples.concatenate(pending)
            full = len(merged) - len(merged) % batch_size
            for start in range(0, full, batch_size):
                yield merged.slice(start, start + batch_size)
            pending = [merged.slice(full, len(merged))] if full < len(merged) else []
            pending_rows = len(merged) - full
    if pending_rows:
        yield pending[0] if len(pending) == 1 else Examples.concatenate(pending)
