"""Policy leaves, composition, and loading from TOML."""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib

import pytest
from tee_helpers import ISV_PROD_ID, ISV_SVN, MRENCLAVE, SIM_NOW

from enclaverec.errors import (
    AdvisoryError,
    CollateralExpiredError,
    ConfigError,
    DebugEnclaveError,
    EmptyPolicyError,
    ISVProdIDError,
    ISVSVNError,
    MrEnclaveError,
    MrSignerError,
    NoPolicyAlternativeError,
    SimulatedEvidenceError,
    TCBStatusError,
)
from enclaverec.tee.policy import (
    AllOf,
    AnyOf,
    CollateralMaxAge,
    ISVProdIDIs,
    MinISVSVN,
    MrEnclaveIn,
    MrSignerIn,
    NotDebug,
    PolicySpec,
    ProductionOnly,
    TCBStatusIn,
    UnsafeSimulationAllowed,
    default_policy,
    policy_from_toml,
)
from enclaverec.tee.quote import parse_unverified_quote
from enclaverec.tee.simulated_backend import SimulatedBackend
from enclaverec.tee.verifier import TrustRoot, VerifiedQuote


@pytest.fixture(scope="module")
def verified(sim_backend, sim_verifier, sim_collateral, sim_spec) -> VerifiedQuote:
    """A real simulated VerifiedQuote; tests derive variants with dataclasses.replace."""
    quote = sim_backend.quote(bytes(64))
    return sim_verifier.verify(quote, sim_collateral, sim_spec.build(), now=SIM_NOW)


def production(verified: VerifiedQuote, **changes) -> VerifiedQuote:
    """The same identity as if it had verified under Intel's root."""
    return dataclasses.replace(verified, simulated=False, trust_root=TrustRoot.intel(), **changes)


def test_mrenclave_in(verified):
    MrEnclaveIn(frozenset({MRENCLAVE})).verify(verified)
    with pytest.raises(MrEnclaveError, match="not allowed"):
        MrEnclaveIn(frozenset({bytes(32)})).verify(verified)


def test_mrsigner_in(verified, sim_pki):
    MrSignerIn(frozenset({sim_pki.mr_signer})).verify(verified)
    with pytest.raises(MrSignerError):
        MrSignerIn(frozenset({bytes(32)})).verify(verified)


def test_isv_prod_id_is(verified):
    ISVProdIDIs(ISV_PROD_ID).verify(verified)
    with pytest.raises(ISVProdIDError) as excinfo:
        ISVProdIDIs(ISV_PROD_ID + 1).verify(verified)
    assert (excinfo.value.got, excinfo.value.expected) == (ISV_PROD_ID, ISV_PROD_ID + 1)


def test_min_isv_svn(verified):
    MinISVSVN(ISV_SVN).verify(verified)
    with pytest.raises(ISVSVNError):
        MinISVSVN(ISV_SVN + 1).verify(verified)


def test_tcb_status_in(verified):
    TCBStatusIn(frozenset({"UpToDate"})).verify(verified)
    outdated = dataclasses.replace(
        verified, tcb_status="OutOfDate", advisory_ids=("INTEL-SA-00828",)
    )
    with pytest.raises(TCBStatusError):
        TCBStatusIn(frozenset({"UpToDate"})).verify(outdated)
    with pytest.raises(AdvisoryError) as excinfo:
        TCBStatusIn(frozenset({"OutOfDate"})).verify(outdated)
    assert excinfo.value.got == ["INTEL-SA-00828"]
    TCBStatusIn(frozenset({"OutOfDate"}), frozenset({"INTEL-SA-00828"})).verify(outdated)


def test_not_debug(verified, sim_pki):
    NotDebug().verify(verified)
    debug_quote = parse_unverified_quote(
        SimulatedBackend(sim_pki, MRENCLAVE, debug=True).quote(bytes(64))
    )
    with pytest.raises(DebugEnclaveError):
        NotDebug().verify(dataclasses.replace(verified, quote=debug_quote))


def test_production_only(verified):
    ProductionOnly().verify(production(verified))
    with pytest.raises(SimulatedEvidenceError):
        ProductionOnly().verify(verified)


def test_unsafe_simulation_allowed_names_the_root(verified, sim_pki):
    UnsafeSimulationAllowed(frozenset({sim_pki.root_sha256})).verify(verified)
    UnsafeSimulationAllowed(frozenset({sim_pki.root_sha256})).verify(production(verified))
    with pytest.raises(SimulatedEvidenceError):
        UnsafeSimulationAllowed(frozenset({"00" * 32})).verify(verified)


def test_unsafe_simulation_allowed_needs_a_root():
    with pytest.raises(ConfigError, match="naming the simulation root"):
        UnsafeSimulationAllowed(frozenset())


def test_collateral_max_age(verified):
    # The shared deployment's collateral was issued one hour before SIM_NOW.
    CollateralMaxAge(dt.timedelta(hours=2)).verify(verified)
    with pytest.raises(CollateralExpiredError, match="older than the policy allows"):
        CollateralMaxAge(dt.timedelta(minutes=30)).verify(verified)


def test_all_of_empty_refuses(verified):
    with pytest.raises(EmptyPolicyError):
        AllOf([]).verify(verified)


def test_any_of_empty_refuses(verified):
    with pytest.raises(EmptyPolicyError):
        AnyOf([]).verify(verified)


def test_all_of_raises_the_first_failure(verified):
    policy = AllOf([NotDebug(), MrEnclaveIn(frozenset({bytes(32)})), ProductionOnly()])
    with pytest.raises(MrEnclaveError):
        policy.verify(verified)


