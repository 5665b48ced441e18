"""The Gramine evidence backend: quotes and sealing keys from Gramine's ``/dev/attestation``.

Inside a Gramine-SGX enclave with ``sgx.remote_attestation = "dcap"``, writing 64 bytes to
``/dev/attestation/user_report_data`` and then reading ``/dev/attestation/quote`` gives a
DCAP quote over those bytes, and ``/dev/attestation/keys/_sgx_mrenclave`` is the enclave's
16-byte MRENCLAVE-policy sealing key (Gramine docs, "Attestation and Secret
Provisioning"). Outside SGX the same code runs against
:class:`enclaverec.tools.fake_device.SimulatedAttestationDevice`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from enclaverec.crypto.aead import hkdf_sha256
from enclaverec.errors import MalformedEvidenceError, TEEError, UsageError
from enclaverec.tee.backend import (
    DEFAULT_ATTESTATION_DIR,
    REPORT_DATA_SIZE,
    SEALING_KEY_SIZE,
    check_report_data,
    sealing_info,
)
from enclaverec.tee.quote import parse_unverified_quote

ATTESTATION_TYPE_FILE = "attestation_type"
USER_REPORT_DATA_FILE = "user_report_data"
QUOTE_FILE = "quote"
MRENCLAVE_KEY_FILE = "keys/_sgx_mrenclave"
GRAMINE_SEALING_KEY_SIZE = 16
MAX_QUOTE_SIZE = 64 * 1024
"""Far above any DCAP quote (about 5 KiB); a longer read means the device misbehaves."""

# user_report_data and quote are one shared pair per process: two threads interleaving a
# write and a read would get each other's quotes.
_DEVICE_LOCKS: dict[Path, threading.Lock] = {}
_DEVICE_LOCKS_GUARD = threading.Lock()


def _device_lock(folder: Path) -> threading.Lock:
    with _DEVICE_LOCKS_GUARD:
        return _DEVICE_LOCKS.setdefault(folder.resolve(), threading.Lock())


def _read_all(path: Path, limit: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        total = 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > limit:
                raise TEEError(f"{path} returned more than {limit} bytes")
            chunks.append(chunk)
    finally:
        os.close(fd)


def _write_all(path: Path, data: bytes) -> None:
    # O_WRONLY without O_CREAT or O_TRUNC: these are Gramine pseudo-files, never created.
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


class GramineBackend:
    """Evidence from Gramine's ``/dev/attestation`` (or a folder with the same files)."""

    name = "gramine"
    simulated = False

    def __init__(self, attestation_dir: Path = DEFAULT_ATTESTATION_DIR) -> None:
        self.attestation_dir = Path(attestation_dir)
        type_file = self.attestation_dir / ATTESTATION_TYPE_FILE
        try:
            attestation_type = type_file.read_text(encoding="ascii").strip()
        except FileNotFoundError as exc:
            raise UsageError(
                f"not inside Gramine with attestation enabled: {type_file} does not exist "
                '(the manifest needs sgx.remote_attestation = "dcap")'
            ) from exc
        if attestation_type != "dcap":
            raise UsageError(
                f"Gramine attestation type is {attestation_type!r}; enclaverec needs 'dcap'"
            )
        self._lock = _device_lock(self.attestation_dir)
        self._measurement: bytes | None = None

    def __repr__(self) -> str:
        return f"GramineBackend({self.attestation_dir})"

    def quote(self, report_data: bytes) -> bytes:
        check_report_data(report_data)
        with self._lock:
            try:
                _write_all(self.attestation_dir / USER_REPORT_DATA_FILE, report_data)
                quote = _read_all(self.attestation_dir / QUOTE_FILE, MAX_QUOTE_SIZE)
            except OSError as exc:
                raise TEEError(f"Gramine could not produce a quote: {exc}") from exc
        if not quote:
            raise TEEError("Gramine returned an empty quote")
        return quote

    def measurement(self) -> bytes:
        """MRENCLAVE, read from a quote of this enclave (and then cached)."""
        if self._measurement is None:
            quote = parse_unverified_quote(self.quote(bytes(REPORT_DATA_SIZE)))
            if quote.sgx is None:
                raise MalformedEvidenceError("Gramine returned a quote that is not an SGX quote")
            self._measurement = quote.sgx.mr_enclave
        return self._measurement

    def sealing_key(self, label: str) -> bytes:
        info = sealing_info(label)
        path = self.attestation_dir / MRENCLAVE_KEY_FILE
        try:
            material = _read_all(path, GRAMINE_SEALING_KEY_SIZE)
        except OSError as exc:
            raise TEEError(f"Gramine could not provide the sealing key: {exc}") from exc
        if len(material) != GRAMINE_SEALING_KEY_SIZE:
            raise TEEError(
                f"{path} gave {len(material)} bytes; Gramine's sealing keys have "
                f"{GRAMINE_SEALING_KEY_SIZE}"
            )
        return hkdf_sha256(material, info=info, length=SEALING_KEY_SIZE)
