"""The evidence backend interface, and the factory that opens the simulated or Gramine one.

A backend produces evidence over 64 bytes of report data, tells its own measurement and
derives sealing keys. Both implementations satisfy the same contract suite
(``tests/unit/tee/test_backend_contract.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from enclaverec.errors import UsageError
from enclaverec.tee.measurement import MeasuredInputs
from enclaverec.tee.quote import REPORT_DATA_SIZE

SEALING_KEY_SIZE = 32
SEALING_INFO_PREFIX = b"enclaverec sealing key v1\x00"
"""HKDF ``info`` prefix of sealing keys; the label follows it."""

DEFAULT_ATTESTATION_DIR = Path("/dev/attestation")

BackendKind = Literal["simulated", "gramine"]


class EvidenceBackend(Protocol):
    """What every TEE backend offers."""

    @property
    def name(self) -> str: ...

    @property
    def simulated(self) -> bool:
        """True when the evidence is not hardware-backed."""
        ...

    def quote(self, report_data: bytes) -> bytes:
        """A DCAP quote whose REPORT_DATA is ``report_data`` (exactly 64 bytes)."""
        ...

    def measurement(self) -> bytes:
        """This enclave's MRENCLAVE (32 bytes)."""
        ...

    def sealing_key(self, label: str) -> bytes:
        """A 32-byte key bound to this enclave's measurement on this platform, separated by
        ``label``: the same inputs give the same key across restarts."""
        ...


def check_report_data(report_data: bytes) -> bytes:
    if not isinstance(report_data, bytes) or len(report_data) != REPORT_DATA_SIZE:
        size = len(report_data) if isinstance(report_data, bytes) else type(report_data).__name__
        raise UsageError(f"report data is exactly {REPORT_DATA_SIZE} bytes, got {size}")
    return report_data


def sealing_info(label: str) -> bytes:
    if not isinstance(label, str) or not label or not label.isprintable():
        raise UsageError("a sealing key label is a non-empty printable string")
    return SEALING_INFO_PREFIX + label.encode("utf-8")


def open_backend(
    kind: BackendKind,
    *,
    simulation_folder: Path | None = None,
    measured_inputs: MeasuredInputs | None = None,
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    attestation_dir: Path = DEFAULT_ATTESTATION_DIR,
) -> EvidenceBackend:
    """Open a backend.

    ``simulated`` needs the simulation deployment folder and the role's measured inputs
    (its MRENCLAVE), plus the role's ISVPRODID/ISVSVN; ``gramine`` reads everything from
    ``attestation_dir`` (``/dev/attestation`` inside Gramine).
    """
    if kind == "simulated":
        from enclaverec.tee.simulated_backend import SimulatedBackend
        from enclaverec.tee.simulation_pki import SimulationPKI

        if simulation_folder is None or measured_inputs is None:
            raise UsageError(
                "the simulated backend needs a simulation deployment folder and the role's "
                "measured inputs"
            )
        return SimulatedBackend(
            SimulationPKI.load(simulation_folder),
            measured_inputs.mrenclave(),
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
        )
    if kind == "gramine":
        from enclaverec.tee.gramine import GramineBackend

        return GramineBackend(attestation_dir)
    raise UsageError(f"unknown TEE backend {kind!r}; choose simulated or gramine")
