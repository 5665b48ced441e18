"""ECDSA P-256 in the raw forms SGX uses: 64-byte r‖s signatures and 64-byte x‖y points.

Intel's DCAP formats (quote signatures, the QE report signature, TCB-info and QE-identity
signatures) carry ECDSA signatures as the two 32-byte big-endian integers r and s
concatenated, and public keys as the two 32-byte coordinates x and y, where X.509 and
``cryptography`` use DER. These helpers convert with ``cryptography``'s own utilities.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from enclaverec.errors import MalformedInputError

ECPrivateKey = ec.EllipticCurvePrivateKey
ECPublicKey = ec.EllipticCurvePublicKey

P256_COORDINATE_SIZE = 32
"""Bytes per coordinate or signature half on P-256 (SEC 2 §2.4.2)."""


def generate_p256_key() -> ECPrivateKey:
    """A fresh P-256 private key from the operating system's CSPRNG."""
    return ec.generate_private_key(ec.SECP256R1())


def sign_raw(private_key: ECPrivateKey, data: bytes) -> bytes:
    """ECDSA-P256-SHA256 over ``data`` as 64 bytes r‖s (Intel's DCAP signature form)."""
    r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(P256_COORDINATE_SIZE, "big") + s.to_bytes(P256_COORDINATE_SIZE, "big")


def verify_raw(public_key: ECPublicKey, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` (64 bytes r‖s) is a valid ECDSA-P256-SHA256 signature."""
    if len(signature) != 2 * P256_COORDINATE_SIZE:
        return False
    r = int.from_bytes(signature[:P256_COORDINATE_SIZE], "big")
    s = int.from_bytes(signature[P256_COORDINATE_SIZE:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def public_point_xy(public_key: ECPublicKey) -> bytes:
    """The public point as 64 bytes x‖y (the uncompressed SEC 1 point without its 0x04)."""
    point = public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point[1:]


def private_key_to_pem(private_key: ECPrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted.

    Security: only for keys whose secrecy the design does not rely on (the simulation
    PKI, whose every certificate says SIMULATED). Identity keys use
    :func:`enclaverec.crypto.keys.save_key_pair`, which encrypts them.
    """
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def private_key_from_pem(data: bytes, *, source: str = "private key") -> ECPrivateKey:
    """Load an unencrypted PKCS#8 or SEC 1 PEM P-256 private key."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise MalformedInputError(f"{source}: not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise MalformedInputError(f"{source}: not a P-256 private key")
    return key
