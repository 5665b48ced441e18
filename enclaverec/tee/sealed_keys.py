"""Private keys that an enclave role makes once and keeps across restarts only in sealed state.

A key named ``tls`` lives in ``<state dir>/tls.sealed``: its PKCS#8 PEM sealed (AES-256-GCM,
``enclaverec.tee.sealing``) under the backend's sealing key for :data:`SEALING_LABEL` and
the purpose ``p256-key/tls``. The sealing key is bound to the enclave's measurement, so
another build of the enclave (or another platform) cannot unseal it, and the host, which
stores the file, learns nothing from it and cannot modify it unnoticed.

Security: the plaintext key exists only in this process's memory. Nothing here logs,
prints or writes it unsealed. One process at a time may use a state directory.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from enclaverec.crypto.keys import fingerprint
from enclaverec.crypto.signing import (
    ECPrivateKey,
    generate_p256_key,
    private_key_from_pem,
    private_key_to_pem,
)
from enclaverec.errors import IntegrityError, StorageError, UsageError
from enclaverec.tee.backend import EvidenceBackend
from enclaverec.tee.sealing import seal_file, unseal_file

log = logging.getLogger(__name__)

SEALING_LABEL = "enclaverec/sealed-keys"
"""The label under which the backend derives the sealing key of every sealed private key."""
SEALED_SUFFIX = ".sealed"
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


@dataclass(frozen=True)
class SealedKey:
    """A private key loaded from (or just created into) sealed state."""

    name: str
    private_key: ECPrivateKey = field(repr=False)
    path: Path
    created: bool
    """True when the key was made now (no sealed file existed)."""

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the public key; safe to log."""
        return fingerprint(self.private_key.public_key())


def sealed_key_path(state_dir: Path, name: str) -> Path:
    if not _NAME_RE.fullmatch(name):
        raise UsageError(f"invalid sealed key name {name!r}: 1 to 32 characters of [a-z0-9-]")
    return Path(state_dir) / f"{name}{SEALED_SUFFIX}"


def _ensure_state_dir(state_dir: Path) -> None:
    try:
        # 0700: the sealed files are safe to expose, but there is no reason to.
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the state directory {state_dir}: {exc}") from exc
    if not state_dir.is_dir():
        raise UsageError(f"the state directory {state_dir} is not a directory")


def load_or_create_sealed_key(backend: EvidenceBackend, state_dir: Path, name: str) -> SealedKey:
    """The P-256 key ``name`` of this enclave: unsealed from ``state_dir`` if it is there,
    otherwise made now and sealed there (atomically, mode 0600).

    Raises ``IntegrityError`` when the sealed file exists but cannot be unsealed (another
    enclave build or platform sealed it, or it was modified): the key is never silently
    replaced, since that would change the server's identity behind its operator's back.
    """
    state_dir = Path(state_dir)
    path = sealed_key_path(state_dir, name)
    purpose = f"p256-key/{name}"
    sealing_key = backend.sealing_key(SEALING_LABEL)
    if not path.exists():
        _ensure_state_dir(state_dir)
        key = generate_p256_key()
        # Sealed into a temporary file, then linked into place: link() fails if the name
        # exists, so of two processes starting at once exactly one key wins, and the
        # other process uses that one instead of silently replacing it.
        staging = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        seal_file(staging, sealing_key, purpose, private_key_to_pem(key))
        try:
            os.link(staging, path)
        except FileExistsError:
            pass
        else:
            sealed = SealedKey(name=name, private_key=key, path=path, created=True)
            log.info("made a new %s key %s, sealed in %s", name, sealed.fingerprint, path)
            return sealed
        finally:
            staging.unlink(missing_ok=True)
    try:
        pem = unseal_file(path, sealing_key, purpose)
    except IntegrityError as exc:
        raise IntegrityError(
            f"cannot unseal {path}: it was sealed by another enclave build or platform, "
            "or modified; move it away to start with a new key"
        ) from exc
    key = private_key_from_pem(pem, source=f"sealed key {name}")
    sealed = SealedKey(name=name, private_key=key, path=path, created=False)
    log.info("unsealed the %s key %s from %s", name, sealed.fingerprint, path)
    return sealed
