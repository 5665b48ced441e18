"""What a party needs to verify a peer's RA-TLS certificate: verifier, collateral, policy, clock.

Security: the policy is a required field (no silent default), and the clock is injectable
only so that tests can verify at a fixed time; production code uses the system clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from enclaverec.crypto import certs
from enclaverec.errors import UsageError
from enclaverec.tee.collateral import (
    CollateralProvider,
    PCCSCollateral,
    SimulationCollateral,
)
from enclaverec.tee.policy import Policy
from enclaverec.tee.ratls import VerifiedPeer, verify_ratls_certificate
from enclaverec.tee.simulation_pki import ROOT_CA_FILE
from enclaverec.tee.verifier import DCAPVerifier, TrustRoot

Clock = Callable[[], dt.datetime]
"""Returns the current time as an aware UTC datetime."""


def system_clock() -> dt.datetime:
    """The current time (UTC)."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class VerifierContext:
    """Everything needed to verify RA-TLS certificates against one policy.

    ``verifier`` holds the trust roots (Intel's, and simulation roots where a simulation is
    used); ``collateral`` gives TCB info, QE identity and CRLs for each quote; ``policy``
    decides which enclaves are accepted; ``clock`` is the verification time.
    """

    verifier: DCAPVerifier
    collateral: CollateralProvider
    policy: Policy
    clock: Clock = field(default=system_clock, repr=False)

    @classmethod
    def for_simulation(
        cls, deployment: Path, policy: Policy, *, clock: Clock = system_clock
    ) -> VerifierContext:
        """Trust Intel's root and the simulation deployment's root, with its collateral.

        Security: simulated evidence is still refused unless ``policy`` allows this
        deployment's root (``UnsafeSimulationAllowed``).
        """
        root_pem = _read_root(Path(deployment))
        verifier = DCAPVerifier([TrustRoot.intel(), TrustRoot.simulation(root_pem)])
        return cls(verifier, SimulationCollateral(Path(deployment)), policy, clock)

    @classmethod
    def for_production(
        cls, pccs_url: str, policy: Policy, *, clock: Clock = system_clock
    ) -> VerifierContext:
        """Trust Intel's root only, with collateral from a PCCS (or Intel's PCS)."""
        return cls(DCAPVerifier.production(), PCCSCollateral(pccs_url), policy, clock)

    def now(self) -> dt.datetime:
        return self.clock()

    def verify_certificate(
        self,
        certificate: bytes | x509.Certificate,
        *,
        expected_nonce: bytes | None = None,
    ) -> VerifiedPeer:
        """Verify an RA-TLS certificate (DER, PEM or parsed) now, under this policy."""
        return verify_ratls_certificate(
            certificate,
            self.verifier,
            self.collateral,
            self.policy,
            now=self.clock(),
            expected_nonce=expected_nonce,
        )


def _read_root(deployment: Path) -> bytes:
    path = deployment / ROOT_CA_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise UsageError(
            f"{deployment} is not a simulation deployment (no {ROOT_CA_FILE})"
        ) from exc
    # Parse here so that a damaged root is reported as such before any peer is verified.
    certs.load_certificate(data, source=str(path))
    return data
