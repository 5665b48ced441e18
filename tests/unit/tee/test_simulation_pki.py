"""The simulated platform: its quotes take the production path under their own root."""

from __future__ import annotations

import os
import stat

import dcap_qvl
import pytest
from tee_helpers import ISV_PROD_ID, ISV_SVN, MRENCLAVE, SIM_CREATED, SIM_NOW

from enclaverec.crypto import certs
from enclaverec.errors import (
    CollateralExpiredError,
    ConfigError,
    DebugEnclaveError,
    ISVProdIDError,
    ISVSVNError,
    MrEnclaveError,
    MrSignerError,
    QuoteVerificationError,
    SimulatedEvidenceError,
    TCBStatusError,
    UsageError,
)
from enclaverec.tee.policy import PolicySpec, default_policy
from enclaverec.tee.quote import parse_unverified_quote
from enclaverec.tee.simulated_backend import SimulatedBackend
from enclaverec.tee.simulation_pki import QUOTE_USER_DATA, SimulatedPlatform, SimulationPKI
from enclaverec.tee.verifier import DCAPVerifier, TrustRoot

REPORT_DATA = bytes(range(64))


def test_round_trip_under_the_simulation_root(sim_backend, sim_verifier, sim_collateral, sim_spec):
    quote = sim_backend.quote(REPORT_DATA)
    verified = sim_verifier.verify(quote, sim_collateral, sim_spec.build(), now=SIM_NOW)
    assert verified.simulated
    assert verified.tcb_status == "UpToDate"
    assert verified.advisory_ids == ()
    assert verified.mr_enclave == MRENCLAVE
    assert verified.mr_signer == sim_backend.pki.mr_signer
    assert (verified.isv_prod_id, verified.isv_svn) == (ISV_PROD_ID, ISV_SVN)
    assert verified.report_data == REPORT_DATA
    assert verified.trust_root.sha256 == sim_backend.pki.root_sha256


def test_refused_under_intels_root(sim_backend, sim_collateral, sim_spec):
    quote = sim_backend.quote(REPORT_DATA)
    with pytest.raises(QuoteVerificationError, match="SIMULATED root that this verifier does not"):
        DCAPVerifier.production().verify(quote, sim_collateral, sim_spec.build(), now=SIM_NOW)


def test_dcap_qvl_itself_refuses_it_under_intels_root(sim_backend, sim_collateral):
    with pytest.raises(ValueError):
        dcap_qvl.verify(sim_backend.quote(REPORT_DATA), sim_collateral.to_dcap(), SIM_NOW)


def test_refused_under_another_simulation_root(sim_backend, sim_collateral, sim_spec, fresh_pki):
    other = DCAPVerifier([TrustRoot.intel(), TrustRoot.simulation(fresh_pki.root_certificate)])
    with pytest.raises(QuoteVerificationError):
        other.verify(sim_backend.quote(REPORT_DATA), sim_collateral, sim_spec.build(), now=SIM_NOW)


def test_production_policy_refuses_simulated_evidence(sim_backend, sim_verifier, sim_collateral):
    with pytest.raises(SimulatedEvidenceError) as excinfo:
        sim_verifier.verify(
            sim_backend.quote(REPORT_DATA), sim_collateral, default_policy(), now=SIM_NOW
        )
    assert excinfo.value.check == "simulated"
    assert sim_backend.pki.root_sha256 in excinfo.value.got


def test_policy_naming_another_simulation_root_refuses(sim_backend, sim_verifier, sim_collateral):
    spec = PolicySpec(unsafe_allow_simulation=True, simulation_roots=frozenset({"ab" * 32}))
    with pytest.raises(SimulatedEvidenceError, match="does not name"):
        sim_verifier.verify(
            sim_backend.quote(REPORT_DATA), sim_collateral, spec.build(), now=SIM_NOW
        )


