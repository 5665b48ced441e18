"""Sealing: encrypting enclave state to the enclave's own sealing key, in a versioned format.

Checkpoints, keys that must survive a restart and the key broker's secrets are sealed with
AES-256-GCM under a key derived (HKDF-SHA256) from the evidence backend's sealing key and
the blob's *purpose*, so a sealed checkpoint can never be unsealed as a sealed TLS key.

Sealed blob, version 1 (all integers big-endian; ``docs/storage.md`` gives the threat
each field answers)::

    offset  size  field
    0       8     magic  b"ERSEALED"
    8       1     format version = 1
    9       16    key id = HKDF-SHA256(sealing key, info="enclaverec/seal/v1/key-id")[:16]
    25      1     purpose length P (1..64)
    26      P     purpose, ASCII [a-z0-9._/-]
    26+P    12    random nonce
    38+P    n+16  AES-256-GCM(HKDF-SHA256(sealing key, info=".../key:" || purpose),
                  nonce, plaintext, aad = bytes 0 .. 38+P) = ciphertext || tag

The key id is a one-way function of the sealing key under its own HKDF label: it tells
keys apart after a rotation (a new enclave version or SVN has a new sealing key) without
revealing anything about the encryption key. Every refusal (wrong key, other purpose,
modified or truncated blob) is one opaque ``IntegrityError``; only a blob that is not ours
at all or of an unknown version is told apart (``UnknownFormatError``), so a file from a
newer release says so instead of "damaged".

Security: rollback (an old sealed file put back after a newer one was written) is out of
scope (DESIGN.md §2); the host can always delete sealed files.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from pathlib import Path

from enclaverec.crypto.aead import AES256GCM, NONCE_SIZE, TAG_SIZE, hkdf_sha256, random_nonce
from enclaverec.errors import IntegrityError, StorageError, UnknownFormatError, UsageError
from enclaverec.files import write_atomically

MAGIC = b"ERSEALED"
VERSION = 1
KEY_ID_SIZE = 16
MIN_SEALING_KEY_SIZE = 16
"""Gramine's SGX sealing keys (``/dev/attestation/keys/_sgx_mrenclave``) are 128 bits."""

_KEY_ID_INFO = b"enclaverec/seal/v1/key-id"
_KEY_INFO = b"enclaverec/seal/v1/key:"
_PURPOSE_RE = re.compile(r"[a-z0-9][a-z0-9._/-]{0,63}")
_PREFIX = struct.Struct(">8sB16sB")  # magic, version, key id, purpose length
_OPAQUE_FAILURE = (
    "cannot unseal: wrong sealing key or purpose, or the sealed data was modified or truncated"
)


def _check_sealing_key(sealing_key: bytes) -> None:
    if len(sealing_key) < MIN_SEALING_KEY_SIZE:
        raise UsageError(
            f"a sealing key has at least {MIN_SEALING_KEY_SIZE} bytes, got {len(sealing_key)}"
        )


def _check_purpose(purpose: str) -> bytes:
    if not _PURPOSE_RE.fullmatch(purpose):
        raise UsageError(
            f"invalid sealing purpose {purpose!r}: 1 to 64 characters of [a-z0-9._/-], "
            "starting with a letter or digit"
        )
    return purpose.encode("ascii")


def key_id(sealing_key: bytes) -> bytes:
    """The 16-byte identifier written into blobs sealed with ``sealing_key``.

    Safe to log (as hex): it is an HKDF output under its own label, independent of every
    encryption key derived from the same sealing key.
    """
    _check_sealing_key(sealing_key)
    return hkdf_sha256(sealing_key, info=_KEY_ID_INFO, length=KEY_ID_SIZE)


def _cipher(sealing_key: bytes, purpose: bytes) -> AES256GCM:
    return AES256GCM(hkdf_sha256(sealing_key, info=_KEY_INFO + purpose))


