"""Wrapping a symmetric key to a P-256 public key (ECIES: ephemeral ECDH, HKDF, AES-GCM).

A data owner's data key travels and rests only in this wrapped form; only the holder of the
owner's private key (or, later, the key broker it hands the key to) can unwrap it.

Construction (in the spirit of SEC 1 v2 §5.1 ECIES, with an AEAD as the data encapsulation):

1. a fresh ephemeral P-256 key pair ``(e, E)``;
2. ``Z = ECDH(e, recipient)``;
3. ``KEK = HKDF-SHA256(Z, salt=none, info=LABEL || E || R)`` with ``E`` and the recipient's
   key ``R`` as uncompressed points, so the KEK is bound to both public keys;
4. ``wrapped = E || AES-256-GCM(KEK, nonce=0^96, key, aad=context)``.

The all-zero nonce is safe because each KEK encrypts exactly one message: it comes from a
fresh ephemeral key. ``context`` names what the key is for (e.g. the data set id), so a
wrapped key cannot be moved to another use without failing authentication.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enclaverec.crypto.aead import AES256GCM, KEY_SIZE, NONCE_SIZE, TAG_SIZE, hkdf_sha256
from enclaverec.errors import IntegrityError, UsageError

_LABEL = b"enclaverec/keywrap/v1/p256-hkdf-sha256-aes256gcm"
_POINT_SIZE = 65  # uncompressed SEC 1 point: 0x04 || X (32) || Y (32)
_ZERO_NONCE = bytes(NONCE_SIZE)

WRAPPED_KEY_SIZE = _POINT_SIZE + KEY_SIZE + TAG_SIZE
"""Length of a wrapped 32-byte key: ephemeral point, encrypted key, tag (113 bytes)."""

_OPAQUE_FAILURE = "could not unwrap the key: wrong private key, or the wrapped key was modified"


def _point(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _kek(shared_secret: bytes, ephemeral_point: bytes, recipient_point: bytes) -> AES256GCM:
    return AES256GCM(hkdf_sha256(shared_secret, info=_LABEL + ephemeral_point + recipient_point))


def _require_p256(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        raise UsageError(f"key wrapping needs a P-256 key, got {key.curve.name}")


def wrap_key(key: bytes, recipient: ec.EllipticCurvePublicKey, *, context: bytes) -> bytes:
    """Encrypt a 32-byte ``key`` so that only ``recipient``'s private key can recover it."""
    if len(key) != KEY_SIZE:
        raise UsageError(f"only {KEY_SIZE}-byte keys are wrapped, got {len(key)}")
    _require_p256(recipient)
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    ephemeral_point = _point(ephemeral.public_key())
    shared = ephemeral.exchange(ec.ECDH(), recipient)
    kek = _kek(shared, ephemeral_point, _point(recipient))
    return ephemeral_point + kek.encrypt(_ZERO_NONCE, key, context)


def unwrap_key(wrapped: bytes, recipient: ec.EllipticCurvePrivateKey, *, context: bytes) -> bytes:
    """Recover the key from :func:`wrap_key`'s output.

    Raises ``IntegrityError`` (one message) for a wrong private key, a wrong ``context``
    or any modified byte, including an ephemeral point that is not on the curve.
    """
    _require_p256(recipient)
    if len(wrapped) != WRAPPED_KEY_SIZE:
        raise IntegrityError(_OPAQUE_FAILURE)
    ephemeral_point = wrapped[:_POINT_SIZE]
    try:
        # Also checks that the point lies on P-256 (no invalid-curve attack).
        ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ephemeral_point)
        shared = recipient.exchange(ec.ECDH(), ephemeral)
    except ValueError as exc:
        raise IntegrityError(_OPAQUE_FAILURE) from exc
    kek = _kek(shared, ephemeral_point, _point(recipient.public_key()))
    try:
        return kek.decrypt(_ZERO_NONCE, wrapped[_POINT_SIZE:], context)
    except IntegrityError as exc:
        raise IntegrityError(_OPAQUE_FAILURE) from exc
