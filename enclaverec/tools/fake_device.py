"""A SIMULATED stand-in for Gramine's ``/dev/attestation``, so the Gramine backend's whole
code path runs without SGX (tests and local runs of ``--tee gramine`` code paths).

The folder holds ``attestation_type`` (``dcap``), ``keys/_sgx_mrenclave`` (16 bytes derived
from the simulation deployment's sealing key and the enclave's MRENCLAVE), and two FIFOs,
``user_report_data`` and ``quote``, served by a thread: it reads the 64 bytes written to
``user_report_data``, asks the simulated backend for a quote over them, and writes that
quote to the next reader of ``quote``. Waiting for a write before each quote keeps one
writer's quote from reaching another's read, as in Gramine.

Security: a test double. Its quotes are SIMULATED and verify only under the deployment's
simulation root.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from pathlib import Path
from types import TracebackType

from enclaverec.crypto.aead import hkdf_sha256
from enclaverec.errors import UsageError
from enclaverec.files import write_new
from enclaverec.tee.backend import REPORT_DATA_SIZE
from enclaverec.tee.gramine import (
    ATTESTATION_TYPE_FILE,
    GRAMINE_SEALING_KEY_SIZE,
    MRENCLAVE_KEY_FILE,
    QUOTE_FILE,
    USER_REPORT_DATA_FILE,
)
from enclaverec.tee.simulated_backend import SimulatedBackend

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 5.0


class SimulatedAttestationDevice:
    """A fake ``/dev/attestation`` folder backed by a :class:`SimulatedBackend`.

    Use as a context manager; the folder must not exist yet (or be empty).
    """

    def __init__(self, folder: Path, backend: SimulatedBackend) -> None:
        self.folder = Path(folder)
        self.backend = backend
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SimulatedAttestationDevice:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self.folder.exists() and any(self.folder.iterdir()):
            raise UsageError(f"{self.folder} is not empty")
        (self.folder / "keys").mkdir(parents=True, exist_ok=True)
        (self.folder / ATTESTATION_TYPE_FILE).write_text("dcap", encoding="ascii")
        key = hkdf_sha256(
            self.backend.pki.sealing_key_material(),
            salt=self.backend.measurement(),
            info=b"enclaverec SIMULATED gramine _sgx_mrenclave",
            length=GRAMINE_SEALING_KEY_SIZE,
        )
        key_path = self.folder / MRENCLAVE_KEY_FILE
        key_path.unlink(missing_ok=True)
        write_new(key_path, key, 0o600)  # never readable by others, not even briefly
        os.mkfifo(self.folder / USER_REPORT_DATA_FILE, 0o600)
        os.mkfifo(self.folder / QUOTE_FILE, 0o600)
        self._thread = threading.Thread(
            target=self._serve, name="simulated-attestation-device", daemon=True
        )
        self._thread.start()
        log.warning("SIMULATED /dev/attestation at %s", self.folder)

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        # Wake the thread wherever it blocks: opening user_report_data for reading waits
        # for a writer, opening quote for writing waits for a reader.
        for name, flags in ((USER_REPORT_DATA_FILE, os.O_WRONLY), (QUOTE_FILE, os.O_RDONLY)):
            with contextlib.suppress(OSError):
                os.close(os.open(self.folder / name, flags | os.O_NONBLOCK))
        self._thread.join(STOP_TIMEOUT_SECONDS)
        self._thread = None

    def _serve(self) -> None:
        while not self._stopping.is_set():
            report_data = self._read_report_data()
            if self._stopping.is_set():
                return
            quote = b""
            if len(report_data) == REPORT_DATA_SIZE:
                quote = self.backend.quote(report_data)
            else:
                log.error("simulated device: %d bytes of report data, not 64", len(report_data))
            self._write_quote(quote)

    def _read_report_data(self) -> bytes:
        fd = os.open(self.folder / USER_REPORT_DATA_FILE, os.O_RDONLY)
        try:
            chunks = []
            while chunk := os.read(fd, 4096):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def _write_quote(self, quote: bytes) -> None:
        fd = os.open(self.folder / QUOTE_FILE, os.O_WRONLY)
        try:
            view = memoryview(quote)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            # The reader went away (or stop() woke us): nothing to deliver.
            if exc.errno != errno.EPIPE:
                raise
        finally:
            os.close(fd)