def seal(sealing_key: bytes, purpose: str, plaintext: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` for this enclave and this ``purpose``."""
    purpose_bytes = _check_purpose(purpose)
    header = (
        _PREFIX.pack(MAGIC, VERSION, key_id(sealing_key), len(purpose_bytes))
        + purpose_bytes
        + random_nonce()
    )
    nonce = header[-NONCE_SIZE:]
    return header + _cipher(sealing_key, purpose_bytes).encrypt(nonce, plaintext, header)


def _parse(blob: bytes) -> tuple[bytes, bytes, bytes, bytes, memoryview]:
    """Split a blob into (key id, purpose, nonce, header, ciphertext); nothing is trusted.
    The ciphertext is a view, not a copy (sealed checkpoints can be large)."""
    if blob[: len(MAGIC)] != MAGIC[: len(blob)]:
        raise UnknownFormatError("not an enclaverec sealed blob (wrong magic bytes)")
    if len(blob) < len(MAGIC) + 1:  # ours, but cut short
        raise IntegrityError(_OPAQUE_FAILURE)
    version = blob[len(MAGIC)]
    if version != VERSION:
        raise UnknownFormatError(
            f"sealed blob format version {version} is not supported "
            f"(this build reads version {VERSION})"
        )
    if len(blob) < _PREFIX.size:
        raise IntegrityError(_OPAQUE_FAILURE)
    _, _, blob_key_id, purpose_length = _PREFIX.unpack_from(blob)
    header_end = _PREFIX.size + purpose_length + NONCE_SIZE
    if len(blob) < header_end + TAG_SIZE:
        raise IntegrityError(_OPAQUE_FAILURE)
    purpose = blob[_PREFIX.size : _PREFIX.size + purpose_length]
    return (
        blob_key_id,
        purpose,
        blob[header_end - NONCE_SIZE : header_end],
        blob[:header_end],
        memoryview(blob)[header_end:],
    )


def sealed_key_id(blob: bytes) -> bytes:
    """The key id a blob claims to be sealed under (unauthenticated: a hint for choosing
    among keys after a rotation, never a reason to trust the blob)."""
    return _parse(blob)[0]


def unseal(sealing_key: bytes, purpose: str, blob: bytes) -> bytes:
    """Return the plaintext of a blob from :func:`seal` with the same key and purpose.

    Raises ``IntegrityError`` (one message) for a wrong key, another purpose or any
    modified or missing byte; ``UnknownFormatError`` for a blob that is not a sealed blob
    or has an unknown format version.
    """
    purpose_bytes = _check_purpose(purpose)
    blob_key_id, blob_purpose, nonce, header, ciphertext = _parse(blob)
    # Both are also bound by the key derivation and the associated data; checking them
    # first only saves the decryption. The message stays the same either way.
    if blob_key_id != key_id(sealing_key) or blob_purpose != purpose_bytes:
        raise IntegrityError(_OPAQUE_FAILURE)
    try:
        return _cipher(sealing_key, purpose_bytes).decrypt(nonce, ciphertext, header)
    except IntegrityError as exc:
        raise IntegrityError(_OPAQUE_FAILURE) from exc


def unseal_with_any(sealing_keys: Sequence[bytes], purpose: str, blob: bytes) -> tuple[bytes, int]:
    """Unseal with whichever of ``sealing_keys`` the blob's key id names (key rotation).

    Returns (plaintext, index of the key used). A caller holding its current key first and
    older keys after it re-seals under the current key when the index is not 0.
    """
    if not sealing_keys:
        raise UsageError("no sealing keys given")
    wanted = sealed_key_id(blob)
    for index, candidate in enumerate(sealing_keys):
        if key_id(candidate) == wanted:
            return unseal(candidate, purpose, blob), index
    raise IntegrityError(_OPAQUE_FAILURE)


def seal_file(path: Path, sealing_key: bytes, purpose: str, plaintext: bytes) -> None:
    """Seal ``plaintext`` into ``path`` atomically (mode 0600), replacing any old file."""
    write_atomically(Path(path), seal(sealing_key, purpose, plaintext), mode=0o600)


def unseal_file(path: Path, sealing_key: bytes, purpose: str) -> bytes:
    """Read and unseal ``path`` (see :func:`unseal` for the errors)."""
    try:
        blob = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise UsageError(f"sealed file not found: {path}") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
    return unseal(sealing_key, purpose, blob)
