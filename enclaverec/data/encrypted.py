"""Encrypted data sets: chunked AES-256-GCM files of whole Criteo lines, readable at random.

A data owner encrypts a data set before it leaves their premises. One random *data key*
per data set (several files) is wrapped to the owner's P-256 public key and stored in every
file's header; the key broker will later release that one key to attested enclaves. Each
file is encrypted under its own key derived from the data key and the file id, in the
STREAM construction (Hoang, Reyhanitabar, Rogaway and Vizár, "Online Authenticated-
Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015): chunk ``i`` has the nonce
``i || last-flag``, so chunks cannot be reordered, dropped at the end or moved to another
file. Each chunk's associated data carries the SHA-256 of the file's header (binding every
header field) and the chunk's first line number and line count (so row ids are
authenticated). Chunks hold whole text lines, so any chunk decrypts to complete Criteo
lines: a reader can shuffle by reading chunks in any order.

File, version 1 (integers big-endian; ``docs/storage.md`` has each field's threat)::

    header:
      0    8   magic b"ERECDATA"
      8    2   format version = 1
      10   4   header length H (bytes 0 .. H-1 are the header)
      14   16  data set id (random, the same in every file of the data set)
      30   16  file id (random per file)
      46   4   chunk size (target plaintext bytes per chunk)
      50   32  owner key fingerprint (SHA-256 of the owner's DER SubjectPublicKeyInfo)
      82   2   wrapped key length W (113)
      84   W   data key wrapped to the owner (enclaverec.crypto.keywrap)
      ..   1   data set name length N (1..255), then N bytes UTF-8
      ..   2   file name length M (1..255), then M bytes UTF-8
    then, for chunk i = 0 .. n-1 (n >= 1):
      4    ciphertext length C (plaintext length + 16)
      4    line count L of this chunk
      C    AES-256-GCM(file key, nonce = i as 11 bytes || 0x01 if last else 0x00,
                       aad = SHA-256(header) || first line (8) || L (4))

    file key = HKDF-SHA256(data key, info = "enclaverec/data/v1/file-key" || data set id
               || file id)

Security: the header is not secret (names, ids and the owner's fingerprint are visible to
the storage provider); everything in it is authenticated by every chunk. Decryption never
writes plaintext to disk unless asked to, and then only through a temporary file that is
renamed into place after every chunk verified (and removed on any failure).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

import numpy as np

from enclaverec.crypto import keys, keywrap
from enclaverec.crypto.aead import AES256GCM, KEY_SIZE, TAG_SIZE, hkdf_sha256, random_key
from enclaverec.data.schema import Examples
from enclaverec.errors import (
    DataFormatError,
    IntegrityError,
    StorageError,
    UnknownFormatError,
    UsageError,
)
from enclaverec.files import fsync_directory

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from enclaverec.data.criteo import BadLineCounter, OnBadLine
    from enclaverec.data.hashing import CategoryHashing

MAGIC = b"ERECDATA"
VERSION = 1
ID_SIZE = 16
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 64
MAX_CHUNK_SIZE = 64 << 20
"""Largest chunk size and largest chunk plaintext: a chunk of one line longer than the
chunk size may exceed the chunk size, never this (a reader allocates at most this much per
chunk, whatever a damaged length field says)."""
MAX_NAME_BYTES = 255
MAX_HEADER_SIZE = 64 << 10
ENCRYPTED_SUFFIX = ".enc"

_FIXED = struct.Struct(">8sHI16s16sI32sH")
_RECORD = struct.Struct(">II")  # ciphertext length, line count
_AAD = struct.Struct(">32sQI")  # header SHA-256, first line, line count
_FILE_KEY_INFO = b"enclaverec/data/v1/file-key"
_WRAP_CONTEXT = b"enclaverec/data/v1/data-key"
_COUNTER_BYTES = 11  # STREAM: nonce = 88-bit chunk counter || 8-bit last-chunk flag
_OPAQUE_FAILURE = (
    "encrypted file failed authentication: wrong data key, or the file was modified, "
    "truncated, reordered or spliced"
)
_READ_BLOCK = 1 << 20


# --- keys ------------------------------------------------------------------------------


def _wrap_context(dataset_id: bytes) -> bytes:
    return _WRAP_CONTEXT + dataset_id


@dataclass(frozen=True)
class DataSetKey:
    """One data set's identity and data key, with the key wrapped to the owner.

    Security: ``data_key`` decrypts every file of the data set. It is kept out of ``repr``
    and must never be printed, logged or written anywhere but in wrapped form.
    """

    dataset_id: bytes
    dataset_name: str
    owner_fingerprint: str
    wrapped_key: bytes = field(repr=False)
    data_key: bytes = field(repr=False)

    @classmethod
    def generate(cls, owner: ec.EllipticCurvePublicKey, dataset_name: str) -> DataSetKey:
        """A new random data key for a new data set, wrapped to ``owner``."""
        _check_name(dataset_name, what="data set name")
        dataset_id = os.urandom(ID_SIZE)
        data_key = random_key()
        return cls(
            dataset_id=dataset_id,
            dataset_name=dataset_name,
            owner_fingerprint=keys.fingerprint(owner),
            wrapped_key=keywrap.wrap_key(data_key, owner, context=_wrap_context(dataset_id)),
            data_key=data_key,
        )


def unwrap_data_key(header: EncryptedFileHeader, owner: ec.EllipticCurvePrivateKey) -> bytes:
    """The data key of ``header``'s data set, unwrapped with the owner's private key.

    Raises ``IntegrityError`` when the file was encrypted to another owner key (the message
    names both public fingerprints, which are not secret) or the wrapped key was modified.
    """
    given = keys.fingerprint(owner.public_key())
    if given != header.owner_fingerprint:
        raise IntegrityError(
            f"{header.file_name}: the data key is wrapped to owner key "
            f"{header.owner_fingerprint}, not to the given key {given}"
        )
    return keywrap.unwrap_key(header.wrapped_key, owner, context=_wrap_context(header.dataset_id))


def _file_cipher(data_key: bytes, dataset_id: bytes, file_id: bytes) -> AES256GCM:
    if len(data_key) != KEY_SIZE:
        raise UsageError(f"a data key has {KEY_SIZE} bytes, got {len(data_key)}")
    return AES256GCM(hkdf_sha256(data_key, info=_FILE_KEY_INFO + dataset_id + file_id))


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(_COUNTER_BYTES, "big") + (b"\x01" if last else b"\x00")


# --- header ----------------------------------------------------------------------------


def _check_name(name: str, *, what: str) -> bytes:
    encoded = name.encode("utf-8")
    # Printable only: names are shown by `inspect` and error messages, and a header is
    # untrusted input until a chunk authenticates it (no terminal escape sequences).
    if not 1 <= len(encoded) <= MAX_NAME_BYTES or not name.isprintable() or "/" in name:
        raise UsageError(
            f"invalid {what} {name!r}: 1 to {MAX_NAME_BYTES} bytes of printable UTF-8, no '/'"
        )
    return encoded


@dataclass(frozen=True)
class EncryptedFileHeader:
    """The header of an encrypted data file.

    Security: a header read from a file is *unverified* until a chunk authenticates under
    it (every chunk's associated data carries ``sha256``); :class:`EncryptedDataReader`
    does that when it opens the file.
    """

    dataset_id: bytes
    dataset_name: str
    file_id: bytes
    file_name: str
    chunk_size: int
    owner_fingerprint: str
    wrapped_key: bytes = field(repr=False)
    version: int = VERSION

    def __post_init__(self) -> None:
        if len(self.dataset_id) != ID_SIZE or len(self.file_id) != ID_SIZE:
            raise UsageError(f"data set and file ids have {ID_SIZE} bytes")
        if not MIN_CHUNK_SIZE <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise UsageError(
                f"chunk size must be {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes, "
                f"got {self.chunk_size}"
            )
        if (
            not self.owner_fingerprint.startswith("sha256:")
            or len(self.owner_fingerprint) != len("sha256:") + 64
        ):
            raise UsageError("owner fingerprint must be 'sha256:' and 64 hex digits")
        _check_name(self.dataset_name, what="data set name")
        _check_name(self.file_name, what="file name")

    def to_bytes(self) -> bytes:
        name = self.dataset_name.encode("utf-8")
        file_name = self.file_name.encode("utf-8")
        length = _FIXED.size + len(self.wrapped_key) + 1 + len(name) + 2 + len(file_name)
        return b"".join(
            (
                _FIXED.pack(
                    MAGIC,
                    self.version,
                    length,
                    self.dataset_id,
                    self.file_id,
                    self.chunk_size,
                    bytes.fromhex(self.owner_fingerprint.removeprefix("sha256:")),
                    len(self.wrapped_key),
                ),
                self.wrapped_key,
                struct.pack(">B", len(name)),
                name,
                struct.pack(">H", len(file_name)),
                file_name,
            )
        )

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def parse_unverified(cls, data: bytes) -> EncryptedFileHeader:
        """Parse a header (exactly its bytes).

        Raises ``UnknownFormatError`` for foreign magic bytes or an unknown version, and
        ``IntegrityError`` for anything else that does not parse: after the version, every
        byte is authenticated, so a malformed header is a modified one.
        """
        _check_magic_and_version(data)
        try:
            (_, version, length, dataset_id, file_id, chunk_size, fingerprint, wrapped_length) = (
                _FIXED.unpack_from(data)
            )
            offset = _FIXED.size
            wrapped_key = data[offset : offset + wrapped_length]
            offset += wrapped_length
            (name_length,) = struct.unpack_from(">B", data, offset)
            name = data[offset + 1 : offset + 1 + name_length].decode("utf-8")
            offset += 1 + name_length
            (file_name_length,) = struct.unpack_from(">H", data, offset)
            file_name = data[offset + 2 : offset + 2 + file_name_length].decode("utf-8")
            header = cls(
                dataset_id=dataset_id,
                dataset_name=name,
                file_id=file_id,
                file_name=file_name,
                chunk_size=chunk_size,
                owner_fingerprint="sha256:" + fingerprint.hex(),
                wrapped_key=wrapped_key,
                version=version,
            )
        except (struct.error, UnicodeDecodeError, UsageError) as exc:
            raise IntegrityError(_OPAQUE_FAILURE) from exc
        # Canonical: re-encoding gives back exactly the bytes read (no slack, no trailing
        # bytes, lengths consistent), so the hash the chunks authenticate is of this header.
        if length != len(data) or header.to_bytes() != data:
            raise IntegrityError(_OPAQUE_FAILURE)
        return header


def _check_magic_and_version(prefix: bytes) -> None:
    if prefix[: len(MAGIC)] != MAGIC[: len(prefix)]:
        raise UnknownFormatError("not an enclaverec encrypted data file (wrong magic bytes)")
    if len(prefix) < len(MAGIC) + 2:  # ours, but cut short
        raise IntegrityError(_OPAQUE_FAILURE)
    (version,) = struct.unpack_from(">H", prefix, len(MAGIC))
    if version != VERSION:
        raise UnknownFormatError(
            f"encrypted data file format version {version} is not supported "
            f"(this build reads version {VERSION})"
        )


def _read_header(fd: int) -> tuple[EncryptedFileHeader, int]:
    prefix = os.pread(fd, len(MAGIC) + 6, 0)
    _check_magic_and_version(prefix)
    if len(prefix) < len(MAGIC) + 6:
        raise IntegrityError(_OPAQUE_FAILURE)
    (length,) = struct.unpack_from(">I", prefix, len(MAGIC) + 2)
    if not _FIXED.size <= length <= MAX_HEADER_SIZE:
        raise IntegrityError(_OPAQUE_FAILURE)
    data = os.pread(fd, length, 0)
    if len(data) != length:
        raise IntegrityError(_OPAQUE_FAILURE)
    return EncryptedFileHeader.parse_unverified(data), length


# --- chunk index -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Chunk:
    offset: int  # of the ciphertext
    length: int  # ciphertext length
    first_line: int
    lines: int


def _scan_chunks(fd: int, start: int, file_size: int) -> list[_Chunk]:
    """Walk the record prefixes from ``start`` to the end of the file.

    Nothing here is trusted yet: lengths and line counts are authenticated when each chunk
    is decrypted. The walk only refuses what cannot be a valid file (a record running past
    the end, a length no chunk can have), so that a damaged length never makes the reader
    allocate more than ``MAX_CHUNK_SIZE``.
    """
    chunks: list[_Chunk] = []
    offset = start
    first_line = 0
    while offset < file_size:
        prefix = os.pread(fd, _RECORD.size, offset)
        if len(prefix) != _RECORD.size:
            raise IntegrityError(_OPAQUE_FAILURE)
        length, lines = _RECORD.unpack(prefix)
        begin = offset + _RECORD.size
        if not TAG_SIZE <= length <= MAX_CHUNK_SIZE + TAG_SIZE or begin + length > file_size:
            raise IntegrityError(_OPAQUE_FAILURE)
        chunks.append(_Chunk(begin, length, first_line, lines))
        first_line += lines
        offset = begin + length
    if not chunks:
        # Even an empty input has one (empty, last) chunk, so a header alone is a file
        # that lost its chunks.
        raise IntegrityError(_OPAQUE_FAILURE)
    return chunks


def _count_lines(buffer: bytes | bytearray, length: int | None = None) -> int:
    """Lines in ``buffer[:length]``: its newlines, plus one for a last line without one.

    numpy counts at memory speed (about 4x ``bytes.count``, which loops byte by byte), and
    the data file format counts every chunk on both sides.
    """
    length = len(buffer) if length is None else length
    if not length:
        return 0
    newlines = int(np.count_nonzero(np.frombuffer(buffer, dtype=np.uint8, count=length) == 10))
    return newlines + (0 if buffer[length - 1] == 0x0A else 1)


# --- writing ---------------------------------------------------------------------------


class _AtomicOutput:
    """A temporary file beside ``path`` that becomes ``path`` only on :meth:`commit`.

    Leaving the ``with`` block without a commit (an exception, a failed check) removes the
    temporary file, so a reader never sees a partial file and nothing is left behind.
    """

    def __init__(self, path: Path, *, mode: int) -> None:
        self.path = Path(path)
        self._mode = mode
        self._temp: Path | None = None
        self._handle: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        directory = self.path.parent
        if not directory.is_dir():
            raise UsageError(f"directory does not exist: {directory}")
        if self.path.exists():
            raise UsageError(f"refusing to overwrite existing file {self.path}")
        try:
            # mkstemp creates the file with mode 0600 and O_EXCL.
            fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=directory)
        except OSError as exc:
            raise StorageError(f"cannot create a file in {directory}: {exc.strerror}") from exc
        self._temp = Path(name)
        os.fchmod(fd, self._mode)
        self._handle = os.fdopen(fd, "wb")
        return self._handle

    def commit(self) -> None:
        """Make the file durable and give it its final name."""
        if self._handle is None or self._temp is None:
            raise UsageError("commit() outside the with block, or twice")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        if self.path.exists():
            raise UsageError(f"refusing to overwrite existing file {self.path}")
        os.replace(self._temp, self.path)
        self._temp = None
        fsync_directory(self.path.parent)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._handle is not None and not self._handle.closed:
            self._handle.close()
        if self._temp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._temp.unlink()
            self._temp = None
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write {self.path}: {exc.strerror}") from exc


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
    except FileNotFoundError as exc:
        raise UsageError(f"input file not found: {source}") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {source}: {exc.strerror}") from exc
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
            self.buffer.extend(bytes(_READ_BLOCK))
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
        lines = _count_lines(buffer, length)
        if len(sealed) < length + TAG_SIZE:
            sealed = bytearray(length + TAG_SIZE)
        aad = _AAD.pack(header_hash, first_line, lines)
        with memoryview(buffer)[:length] as chunk, memoryview(sealed)[: length + TAG_SIZE] as out:
            cipher.encrypt_into(_nonce(index, last), chunk, aad, out)
            output.write(_RECORD.pack(length + TAG_SIZE, lines))
            output.write(out)
        written += _RECORD.size + length + TAG_SIZE
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
    cipher = _file_cipher(dataset.data_key, header.dataset_id, header.file_id)
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
    atomic = _AtomicOutput(Path(destination), mode=0o644)
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
        if not Path(source).is_file():
            raise UsageError(f"input file not found: {source}")
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


# --- reading ---------------------------------------------------------------------------


def read_unverified_header(path: Path) -> EncryptedFileHeader:
    """The header of an encrypted file, parsed but not yet authenticated (no key needed)."""
    with _open_encrypted(path) as fd:
        return _read_header(fd)[0]


def _open_fd(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise UsageError(f"encrypted file not found: {path}") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from exc


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
            header, header_length = _read_header(self._fd)
            self.header = header
            self._header_hash = header.sha256
            self._cipher = _file_cipher(data_key, header.dataset_id, header.file_id)
            self._chunks = _scan_chunks(self._fd, header_length, os.fstat(self._fd).st_size)
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
        aad = _AAD.pack(self._header_hash, chunk.first_line, chunk.lines)
        with (
            memoryview(scratch.ciphertext)[: chunk.length] as ciphertext,
            memoryview(scratch.plaintext)[:length] as plaintext,
        ):
            try:
                count = os.preadv(self._fd, [ciphertext], chunk.offset)
            except OSError as exc:
                raise StorageError(f"cannot read {self.path}: {exc.strerror}") from exc
            if count != chunk.length:  # the file shrank since it was opened
                raise IntegrityError(f"{self.path}: {_OPAQUE_FAILURE}")
            try:
                self._cipher.decrypt_into(_nonce(index, last), ciphertext, aad, plaintext)
            except IntegrityError as exc:
                raise IntegrityError(f"{self.path}: {_OPAQUE_FAILURE}") from exc
        # The count is authenticated, but it must also describe this plaintext: a writer
        # with the data key could have lied, and row ids rely on it.
        if _count_lines(scratch.plaintext, length) != chunk.lines:
            raise IntegrityError(f"{self.path}: {_OPAQUE_FAILURE}")
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

    def iter_examples(
        self,
        hashing: CategoryHashing,
        batch_size: int,
        shuffle_seed: int | None = None,
        on_bad_line: str | OnBadLine = "fail",
        *,
        start_row_id: int = 0,
        counter: BadLineCounter | None = None,
        shuffle_buffer_chunks: int = 4,
    ) -> Iterator[Examples]:
        """Batches of parsed rows, as :func:`enclaverec.data.criteo.iter_criteo_examples`
        gives for the plaintext file: the same arrays, the same row ids (line index from
        ``start_row_id``, malformed lines included) and the same batch boundaries.

        With ``shuffle_seed``, chunks are read in a seeded random order and the rows of
        ``shuffle_buffer_chunks`` chunks at a time (plus the rows left over from the
        previous group) are shuffled together; the same seed gives the same batches.
        """
        from enclaverec.data.criteo import OnBadLine, parse_criteo_block

        if batch_size < 1:
            raise UsageError(f"batch size must be positive, got {batch_size}")
        if shuffle_buffer_chunks < 1:
            raise UsageError(f"shuffle buffer must be positive, got {shuffle_buffer_chunks}")
        mode = OnBadLine.parse(on_bad_line)

        def parse(index: int) -> Examples:
            first_line, _ = self.chunk_lines(index)
            return parse_criteo_block(
                self.read_chunk(index),
                hashing=hashing,
                first_row_id=start_row_id + first_line,
                source=str(self.path),
                first_line_number=first_line + 1,
                on_bad_line=mode,
                counter=counter,
            )

        if shuffle_seed is None:
            groups: Iterable[Sequence[int]] = ([i] for i in range(self.num_chunks))
            rng = None
        else:
            rng = np.random.default_rng(shuffle_seed)
            order = [int(i) for i in rng.permutation(self.num_chunks)]
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
        atomic = _AtomicOutput(Path(destination), mode=0o600)
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
        header, header_length = _read_header(fd)
        size = os.fstat(fd).st_size
        chunks = _scan_chunks(fd, header_length, size)
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