def test_out_of_date_platform_refused_by_the_default_policy(fresh_pki):
    fresh_pki.issue_collateral(
        now=SIM_CREATED, tcb_status="OutOfDate", advisory_ids=("INTEL-SA-00828",)
    )
    backend = SimulatedBackend(fresh_pki, MRENCLAVE)
    verifier = DCAPVerifier(TrustRoot.simulation(fresh_pki.root_certificate))
    spec = PolicySpec(
        unsafe_allow_simulation=True, simulation_roots=frozenset({fresh_pki.root_sha256})
    )
    quote = backend.quote(REPORT_DATA)
    with pytest.raises(TCBStatusError) as excinfo:
        verifier.verify(quote, fresh_pki.collateral(), spec.build(), now=SIM_NOW)
    assert excinfo.value.got == "OutOfDate"
    allowing = PolicySpec(
        unsafe_allow_simulation=True,
        simulation_roots=frozenset({fresh_pki.root_sha256}),
        tcb_statuses=frozenset({"OutOfDate"}),
        allowed_advisories=frozenset({"INTEL-SA-00828"}),
    )
    verified = verifier.verify(quote, fresh_pki.collateral(), allowing.build(), now=SIM_NOW)
    assert (verified.tcb_status, verified.advisory_ids) == ("OutOfDate", ("INTEL-SA-00828",))


def test_expired_collateral_is_refused(sim_backend, sim_verifier, sim_collateral, sim_spec):
    later = SIM_CREATED + 31 * 86400
    with pytest.raises(CollateralExpiredError) as excinfo:
        sim_verifier.verify(
            sim_backend.quote(REPORT_DATA), sim_collateral, sim_spec.build(), now=later
        )
    assert excinfo.value.check == "collateral_validity"


def test_reissued_collateral_is_accepted_again(fresh_pki):
    later = SIM_CREATED + 40 * 86400
    collateral = fresh_pki.issue_collateral(now=later)
    verifier = DCAPVerifier(TrustRoot.simulation(fresh_pki.root_certificate))
    spec = PolicySpec(
        unsafe_allow_simulation=True, simulation_roots=frozenset({fresh_pki.root_sha256})
    )
    quote = SimulatedBackend(fresh_pki, MRENCLAVE).quote(REPORT_DATA)
    assert verifier.verify(quote, collateral, spec.build(), now=later + 60).simulated


def test_debug_enclave_is_refused(sim_pki, sim_verifier, sim_collateral, sim_spec):
    debug = SimulatedBackend(sim_pki, MRENCLAVE, debug=True)
    quote = debug.quote(REPORT_DATA)
    assert parse_unverified_quote(quote).debug
    with pytest.raises(DebugEnclaveError) as excinfo:
        sim_verifier.verify(quote, sim_collateral, sim_spec.build(), now=SIM_NOW)
    assert excinfo.value.check == "debug"


def test_isvsvn_below_minimum_is_refused(sim_backend, sim_verifier, sim_collateral, sim_spec):
    spec = PolicySpec(
        unsafe_allow_simulation=True,
        simulation_roots=sim_spec.simulation_roots,
        min_isv_svn=ISV_SVN + 1,
    )
    with pytest.raises(ISVSVNError) as excinfo:
        sim_verifier.verify(
            sim_backend.quote(REPORT_DATA), sim_collateral, spec.build(), now=SIM_NOW
        )
    assert (excinfo.value.got, excinfo.value.expected) == (ISV_SVN, f">= {ISV_SVN + 1}")


def test_isvsvn_at_minimum_is_accepted(sim_backend, sim_verifier, sim_collateral, sim_spec):
    spec = PolicySpec(
        unsafe_allow_simulation=True,
        simulation_roots=sim_spec.simulation_roots,
        min_isv_svn=ISV_SVN,
    )
    sim_verifier.verify(sim_backend.quote(REPORT_DATA), sim_collateral, spec.build(), now=SIM_NOW)


