"""Identity key pairs (ECDSA P-256): generation, passphrase-protected storage, fingerprints.

Used for a federation's membership (a party signs the aggregator's enrollment nonce) and
for the data owner (data keys are wrapped to the owner's public key).

Security: private keys are written only PEM-encrypted under a passphrase, with mode 0600,
and never printed. Passphrases come from a prompt or a file, never from argv or the
environment (both are visible to other users of the host through ``/proc``).
"""

from __future__ import annotations

import getpass
import hashlib
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# Identity keys are P-256 keys; one generator for every key of the project.
from enclaverec.crypto.signing import generate_p256_key as generate_private_key  # noqa: F401
from enclaverec.errors import IntegrityError, MalformedInputError, PathError, UsageError
from enclaverec.files import write_new

MIN_PASSPHRASE_LENGTH = 8
PUBLIC_SUFFIX = ".pub"


def public_key_der(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """DER SubjectPublicKeyInfo: the canonical bytes that fingerprints and bindings hash."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """``sha256:<hex>`` of the DER SubjectPublicKeyInfo; safe to print and log."""
    return "sha256:" + hashlib.sha256(public_key_der(public_key)).hexdigest()


def public_key_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def save_key_pair(
    private_key: ec.EllipticCurvePrivateKey, path: Path, passphrase: bytes
) -> tuple[Path, Path]:
    """Write the encrypted private key to ``path`` (0600) and the public key beside it.

    Returns (private path, public path). Refuses to overwrite either file.
    """
    path = Path(path)
    public_path = path.with_name(path.name + PUBLIC_SUFFIX)
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a file name for the private key")
    for existing in (path, public_path):
        if existing.exists():
            raise UsageError(f"refusing to overwrite existing file {existing}")
    if not path.parent.exists():
        raise UsageError(f"directory does not exist: {path.parent}")
    encrypted = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    try:
        write_new(path, encrypted, 0o600)
    except OSError as exc:
        raise PathError.from_os_error(exc, path=path, what="private key file") from exc
    try:
        write_new(public_path, public_key_pem(private_key.public_key()), 0o644)
    except BaseException as exc:
        path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise PathError.from_os_error(exc, path=public_path, what="public key file") from exc
        raise
    return path, public_path


def load_private_key(path: Path, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
    data = _read_key_file(path, "private key")
    if data.lstrip().startswith(b"-----BEGIN PUBLIC KEY-----"):
        # Said before trying the passphrase: "wrong passphrase" would point the wrong way.
        raise UsageError(
            f"{path} is a public key; give the private key (the file without {PUBLIC_SUFFIX})"
        )
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError) as exc:
        # One message for a wrong passphrase and a damaged file: no oracle.
        raise IntegrityError(
            f"could not decrypt the private key {path} (wrong passphrase or damaged file)"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise MalformedInputError(f"{path}: not a P-256 private key")
    return key


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    return parse_public_key_pem(_read_key_file(path, "public key"), source=str(path))


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise PathError.from_os_error(exc, path=path, what=what) from exc


def parse_public_key_pem(data: bytes, *, source: str = "public key") -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise MalformedInputError(f"{source}: not a PEM public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise MalformedInputError(f"{source}: not a P-256 public key")
    return key


def read_passphrase(passphrase_file: Path | None, *, confirm: bool) -> bytes:
    """Read a passphrase from ``passphrase_file`` (its first line) or from the terminal.

    Security: there is deliberately no way to pass the passphrase itself as an argument
    or environment variable.
    """
    if passphrase_file is not None:
        try:
            text = Path(passphrase_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise PathError.from_os_error(
                exc, path=passphrase_file, what="passphrase file"
            ) from exc
        except UnicodeDecodeError as exc:
            raise PathError.not_utf8(passphrase_file, what="passphrase file") from exc
        passphrase = text.splitlines()[0] if text else ""
    else:
        if not sys.stdin.isatty():
            raise UsageError("no terminal to prompt for a passphrase; use --passphrase-file FILE")
        passphrase = getpass.getpass("Passphrase: ")
        if confirm and getpass.getpass("Repeat passphrase: ") != passphrase:
            raise UsageError("the passphrases do not match")
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise UsageError(f"the passphrase must have at least {MIN_PASSPHRASE_LENGTH} characters")
    return passphrase.encode("utf-8")
