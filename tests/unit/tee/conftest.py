"""Fixtures of the TEE tests: simulation deployments at a fixed time."""

from __future__ import annotations

from pathlib import Path

import pytest
from tee_helpers import ISV_PROD_ID, ISV_SVN, MRENCLAVE, SIM_CREATED

from enclaverec.tee.collateral import Collateral
from enclaverec.tee.policy import PolicySpec
from enclaverec.tee.simulated_backend import SimulatedBackend
from enclaverec.tee.simulation_pki import SimulationPKI
from enclaverec.tee.verifier import DCAPVerifier, TrustRoot


@pytest.fixture(scope="session")
def sim_pki(tmp_path_factory: pytest.TempPathFactory) -> SimulationPKI:
    """A shared, up-to-date simulation deployment. Tests must not modify it."""
    return SimulationPKI.create(tmp_path_factory.mktemp("sim") / "deployment", now=SIM_CREATED)


@pytest.fixture
def fresh_pki(tmp_path: Path) -> SimulationPKI:
    """A simulation deployment of the test's own, which it may change."""
    return SimulationPKI.create(tmp_path / "deployment", now=SIM_CREATED)


@pytest.fixture(scope="session")
def sim_backend(sim_pki: SimulationPKI) -> SimulatedBackend:
    return SimulatedBackend(sim_pki, MRENCLAVE, isv_prod_id=ISV_PROD_ID, isv_svn=ISV_SVN)


@pytest.fixture(scope="session")
def sim_collateral(sim_pki: SimulationPKI) -> Collateral:
    return sim_pki.collateral()


@pytest.fixture(scope="session")
def sim_verifier(sim_pki: SimulationPKI) -> DCAPVerifier:
    """Trusts Intel's root and the shared deployment's simulation root."""
    return DCAPVerifier([TrustRoot.intel(), TrustRoot.simulation(sim_pki.root_certificate)])


@pytest.fixture(scope="session")
def sim_spec(sim_pki: SimulationPKI) -> PolicySpec:
    """The default policy, plus: simulation allowed under the shared deployment's root."""
    return PolicySpec(
        unsafe_allow_simulation=True, simulation_roots=frozenset({sim_pki.root_sha256})
    )
