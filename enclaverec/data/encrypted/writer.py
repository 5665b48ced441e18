"""Writing encrypted data files: whole lines cut into chunks, each sealed in the STREAM
construction of :mod:`.format`, the file renamed into place only when complete."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

from enclaverec.crypto.aead import AES256GCM, TAG_SIZE
from enclaverec.data.encrypted.format import (
    AAD,
    DEFAULT_CHUNK_SIZE,
    ENCRYPTED_SUFFIX,
    ID_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    READ_BLOCK,
    RECORD,
    AtomicOutput,
    DataSetKey,
    EncryptedFileHeader,
    chunk_nonce,
    count_lines,
    file_cipher,
)
from enclaverec.errors import (
    DataFormatError,
    PathError,
    StorageError,
    UsageError,
)

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class EncryptedFileInfo:
    """What :func:`encrypt_file` (``path`` set) or :func:`encrypt_stream` wrote."""

    path: Path | None
    file_id: bytes
    chunks: int
    lines: int
    plaintext_bytes: int
    ciphertext_bytes: int


def _open_plaintext(source: Path) -> IO[bytes]:
    """Open a plain or gzip file (told apart by its magic bytes, not its name)."""
    try:
        handle: IO[bytes] = open(source, "rb")  # noqa: SIM115 - returned to the caller
    except OSError as exc:
        raise PathError.from_os_error(exc, path=source, what="input file") from exc
    from enclaverec.data.criteo import starts_gzip

    if starts_gzip(handle):  # type: ignore[arg-type]
        handle.close()
        return gzip.open(source, "rb")
    return handle


def _fill(handle: IO[bytes], buffer: bytearray, start: int, stop: int) -> tuple[int, bool]:
    """Read into ``buffer[start:stop]`` until it is full or the input ends.

    Returns (end of the data, whether the input ended).
    """
    with memoryview(buffer) as view:
        while start < stop:
            count = handle.readinto(view[start:stop])  # type: ignore[attr-defined]
            if not count:
                return start, True
            start += count
    return start, False


class _LineChunker:
    """Cuts an input into chunks of whole lines, in one reused buffer.

    A chunk ends at the last newline within ``chunk_size`` bytes; a line longer than that
    forms a chunk of its own (up to ``MAX_CHUNK_SIZE``, else ``DataFormatError``). The last
    chunk holds what follows the last cut and may lack a final newline; an empty input
    gives one empty chunk. The buffer holds ``chunk_size + 1`` bytes: the byte after a full
    chunk tells whether anything follows it, so the last chunk is known when it is cut.
    """

    def __init__(self, handle: IO[bytes], chunk_size: int, source: str) -> None:
        self.buffer = bytearray(chunk_size + 1)
        self._handle = handle
        self._chunk_size = chunk_size
        self._source = source
        self._end = 0  # bytes of input in the buffer
        self._cut = 0  # length of the chunk handed out by the last next_chunk()
        self._eof = False

    def next_chunk(self, *, lines_before: int) -> tuple[int, bool] | None:
        """(length, last) of the next chunk, which is ``buffer[:length]`` until the next
        call; None after the last chunk. Callers must release their views of the buffer
        before calling again (it may grow for a long line). ``lines_before`` (lines in
        the chunks so far) only serves the message about an over-long line."""
        if self._cut:
            # Move what follows the previous chunk to the front (a partial line: small).
            self.buffer[: self._end - self._cut] = self.buffer[self._cut : self._end]
            self._end -= self._cut
        elif self._eof:
            return None
        window = self._chunk_size + 1
        if len(self.buffer) > window and self._end <= window:
            del self.buffer[window:]  # shrink back after a long line
        if not self._eof and self._end < window:
            self._end, self._eof = _fill(self._handle, self.buffer, self._end, window)
        if self._end <= self._chunk_size:  # the input ended: this is the last chunk
            if self._cut and not self._end:
                return None
            self._cut = 0
            self._eof = True
            return self._end, True
        cut = self.buffer.rfind(b"\n", 0, self._chunk_size) + 1
        if cut == 0:
            cut = self._long_line(lines_before)
        self._cut = cut
        return cut, self._eof and cut == self._end

    def _long_line(self, lines_before: int) -> int:
        """The end of a line longer than the chunk size, reading on until its newline and
        one byte past it (or the end of the input)."""
        search = self._chunk_size
        while True:
            newline = self.buffer.find(b"\n", search, self._end)
            if newline >= 0 and (newline + 1 < self._end or self._eof):
                cut = newline + 1
                break
            if newline < 0 and self._eof:
                cut = self._end
                break
            if self._end > MAX_CHUNK_SIZE:
                cut = self._end
                break
            search = self._end if newline < 0 else newline
            self.buffer.extend(bytes(READ_BLOCK))
            self._end, self._eof = _fill(self._handle, self.buffer, self._end, len(self.buffer))
        if cut > MAX_CHUNK_SIZE:
            raise DataFormatError(
                f"line longer than {MAX_CHUNK_SIZE} bytes",
                path=self._source,
                line=lines_before + 1,
            )
        return cut


def _encrypt_stream(
    source: IO[bytes],
    output: BinaryIO,
    header: EncryptedFileHeader,
    cipher: AES256GCM,
    *,
    source_name: str,
    on_progress: Callable[[int], None] | None,
) -> tuple[int, int, int, int]:
    """Write the header and every chunk; returns (chunks, lines, plaintext bytes, bytes
    written). One input buffer and one output buffer serve every chunk."""
    header_bytes = header.to_bytes()
    header_hash = hashlib.sha256(header_bytes).digest()
    output.write(header_bytes)
    written = len(header_bytes)
    index = first_line = plaintext_bytes = 0
    chunker = _LineChunker(source, header.chunk_size, source_name)
    sealed = bytearray(header.chunk_size + TAG_SIZE)
    while (step := chunker.next_chunk(lines_before=first_line)) is not None:
        length, last = step
        buffer = chunker.buffer
        lines = count_lines(buffer, length)
        if len(sealed) < length + TAG_SIZE:
            sealed = bytearray(length + TAG_SIZE)
        aad = AAD.pack(header_hash, first_line, lines)
        with memoryview(buffer)[:length] as chunk, memoryview(sealed)[: length + TAG_SIZE] as out:
            cipher.encrypt_into(chunk_nonce(index, last), chunk, aad, out)
            output.write(RECORD.pack(length + TAG_SIZE, lines))
            output.write(out)
        written += RECORD.size + length + TAG_SIZE
        index += 1
        first_line += lines
        plaintext_bytes += length
        if on_progress is not None:
            on_progress(length)
        if last:
            break
    return index, first_line, plaintext_bytes, written


def plaintext_name(source: Path) -> str:
    """The name a source's plaintext goes by: its file name without a ``.gz`` suffix."""
    name = Path(source).name
    return name[:-3] if name.endswith(".gz") and len(name) > 3 else name


