"""AES-256-GCM and HKDF-SHA256 recipes: the only symmetric primitives the project uses.

Everything that encrypts at rest (sealed files, encrypted data sets, wrapped keys) goes
through :class:`AES256GCM` and :func:`hkdf_sha256`, so that an authentication failure is
turned into one opaque :class:`~enclaverec.errors.IntegrityError` in one place.

Security: AES-GCM is catastrophically weak if a (key, nonce) pair is ever reused. Callers
either derive a fresh key per message (key wrapping), derive a key per file and count
nonces (STREAM, encrypted data sets), or draw random 96-bit nonces for a small number of
messages per key (sealing; NIST SP 800-38D §8.3 bounds that to 2**32 messages per key).
"""

from __future__ import annotations

import os
from typing import TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from enclaverec.errors import IntegrityError, UsageError

KEY_SIZE = 32
"""AES-256 key length in bytes."""

NONCE_SIZE = 12
"""GCM nonce length in bytes (96 bits, the length GCM is designed for: SP 800-38D §5.2.1.1)."""

TAG_SIZE = 16
"""GCM authentication tag length in bytes (the full 128 bits; never truncated)."""

MAX_MESSAGE_SIZE = 2**31 - 1
"""Largest plaintext or associated data one call accepts (a limit of ``cryptography``)."""

Buffer: TypeAlias = bytes | bytearray | memoryview
"""Anything with the buffer protocol that ``cryptography`` reads from or writes into."""

_OPAQUE_FAILURE = "authentication failed: wrong key, or the data was modified or truncated"


def random_key() -> bytes:
    """A fresh random AES-256 key from the operating system's CSPRNG."""
    return os.urandom(KEY_SIZE)


def random_nonce() -> bytes:
    """A fresh random 96-bit nonce (see the module's note on nonce reuse)."""
    return os.urandom(NONCE_SIZE)


def hkdf_sha256(
    key_material: bytes, *, info: bytes, salt: bytes | None = None, length: int = KEY_SIZE
) -> bytes:
    """Derive ``length`` bytes from ``key_material`` with HKDF-SHA256 (RFC 5869).

    ``info`` separates uses: two calls with different ``info`` give independent keys, so
    every caller passes a label naming the format, its version and the key's role.
    """
    if not key_material:
        raise UsageError("HKDF needs non-empty key material")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key_material)


class AES256GCM:
    """AES-256-GCM with a fixed key; failures are one opaque ``IntegrityError``.

    Security: the caller owns nonce uniqueness (see the module docstring). The key is not
    kept as an attribute and does not appear in ``repr``.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise UsageError(f"an AES-256 key has {KEY_SIZE} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "AES256GCM(<key hidden>)"

    def encrypt(self, nonce: bytes, plaintext: Buffer, associated_data: bytes) -> bytes:
        """Return ciphertext || 16-byte tag."""
        if len(nonce) != NONCE_SIZE:
            raise UsageError(f"a GCM nonce has {NONCE_SIZE} bytes, got {len(nonce)}")
        if len(memoryview(plaintext)) > MAX_MESSAGE_SIZE or len(associated_data) > MAX_MESSAGE_SIZE:
            raise UsageError(f"AES-GCM messages are limited to {MAX_MESSAGE_SIZE} bytes")
        return self._aead.encrypt(nonce, plaintext, associated_data)

    def decrypt(self, nonce: bytes, ciphertext: Buffer, associated_data: bytes) -> bytes:
        """Return the plaintext, or raise ``IntegrityError`` if anything does not match."""
        if len(nonce) != NONCE_SIZE or len(memoryview(ciphertext)) < TAG_SIZE:
            raise IntegrityError(_OPAQUE_FAILURE)
        try:
            return self._aead.decrypt(nonce, ciphertext, associated_data)
        except (InvalidTag, OverflowError) as exc:
            raise IntegrityError(_OPAQUE_FAILURE) from exc

    def encrypt_into(
        self, nonce: bytes, plaintext: Buffer, associated_data: bytes, out: Buffer
    ) -> None:
        """:meth:`encrypt` into ``out``, a writable buffer of exactly ``len(plaintext) +
        16`` bytes (no allocation per message: the data file format's hot path)."""
        if len(nonce) != NONCE_SIZE:
            raise UsageError(f"a GCM nonce has {NONCE_SIZE} bytes, got {len(nonce)}")
        size = len(memoryview(plaintext))
        if size > MAX_MESSAGE_SIZE or len(associated_data) > MAX_MESSAGE_SIZE:
            raise UsageError(f"AES-GCM messages are limited to {MAX_MESSAGE_SIZE} bytes")
        if len(memoryview(out)) != size + TAG_SIZE:
            raise UsageError(f"the output buffer must have {size + TAG_SIZE} bytes")
        if hasattr(self._aead, "encrypt_into"):
            self._aead.encrypt_into(nonce, plaintext, associated_data, out)
        else:  # cryptography < 45 has no *_into: same result, one more copy
            memoryview(out)[:] = self._aead.encrypt(nonce, plaintext, associated_data)

    def decrypt_into(
        self, nonce: bytes, ciphertext: Buffer, associated_data: bytes, out: Buffer
    ) -> None:
        """:meth:`decrypt` into ``out``, a writable buffer of exactly ``len(ciphertext) -
        16`` bytes. On failure ``out`` may hold unauthenticated bytes: the caller must
        discard it (``IntegrityError`` is raised)."""
        size = len(memoryview(ciphertext))
        if len(nonce) != NONCE_SIZE or size < TAG_SIZE:
            raise IntegrityError(_OPAQUE_FAILURE)
        if len(memoryview(out)) != size - TAG_SIZE:
            raise UsageError(f"the output buffer must have {size - TAG_SIZE} bytes")
        try:
            if hasattr(self._aead, "decrypt_into"):
                self._aead.decrypt_into(nonce, ciphertext, associated_data, out)
            else:  # cryptography < 45, as in encrypt_into
                memoryview(out)[:] = self._aead.decrypt(nonce, ciphertext, associated_data)
        except (InvalidTag, OverflowError) as exc:
            raise IntegrityError(_OPAQUE_FAILURE) from exc