def test_other_product_id_is_refused(sim_backend, sim_verifier, sim_collateral, sim_spec):
    spec = PolicySpec(
        unsafe_allow_simulation=True, simulation_roots=sim_spec.simulation_roots, isv_prod_id=8
    )
    with pytest.raises(ISVProdIDError):
        sim_verifier.verify(
            sim_backend.quote(REPORT_DATA), sim_collateral, spec.build(), now=SIM_NOW
        )


def test_mrenclave_not_allowed_is_refused(sim_backend, sim_verifier, sim_collateral, sim_spec):
    spec = PolicySpec(
        unsafe_allow_simulation=True,
        simulation_roots=sim_spec.simulation_roots,
        mrenclaves=frozenset({b"\x01" * 32}),
    )
    with pytest.raises(MrEnclaveError) as excinfo:
        sim_verifier.verify(
            sim_backend.quote(REPORT_DATA), sim_collateral, spec.build(), now=SIM_NOW
        )
    assert excinfo.value.got == MRENCLAVE.hex()


def test_mrsigner_of_another_deployment_is_refused(
    sim_backend, sim_verifier, sim_collateral, sim_spec, fresh_pki
):
    spec = PolicySpec(
        unsafe_allow_simulation=True,
        simulation_roots=sim_spec.simulation_roots,
        mrsigners=frozenset({fresh_pki.mr_signer}),
    )
    with pytest.raises(MrSignerError):
        sim_verifier.verify(
            sim_backend.quote(REPORT_DATA), sim_collateral, spec.build(), now=SIM_NOW
        )


def test_tampered_simulated_quote_is_refused(sim_backend, sim_verifier, sim_collateral, sim_spec):
    tampered = bytearray(sim_backend.quote(REPORT_DATA))
    tampered[48 + 320] ^= 0x80  # first byte of REPORT_DATA
    with pytest.raises(QuoteVerificationError):
        sim_verifier.verify(bytes(tampered), sim_collateral, sim_spec.build(), now=SIM_NOW)


def test_everything_issued_says_simulated(sim_pki, sim_backend):
    for certificate in (
        sim_pki.root_certificate,
        sim_pki.pck_ca_certificate,
        sim_pki.pck_leaf_certificate,
        sim_pki.tcb_signer_certificate,
    ):
        assert "SIMULATED" in certificate.subject.rfc4514_string()
        assert "SIMULATED" in certificate.issuer.rfc4514_string()
    quote = parse_unverified_quote(sim_backend.quote(REPORT_DATA))
    assert quote.header.user_data == QUOTE_USER_DATA
    assert "SIMULATED" in repr(sim_backend)
    assert "SIMULATED" in (sim_pki.folder / "simulation.toml").read_text()


def test_pck_leaf_sgx_extension_reads_back_with_dcap_qvl(sim_pki):
    extension = dcap_qvl.parse_pck_extension_from_pem(
        certs.certificate_pem(sim_pki.pck_leaf_certificate)
    )
    assert extension.fmspc == sim_pki.platform.fmspc
    assert extension.pce_svn == sim_pki.platform.pce_svn
    assert extension.cpu_svn == sim_pki.platform.cpu_svn
    assert extension.pce_id == sim_pki.platform.pce_id
    assert extension.sgx_type == 0
    assert len(extension.ppid) == 16


def test_load_gives_the_same_deployment(sim_pki, sim_collateral):
    loaded = SimulationPKI.load(sim_pki.folder)
    assert loaded.root_sha256 == sim_pki.root_sha256
    assert loaded.mr_signer == sim_pki.mr_signer
    assert loaded.platform == sim_pki.platform
    assert loaded.collateral().json_text == sim_collateral.json_text


def test_keys_are_private_to_the_owner(sim_pki):
    keys = sim_pki.folder / "keys"
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o700
    for key in keys.iterdir():
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, key.name


