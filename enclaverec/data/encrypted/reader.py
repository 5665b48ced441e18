"""Reading encrypted data files: the header without a key, then chunks at random, each
authenticated before its plaintext is used; decryption to a file only through an atomic
rename."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from enclaverec.crypto.aead import TAG_SIZE
from enclaverec.data.encrypted.format import (
    AAD,
    OPAQUE_FAILURE,
    AtomicOutput,
    EncryptedFileHeader,
    chunk_nonce,
    count_lines,
    file_cipher,
    read_header,
    scan_chunks,
)
from enclaverec.errors import (
    IntegrityError,
    PathError,
    StorageError,
    UsageError,
)

if TYPE_CHECKING:
    pass


def read_unverified_header(path: Path) -> EncryptedFileHeader:
    """The header of an encrypted file, parsed but not yet authenticated (no key needed)."""
    with _open_encrypted(path) as fd:
        return read_header(fd)[0]


def _open_fd(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise PathError.from_os_error(exc, path=path, what="encrypted file") from exc


@contextlib.contextmanager
def _open_encrypted(path: Path) -> Iterator[int]:
    fd = _open_fd(path)
    try:
        yield fd
    finally:
        os.close(fd)


@dataclass(frozen=True)
class VerificationSummary:
    """Facts about a file all of whose chunks authenticated."""

    path: Path
    dataset_name: str
    file_name: str
    chunks: int
    lines: int
    plaintext_bytes: int


class _Scratch:
    """Buffers reused from chunk to chunk, so reading a file allocates nothing per chunk."""

    def __init__(self) -> None:
        self.ciphertext = bytearray()
        self.plaintext = bytearray()

    def reserve(self, ciphertext_length: int) -> None:
        if len(self.ciphertext) < ciphertext_length:
            self.ciphertext = bytearray(ciphertext_length)
            self.plaintext = bytearray(ciphertext_length - TAG_SIZE)


class EncryptedDataReader:
    """Random access to the chunks of one encrypted file, given its data key.

    Opening the file authenticates its header and its chunk count (by decrypting the last
    chunk, whose STREAM flag proves nothing was cut off after it); each :meth:`read_chunk`
    authenticates that chunk and its place in the file. Nothing is written to disk.

    Security: plaintext is returned to the caller only after its chunk authenticated.
    """

    def __init__(self, path: Path, data_key: bytes) -> None:
        self.path = Path(path)
        self._fd: int | None = _open_fd(self.path)
        try:
            header, header_length = read_header(self._fd)
            self.header = header
            self._header_hash = header.sha256
            self._cipher = file_cipher(data_key, header.dataset_id, header.file_id)
            self._chunks = scan_chunks(self._fd, header_length, os.fstat(self._fd).st_size)
            self.read_chunk(len(self._chunks) - 1)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"EncryptedDataReader({str(self.path)!r}, <data key hidden>)"

    def __enter__(self) -> EncryptedDataReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def num_chunks(self) -> int:
        return len(self._chunks)

    @property
    def num_lines(self) -> int:
        """Lines in the file (authenticated: the last chunk's first line and count are)."""
        last = self._chunks[-1]
        return last.first_line + last.lines

    def chunk_lines(self, index: int) -> tuple[int, int]:
        """(first line, line count) of chunk ``index``; 0-based lines. Authenticated once
        the chunk has been read."""
        chunk = self._chunks[index]
        return chunk.first_line, chunk.lines

    def read_chunk(self, index: int) -> bytes:
        """The plaintext of chunk ``index``: whole lines, the last one possibly without a
        final newline in the file's last chunk. Raises ``IntegrityError`` if it fails."""
        scratch = _Scratch()
        length = self._read_into(index, scratch)
        return bytes(memoryview(scratch.plaintext)[:length])

    def _read_into(self, index: int, scratch: _Scratch) -> int:
        """Authenticate chunk ``index`` into ``scratch.plaintext[:n]`` and return ``n``.
        On failure the scratch buffer holds unauthenticated bytes and must not be used."""
        if self._fd is None:
            raise UsageError("the encrypted file is closed")
        if not 0 <= index < len(self._chunks):
            raise UsageError(f"chunk index {index} out of range 0..{len(self._chunks) - 1}")
        chunk = self._chunks[index]
        length = chunk.length - TAG_SIZE
        scratch.reserve(chunk.length)
        last = index == len(self._chunks) - 1
        aad = AAD.pack(self._header_hash, chunk.first_line, chunk.lines)
        with (
            memoryview(scratch.ciphertext)[: chunk.length] as ciphertext,
            memoryview(scratch.plaintext)[:length] as plaintext,
        ):
            try:
                count = os.preadv(self._fd, [ciphertext], chunk.offset)
            except OSError as exc:
                raise StorageError(f"cannot read {self.path}: {exc.strerror}") from exc
            if count != chunk.length:  # the file shrank since it was opened
                raise IntegrityError(f"{self.path}: {OPAQUE_FAILURE}")
            try:
                self._cipher.decrypt_into(chunk_nonce(index, last), ciphertext, aad, plaintext)
            except IntegrityError as exc:
                raise IntegrityError(f"{self.path}: {OPAQUE_FAILURE}") from exc
        # The count is authenticated, but it must also describe this plaintext: a writer
        # with the data key could have lied, and row ids rely on it.
        if count_lines(scratch.plaintext, length) != chunk.lines:
            raise IntegrityError(f"{self.path}: {OPAQUE_FAILURE}")
        return length

    def _stream(self, output: BinaryIO | None) -> int:
        """Authenticate every chunk in file order, writing each to ``output`` if given,
        through one reused buffer; returns the plaintext bytes."""
        scratch = _Scratch()
        total = 0
        for index in range(self.num_chunks):
            length = self._read_into(index, scratch)
            if output is not None:
                with memoryview(scratch.plaintext)[:length] as view:
                    output.write(view)
            total += length
        return total

    def iter_chunks(self, order: Iterable[int] | None = None) -> Iterator[tuple[int, bytes]]:
        """(index, plaintext) for every chunk, in file order or in ``order``."""
        for index in range(self.num_chunks) if order is None else order:
            yield index, self.read_chunk(index)

    def verify_all(self) -> VerificationSummary:
        """Decrypt every chunk, keep nothing, and return what was verified."""
        return self._summary(self._stream(None))

    def _summary(self, plaintext_bytes: int) -> VerificationSummary:
        return VerificationSummary(
            path=self.path,
            dataset_name=self.header.dataset_name,
            file_name=self.header.file_name,
            chunks=self.num_chunks,
            lines=self.num_lines,
            plaintext_bytes=plaintext_bytes,
        )

    def write_plaintext(self, output: BinaryIO) -> VerificationSummary:
        """Verify every chunk, then write the plaintext to ``output`` (e.g. stdout).

        Two passes, so that nothing is written for a file that fails anywhere; the second
        pass authenticates each chunk again (the file could change in between: then it
        stops with ``IntegrityError``, and the reader of ``output`` must discard it).
        """
        summary = self.verify_all()
        self._stream(output)
        output.flush()
        return summary


def decrypt_to_file(path: Path, data_key: bytes, destination: Path) -> VerificationSummary:
    """Decrypt ``path`` into ``destination`` (mode 0600), which appears only if every
    chunk verified; on any failure no plaintext file, temporary or final, remains."""
    with EncryptedDataReader(path, data_key) as reader:
        atomic = AtomicOutput(Path(destination), mode=0o600)
        with atomic as output:
            plaintext_bytes = reader._stream(output)
            atomic.commit()
        return reader._summary(plaintext_bytes)


def describe_encrypted_file(path: Path) -> dict[str, Any]:
    """Header fields and chunk layout of an encrypted file, without any key.

    Nothing here is authenticated (``"authenticated": False``): it describes what the file
    claims. It never contains the data key or the wrapped key.
    """
    with _open_encrypted(Path(path)) as fd:
        header, header_length = read_header(fd)
        size = os.fstat(fd).st_size
        chunks = scan_chunks(fd, header_length, size)
    return {
        "format": "enclaverec encrypted data file",
        "version": header.version,
        "authenticated": False,
        "dataset_name": header.dataset_name,
        "dataset_id": header.dataset_id.hex(),
        "file_name": header.file_name,
        "file_id": header.file_id.hex(),
        "owner_fingerprint": header.owner_fingerprint,
        "cipher": "AES-256-GCM, STREAM chunks, key wrapped with ECDH P-256 + HKDF-SHA256",
        "chunk_size": header.chunk_size,
        "chunks": len(chunks),
        "lines": chunks[-1].first_line + chunks[-1].lines,
        "plaintext_bytes": sum(c.length - TAG_SIZE for c in chunks),
        "file_bytes": size,
    }
