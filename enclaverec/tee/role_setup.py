"""What every enclave role does first, whatever its scheme: open its evidence backend over
its measured configuration, and build the verifier context for the policy its peers'
evidence must meet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from enclaverec.errors import ConfigError
from enclaverec.tee.backend import EvidenceBackend, open_backend
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.measurement import ROLE_ISV_PROD_IDS, measured_inputs
from enclaverec.tee.verifier_context import VerifierContext


def role_backend(
    role: str,
    tee: TEEKind,
    raw_config: bytes,
    simulation_dir: Path | None,
    attestation_dir: Path | None = None,
) -> EvidenceBackend | None:
    """The role's evidence backend: None for ``--tee none``; the simulated backend over
    the role's software measurement; or Gramine's ``/dev/attestation``."""
    if tee is TEEKind.NONE:
        return None
    if tee is TEEKind.SIMULATED:
        return open_backend(
            "simulated",
            simulation_folder=simulation_dir,
            measured_inputs=measured_inputs(role, raw_config),
            isv_prod_id=ROLE_ISV_PROD_IDS[role],
        )
    kwargs: dict[str, Any] = {"attestation_dir": attestation_dir} if attestation_dir else {}
    return open_backend("gramine", **kwargs)


def verifier_context(
    tee: TEEKind, policy: Any, simulation_dir: Path | None, pccs_url: str | None
) -> VerifierContext:
    if tee is TEEKind.SIMULATED:
        if simulation_dir is None:
            raise ConfigError("a simulated TEE needs its simulation deployment folder")
        return VerifierContext.for_simulation(simulation_dir, policy.build())
    if not pccs_url:
        raise ConfigError(
            "verifying real SGX evidence needs a PCCS: `init --pccs URL` writes it into the "
            "measured configuration (pccs_url)"
        )
    return VerifierContext.for_production(pccs_url, policy.build())