def test_repr_shows_no_key(sim_pki):
    text = repr(sim_pki)
    assert "PRIVATE" not in text and "_keys" not in text


def test_create_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "something").write_text("x")
    with pytest.raises(UsageError, match="non-empty"):
        SimulationPKI.create(tmp_path)


def test_load_refuses_a_folder_that_is_not_a_deployment(tmp_path):
    with pytest.raises(UsageError, match="not a simulation deployment"):
        SimulationPKI.load(tmp_path)


def test_unknown_tcb_status_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown TCB status"):
        SimulatedPlatform(tcb_status="Fine")


def test_up_to_date_platform_has_no_advisories():
    with pytest.raises(ConfigError):
        SimulatedPlatform(advisory_ids=("INTEL-SA-00615",))


def test_report_data_must_be_64_bytes(sim_backend):
    with pytest.raises(UsageError, match="exactly 64 bytes"):
        sim_backend.quote(b"short")


def test_quote_with_an_unparsable_pck_chain_is_malformed(
    sim_backend, sim_verifier, sim_collateral, sim_spec
):
    from enclaverec.errors import MalformedEvidenceError
    from enclaverec.tee.quote import encode_sgx_quote

    good = parse_unverified_quote(sim_backend.quote(REPORT_DATA))
    raw = good.raw
    qe_report = raw[436 + 128 : 436 + 128 + 384]
    qe_signature = raw[436 + 128 + 384 : 436 + 128 + 384 + 64]
    broken = encode_sgx_quote(
        header=good.header,
        body=good.sgx,
        signature=good.signature,
        attestation_key=good.attestation_key,
        qe_report=qe_report,
        qe_report_signature=qe_signature,
        qe_auth_data=b"SIMULATED QE authentication data",
        pck_chain_pem=b"-----BEGIN CERTIFICATE-----\nMAMCAU4=\n-----END CERTIFICATE-----\n",
    )
    with pytest.raises(MalformedEvidenceError):
        sim_verifier.verify(broken, sim_collateral, sim_spec.build(), now=SIM_NOW)


# --- the trust anchors themselves ---------------------------------------------------------


def test_a_root_that_does_not_say_simulated_is_not_a_simulation_root():
    import datetime as dt

    from enclaverec.crypto.signing import generate_p256_key

    key = generate_p256_key()
    name = certs.make_name("Some Production Root CA", organization="Example")
    start = dt.datetime.fromtimestamp(SIM_CREATED, dt.UTC)
    root = certs.build_certificate(
        subject=name,
        public_key=key.public_key(),
        issuer=name,
        issuer_key=key,
        not_before=start,
        not_after=start + dt.timedelta(days=1),
        is_ca=True,
    )
    with pytest.raises(UsageError, match="does not say SIMULATED"):
        TrustRoot.simulation(root)


def test_a_simulation_certificate_that_is_not_self_signed_is_not_a_root(sim_pki):
    # The PCK CA says SIMULATED but is signed by the root: it cannot anchor anything.
    with pytest.raises(UsageError, match="not self-signed"):
        TrustRoot.simulation(sim_pki.pck_ca_certificate)


def test_a_verifier_needs_one_root_and_at_most_one_production_root():
    with pytest.raises(UsageError, match="at least one trust root"):
        DCAPVerifier([])
    with pytest.raises(UsageError, match="at most one production"):
        DCAPVerifier([TrustRoot.intel(), TrustRoot.intel()])


def test_a_chain_ending_in_no_trusted_root_is_refused_before_dcap_qvl(
    sim_backend, sim_collateral, sim_spec, fresh_pki
):
    # Only another deployment's root, and not Intel's: no anchor to even try.
    other = DCAPVerifier(TrustRoot.simulation(fresh_pki.root_certificate))
    with pytest.raises(QuoteVerificationError, match="does not end in a trusted root"):
        other.verify(sim_backend.quote(REPORT_DATA), sim_collateral, sim_spec.build(), now=SIM_NOW)
