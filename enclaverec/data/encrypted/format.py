"""The encrypted data file format: keys, the header, the chunk layout and their checks.

Encrypted data sets are chunked AES-256-GCM files of whole Criteo lines, readable at random.

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
import hashlib
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from enclaverec.crypto import keys, keywrap
from enclaverec.crypto.aead import AES256GCM, KEY_SIZE, TAG_SIZE, hkdf_sha256, random_key
from enclaverec.errors import (
    IntegrityError,
    StorageError,
    UnknownFormatError,
    UsageError,
)
from enclaverec.files import fsync_directory

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec


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
RECORD = struct.Struct(">II")  # ciphertext length, line count
AAD = struct.Struct(">32sQI")  # header SHA-256, first line, line count
_FILE_KEY_INFO = b"enclaverec/data/v1/file-key"
_WRAP_CONTEXT = b"enclaverec/data/v1/data-key"
_COUNTER_BYTES = 11  # STREAM: nonce = 88-bit chunk counter || 8-bit last-chunk flag
OPAQUE_FAILURE = (
    "encrypted file failed authentication: wrong data key, or the file was modified, "
    "truncated, reordered or spliced"
)
READ_BLOCK = 1 << 20


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


def file_cipher(data_key: bytes, dataset_id: bytes, file_id: bytes) -> AES256GCM:
    if len(data_key) != KEY_SIZE:
        raise UsageError(f"a data key has {KEY_SIZE} bytes, got {len(data_key)}")
    return AES256GCM(hkdf_sha256(data_key, info=_FILE_KEY_INFO + dataset_id + file_id))


def chunk_nonce(index: int, last: bool) -> bytes:
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
            raise IntegrityError(OPAQUE_FAILURE) from exc
        # Canonical: re-encoding gives back exactly the bytes read (no slack, no trailing
        # bytes, lengths consistent), so the hash the chunks authenticate is of this header.
        if length != len(data) or header.to_bytes() != data:
            raise IntegrityError(OPAQUE_FAILURE)
        return header


def _check_magic_and_version(prefix: bytes) -> None:
    if prefix[: len(MAGIC)] != MAGIC[: len(prefix)]:
        raise UnknownFormatError("not an enclaverec encrypted data file (wrong magic bytes)")
    if len(prefix) < len(MAGIC) + 2:  # ours, but cut short
        raise IntegrityError(OPAQUE_FAILURE)
    (version,) = struct.unpack_from(">H", prefix, len(MAGIC))
    if version != VERSION:
        raise UnknownFormatError(
            f"encrypted data file format version {version} is not supported "
            f"(this build reads version {VERSION})"
        )


def read_header(fd: int) -> tuple[EncryptedFileHeader, int]:
    prefix = os.pread(fd, len(MAGIC) + 6, 0)
    _check_magic_and_version(prefix)
    if len(prefix) < len(MAGIC) + 6:
        raise IntegrityError(OPAQUE_FAILURE)
    (length,) = struct.unpack_from(">I", prefix, len(MAGIC) + 2)
    if not _FIXED.size <= length <= MAX_HEADER_SIZE:
        raise IntegrityError(OPAQUE_FAILURE)
    data = os.pread(fd, length, 0)
    if len(data) != length:
        raise IntegrityError(OPAQUE_FAILURE)
    return EncryptedFileHeader.parse_unverified(data), length


# --- chunk index -----------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkRecord:
    offset: int  # of the ciphertext
    length: int  # ciphertext length
    first_line: int
    lines: int


def scan_chunks(fd: int, start: int, file_size: int) -> list[ChunkRecord]:
    """Walk the record prefixes from ``start`` to the end of the file.

    Nothing here is trusted yet: lengths and line counts are authenticated when each chunk
    is decrypted. The walk only refuses what cannot be a valid file (a record running past
    the end, a length no chunk can have), so that a damaged length never makes the reader
    allocate more than ``MAX_CHUNK_SIZE``.
    """
    chunks: list[ChunkRecord] = []
    offset = start
    first_line = 0
    while offset < file_size:
        prefix = os.pread(fd, RECORD.size, offset)
        if len(prefix) != RECORD.size:
            raise IntegrityError(OPAQUE_FAILURE)
        length, lines = RECORD.unpack(prefix)
        begin = offset + RECORD.size
        if not TAG_SIZE <= length <= MAX_CHUNK_SIZE + TAG_SIZE or begin + length > file_size:
            raise IntegrityError(OPAQUE_FAILURE)
        chunks.append(ChunkRecord(begin, length, first_line, lines))
        first_line += lines
        offset = begin + length
    if not chunks:
        # Even an empty input has one (empty, last) chunk, so a header alone is a file
        # that lost its chunks.
        raise IntegrityError(OPAQUE_FAILURE)
    return chunks


def count_lines(buffer: bytes | bytearray, length: int | None = None) -> int:
    """Lines in ``buffer[:length]``: its newlines, plus one for a last line without one.

    numpy counts at memory speed (about 4x ``bytes.count``, which loops byte by byte), and
    the data file format counts every chunk on both sides.
    """
    length = len(buffer) if length is None else length
    if not length:
        return 0
    newlines = int(np.count_nonzero(np.frombuffer(buffer, dtype=np.uint8, count=length) == 10))
    return newlines + (0 if buffer[length - 1] == 0x0A else 1)


# --- atomic output ----------------------------------------------------------------------


class AtomicOutput:
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