def test_any_of_accepts_when_one_alternative_does(verified):
    AnyOf([MrEnclaveIn(frozenset({bytes(32)})), MrEnclaveIn(frozenset({MRENCLAVE}))]).verify(
        verified
    )


def test_any_of_refuses_when_none_does(verified):
    policy = AnyOf([MrEnclaveIn(frozenset({bytes(32)})), ISVProdIDIs(99)])
    with pytest.raises(NoPolicyAlternativeError) as excinfo:
        policy.verify(verified)
    assert [entry.split(":")[0] for entry in excinfo.value.got] == ["mrenclave", "isv_prod_id"]


def test_default_policy_accepts_an_up_to_date_production_quote(verified):
    default_policy().verify(production(verified))


def test_default_policy_refuses_simulated_evidence(verified):
    with pytest.raises(SimulatedEvidenceError):
        default_policy().verify(verified)


def test_describe_names_every_check(sim_pki):
    spec = PolicySpec(
        mrenclaves=frozenset({MRENCLAVE}),
        min_isv_svn=2,
        unsafe_allow_simulation=True,
        simulation_roots=frozenset({sim_pki.root_sha256}),
    )
    text = spec.build().describe()
    assert MRENCLAVE.hex() in text
    assert "ISVSVN >= 2" in text
    assert "not DEBUG" in text
    assert "UNSAFE: SIMULATED" in text
    assert "TCB status in [UpToDate]" in text


# --- TOML ---------------------------------------------------------------------------------

FULL_POLICY = f"""
mrenclave = ["{"5a" * 32}"]
mrsigner = ["{"ab" * 32}"]
isv_prod_id = 7
min_isv_svn = 3
tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
allowed_advisories = ["INTEL-SA-00615"]
max_collateral_age_days = 30
unsafe_allow_simulation = true
simulation_roots = ["{"cd" * 32}"]
"""


def test_policy_spec_from_toml():
    spec = PolicySpec.from_toml(tomllib.loads(FULL_POLICY))
    assert spec.mrenclaves == frozenset({MRENCLAVE})
    assert spec.mrsigners == frozenset({bytes.fromhex("ab" * 32)})
    assert (spec.isv_prod_id, spec.min_isv_svn) == (7, 3)
    assert spec.tcb_statuses == frozenset({"UpToDate", "SWHardeningNeeded"})
    assert spec.allowed_advisories == frozenset({"INTEL-SA-00615"})
    assert spec.max_collateral_age == dt.timedelta(days=30)
    assert spec.simulation_roots == frozenset({"cd" * 32})
    assert spec.identity_checked


def test_empty_toml_is_the_default_policy():
    assert PolicySpec.from_toml({}) == PolicySpec()
    assert not PolicySpec().identity_checked
    assert policy_from_toml({}).describe() == default_policy().describe()


@pytest.mark.parametrize(
    "text, message",
    [
        ('mrenclaves = ["00"]', "unknown policy key"),  # a typo of mrenclave
        ("tcb_status = ['OutOfDate']", "unknown policy key"),
        ("allow_simulation = true", "unknown policy key"),
        ('mrenclave = ["00"]', "64 hex digits"),
        ("mrenclave = []", "at least one value"),
        ('mrenclave = "' + "00" * 32 + '"', "list of strings"),
        ("isv_prod_id = '7'", "must be an integer"),
        ("isv_prod_id = true", "must be an integer"),
        ("isv_prod_id = 70000", "16-bit"),
        ("min_isv_svn = -1", "16-bit"),
        ("tcb_statuses = ['Fine']", "unknown TCB status"),
        ("tcb_statuses = []", "at least one TCB status"),
        ("allowed_advisories = ['SA-1']", "advisory ids"),
        ("max_collateral_age_days = 0", "positive"),
        ("max_collateral_age_days = 'week'", "must be a number"),
        ("unsafe_allow_simulation = 'yes'", "true or false"),
        ("unsafe_allow_simulation = true", "naming the simulation root"),
        ("simulation_roots = ['" + "cd" * 32 + "']", "unsafe_allow_simulation is not true"),
        ("unsafe_allow_simulation = true\nsimulation_roots = ['CD']", "lower-case hex"),
    ],
)
def test_bad_policy_toml_is_a_config_error(text, message):
    with pytest.raises(ConfigError, match=message):
        PolicySpec.from_toml(tomllib.loads(text), source="policy.toml")


def test_extended_adds_to_a_policy():
    spec = PolicySpec(mrenclaves=frozenset({MRENCLAVE})).extended(
        mrenclaves=[bytes(32)],
        tcb_statuses=["SWHardeningNeeded"],
        allowed_advisories=["INTEL-SA-00615"],
        simulation_roots=["ef" * 32],
    )
    assert spec.mrenclaves == frozenset({MRENCLAVE, bytes(32)})
    assert spec.tcb_statuses == frozenset({"UpToDate", "SWHardeningNeeded"})
    assert spec.unsafe_allow_simulation
    assert spec.simulation_roots == frozenset({"ef" * 32})


def test_policy_spec_toml_round_trip():
    spec = PolicySpec(
        mrenclaves=frozenset({b"\x01" * 32, b"\x02" * 32}),
        mrsigners=frozenset({b"\x03" * 32}),
        isv_prod_id=2,
        min_isv_svn=1,
        tcb_statuses=frozenset({"UpToDate", "SWHardeningNeeded"}),
        allowed_advisories=frozenset({"INTEL-SA-00615"}),
        max_collateral_age=dt.timedelta(days=30),
        unsafe_allow_simulation=True,
        simulation_roots=frozenset({"ab" * 32}),
    )
    assert PolicySpec.from_toml(spec.to_toml()) == spec
    assert PolicySpec.from_toml(PolicySpec().to_toml()) == PolicySpec()
