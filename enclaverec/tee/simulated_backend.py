"""The simulated evidence backend: SGX quotes over a software MRENCLAVE, from a SIMULATED PKI.

Security: nothing here is hardware-backed. The quotes are real-format and verify under the
deployment's simulation root, which a verifier trusts only when its policy names that root.
The sealing key comes from a key file in the deployment folder, readable by whoever can
read that folder.
"""

from __future__ import annotations

import logging
import threading

from enclaverec.crypto.aead import hkdf_sha256
from enclaverec.errors import UsageError
from enclaverec.tee.backend import (
    SEALING_KEY_SIZE,
    check_report_data,
    sealing_info,
)
from enclaverec.tee.quote import SGX_FLAG_DEBUG, SGX_FLAG_INIT, SGX_FLAG_MODE64BIT, SGXReportBody
from enclaverec.tee.simulation_pki import SimulationPKI

log = logging.getLogger(__name__)

XFRM_X87_SSE = 0x03
"""XFRM bits 0 and 1 (x87 and SSE state), which every enclave enables."""


class SimulatedBackend:
    """Evidence from a simulation deployment for one enclave identity.

    ``debug=True`` makes quotes with the DEBUG attribute, so that tests can check they are
    refused; nothing in the product sets it.
    """

    name = "simulated"
    simulated = True

    def __init__(
        self,
        pki: SimulationPKI,
        mrenclave: bytes,
        *,
        isv_prod_id: int = 0,
        isv_svn: int = 0,
        debug: bool = False,
    ) -> None:
        if len(mrenclave) != 32:
            raise UsageError("MRENCLAVE has 32 bytes")
        for name, value in (("isv_prod_id", isv_prod_id), ("isv_svn", isv_svn)):
            if not 0 <= value <= 0xFFFF:
                raise UsageError(f"{name} is a 16-bit unsigned integer")
        self.pki = pki
        self._mrenclave = mrenclave
        self._isv_prod_id = isv_prod_id
        self._isv_svn = isv_svn
        self._debug = debug
        self._warned_sealing = False
        self._lock = threading.Lock()
        log.warning(
            "SIMULATED TEE: evidence from %s is not hardware-backed (MRENCLAVE %s)",
            pki.folder,
            mrenclave.hex(),
        )

    def __repr__(self) -> str:
        return (
            f"SimulatedBackend(SIMULATED, folder={self.pki.folder}, "
            f"mrenclave={self._mrenclave.hex()})"
        )

    def measurement(self) -> bytes:
        return self._mrenclave

    def quote(self, report_data: bytes) -> bytes:
        check_report_data(report_data)
        flags = SGX_FLAG_INIT | SGX_FLAG_MODE64BIT | (SGX_FLAG_DEBUG if self._debug else 0)
        body = SGXReportBody(
            cpu_svn=self.pki.platform.cpu_svn,
            misc_select=0,
            attributes=flags.to_bytes(8, "little") + XFRM_X87_SSE.to_bytes(8, "little"),
            mr_enclave=self._mrenclave,
            mr_signer=self.pki.mr_signer,
            isv_prod_id=self._isv_prod_id,
            isv_svn=self._isv_svn,
            report_data=report_data,
        )
        with self._lock:
            return self.pki.make_quote(body)

    def sealing_key(self, label: str) -> bytes:
        info = sealing_info(label)
        if not self._warned_sealing:
            self._warned_sealing = True
            log.warning(
                "SIMULATED sealing key: derived from the key file of %s, not from hardware",
                self.pki.folder,
            )
        # Salted with MRENCLAVE, as SGX's MRENCLAVE key policy binds the sealing key to
        # the enclave's measurement: another role or another build gets another key.
        return hkdf_sha256(
            self.pki.sealing_key_material(),
            salt=self._mrenclave,
            info=info,
            length=SEALING_KEY_SIZE,
        )