def encrypt_stream(
    source: IO[bytes],
    output: BinaryIO,
    dataset: DataSetKey,
    *,
    file_name: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    source_name: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> EncryptedFileInfo:
    """Encrypt the text read from ``source`` (a binary stream of Criteo lines) as one file
    of the data set, writing the file's bytes to ``output``. ``file_name`` goes into the
    header; ``source_name`` names the input in error messages. ``on_progress`` is called
    with the number of plaintext bytes after each chunk.

    Nothing here is atomic: :func:`encrypt_file` adds that for files.
    """
    header = EncryptedFileHeader(
        dataset_id=dataset.dataset_id,
        dataset_name=dataset.dataset_name,
        file_id=os.urandom(ID_SIZE),
        file_name=file_name,
        chunk_size=chunk_size,
        owner_fingerprint=dataset.owner_fingerprint,
        wrapped_key=dataset.wrapped_key,
    )
    cipher = file_cipher(dataset.data_key, header.dataset_id, header.file_id)
    chunks, lines, plaintext_bytes, written = _encrypt_stream(
        source,
        output,
        header,
        cipher,
        source_name=source_name or file_name,
        on_progress=on_progress,
    )
    return EncryptedFileInfo(
        path=None,
        file_id=header.file_id,
        chunks=chunks,
        lines=lines,
        plaintext_bytes=plaintext_bytes,
        ciphertext_bytes=written,
    )


def encrypt_file(
    source: Path,
    destination: Path,
    dataset: DataSetKey,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> EncryptedFileInfo:
    """Encrypt one Criteo text file (plain or gzip) into ``destination``, atomically (a
    temporary file, fsync, rename; removed on any failure)."""
    source = Path(source)
    atomic = AtomicOutput(Path(destination), mode=0o644)
    with atomic as output, _open_plaintext(source) as plain:
        try:
            info = encrypt_stream(
                plain,
                output,
                dataset,
                file_name=plaintext_name(source),
                chunk_size=chunk_size,
                source_name=str(source),
                on_progress=on_progress,
            )
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise DataFormatError(f"damaged gzip file: {exc}", path=str(source)) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {source}: {exc.strerror}") from exc
        atomic.commit()
    return dataclasses.replace(info, path=Path(destination))


def encrypt_files(
    sources: Sequence[Path],
    output_dir: Path,
    dataset: DataSetKey,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_progress: Callable[[int], None] | None = None,
) -> list[EncryptedFileInfo]:
    """Encrypt several files of one data set (one data key) into ``output_dir``, as
    ``<plaintext name>.enc`` each. On any failure, the files this call wrote are removed."""
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise UsageError(
            f"chunk size must be {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes, got {chunk_size}"
        )
    targets = [Path(output_dir) / (plaintext_name(s) + ENCRYPTED_SUFFIX) for s in sources]
    if len(set(targets)) != len(targets):
        raise UsageError("two inputs have the same file name; their outputs would collide")
    for source in sources:
        if Path(source).is_dir():
            raise PathError(source, "is a folder; give the files in it", what="input file")
        if not Path(source).is_file():
            raise PathError(source, "not found", what="input file")
    for target in targets:
        if target.exists():
            raise UsageError(f"refusing to overwrite existing file {target}")
    done: list[EncryptedFileInfo] = []
    try:
        for source, target in zip(sources, targets, strict=True):
            done.append(
                encrypt_file(
                    source, target, dataset, chunk_size=chunk_size, on_progress=on_progress
                )
            )
    except BaseException:
        for target in targets[: len(done)]:
            target.unlink(missing_ok=True)
        raise
    return done
