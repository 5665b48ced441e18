"""The verifier against real Intel evidence (the shared vectors), at the vectors' time."""

from __future__ import annotations

import datetime as dt

import pytest
from tee_helpers import (
    SGX_ADVISORIES,
    SGX_MRENCLAVE,
    SGX_MRSIGNER,
    SGX_STATUS,
    TDX_MRTD,
    TDX_REPORT_DATA_32,
    VECTORS_NOW,
    utc,
)

from enclaverec.errors import (
    AdvisoryError,
    CollateralExpiredError,
    MalformedEvidenceError,
    MrEnclaveError,
    MrSignerError,
    QuoteVerificationError,
    TCBStatusError,
)
from enclaverec.tee.collateral import Collateral, load_collateral_file
from enclaverec.tee.policy import PolicySpec, default_policy
from enclaverec.tee.quote import TEEType
from enclaverec.tee.verifier import DCAPVerifier

ALLOW_SAMPLE = PolicySpec(
    tcb_statuses=frozenset({SGX_STATUS}), allowed_advisories=frozenset(SGX_ADVISORIES)
)


@pytest.fixture(scope="module")
def sgx(dcap_vectors) -> tuple[bytes, Collateral]:
    return (
        (dcap_vectors / "sgx_quote").read_bytes(),
        load_collateral_file(dcap_vectors / "sgx_quote_collateral.json"),
    )


@pytest.fixture(scope="module")
def tdx(dcap_vectors) -> tuple[bytes, Collateral]:
    return (
        (dcap_vectors / "tdx_quote").read_bytes(),
        load_collateral_file(dcap_vectors / "tdx_quote_collateral.json"),
    )


@pytest.fixture(scope="module")
def verifier() -> DCAPVerifier:
    return DCAPVerifier.production()


def test_accepts_sgx_sample_under_a_policy_allowing_its_status_and_advisories(sgx, verifier):
    quote, collateral = sgx
    verified = verifier.verify(quote, collateral, ALLOW_SAMPLE.build(), now=VECTORS_NOW)
    assert verified.tee is TEEType.SGX
    assert verified.tcb_status == SGX_STATUS
    assert sorted(verified.advisory_ids) == list(SGX_ADVISORIES)
    assert verified.mr_enclave.hex() == SGX_MRENCLAVE
    assert verified.mr_signer.hex() == SGX_MRSIGNER
    assert (verified.isv_prod_id, verified.isv_svn) == (0, 0)
    assert verified.quote.sgx.attributes.hex() == "0500000000000000e700000000000000"
    assert not verified.debug
    assert verified.report_data == b"Hello, world!" + bytes(51)
    assert not verified.simulated
    assert verified.verified_at == utc(VECTORS_NOW)


def test_default_policy_refuses_sgx_sample_for_its_tcb_status(sgx, verifier):
    quote, collateral = sgx
    with pytest.raises(TCBStatusError) as excinfo:
        verifier.verify(quote, collateral, default_policy(), now=VECTORS_NOW)
    assert excinfo.value.check == "tcb_status"
    assert excinfo.value.got == SGX_STATUS
    assert excinfo.value.expected == ["UpToDate"]


def test_refuses_sgx_sample_when_one_advisory_is_not_allowed(sgx, verifier):
    quote, collateral = sgx
    spec = PolicySpec(
        tcb_statuses=frozenset({SGX_STATUS}), allowed_advisories=frozenset({"INTEL-SA-00615"})
    )
    with pytest.raises(AdvisoryError) as excinfo:
        verifier.verify(quote, collateral, spec.build(), now=VECTORS_NOW)
    assert excinfo.value.got == ["INTEL-SA-00289"]


def test_refuses_sgx_sample_with_mrenclave_of_zeros(sgx, verifier):
    quote, collateral = sgx
    spec = PolicySpec(mrenclaves=frozenset({bytes(32)}))
    with pytest.raises(MrEnclaveError) as excinfo:
        verifier.verify(quote, collateral, spec.build(), now=VECTORS_NOW)
    assert excinfo.value.check == "mrenclave"
    assert excinfo.value.got == SGX_MRENCLAVE


def test_accepts_sgx_sample_with_its_own_identity(sgx, verifier):
    quote, collateral = sgx
    spec = PolicySpec(
        mrenclaves=frozenset({bytes.fromhex(SGX_MRENCLAVE)}),
        mrsigners=frozenset({bytes.fromhex(SGX_MRSIGNER)}),
        isv_prod_id=0,
        min_isv_svn=0,
        tcb_statuses=ALLOW_SAMPLE.tcb_statuses,
        allowed_advisories=ALLOW_SAMPLE.allowed_advisories,
    )
    assert verifier.verify(quote, collateral, spec.build(), now=VECTORS_NOW).isv_svn == 0


def test_refuses_sgx_sample_with_another_mrsigner(sgx, verifier):
    quote, collateral = sgx
    spec = PolicySpec(mrsigners=frozenset({b"\x01" * 32}))
    with pytest.raises(MrSignerError):
        verifier.verify(quote, collateral, spec.build(), now=VECTORS_NOW)


def test_refuses_one_bit_flip_in_mrenclave(sgx, verifier):
    quote, collateral = sgx
    tampered = bytearray(quote)
    tampered[48 + 64] ^= 0x01
    with pytest.raises(QuoteVerificationError) as excinfo:
        verifier.verify(bytes(tampered), collateral, ALLOW_SAMPLE.build(), now=VECTORS_NOW)
    assert excinfo.value.check == "dcap"


def test_refuses_tampered_tcb_info(sgx, verifier):
    quote, collateral = sgx
    text = collateral.json_text.replace(
        '\\"tcbEvaluationDataNumber\\":17', '\\"tcbEvaluationDataNumber\\":18', 1
    )
    assert text != collateral.json_text
    with pytest.raises(QuoteVerificationError):
        verifier.verify(quote, Collateral.from_json(text), ALLOW_SAMPLE.build(), now=VECTORS_NOW)


def test_refuses_at_the_current_date_because_the_collateral_expired(sgx, verifier):
    quote, collateral = sgx
    with pytest.raises(CollateralExpiredError) as excinfo:
        verifier.verify(quote, collateral, ALLOW_SAMPLE.build(), now=dt.datetime.now(dt.UTC))
    assert excinfo.value.check == "collateral_validity"
    assert "valid until 2025-07-19" in excinfo.value.got


def test_refuses_before_the_collateral_was_issued(sgx, verifier):
    quote, collateral = sgx
    with pytest.raises(CollateralExpiredError, match="not valid yet"):
        verifier.verify(quote, collateral, ALLOW_SAMPLE.build(), now=VECTORS_NOW - 30 * 86400)


def test_collateral_age_limit_of_six_days_accepts_the_sample(sgx, verifier):
    quote, collateral = sgx
    spec = PolicySpec(
        tcb_statuses=ALLOW_SAMPLE.tcb_statuses,
        allowed_advisories=ALLOW_SAMPLE.allowed_advisories,
        max_collateral_age=dt.timedelta(days=6),
    )
    verifier.verify(quote, collateral, spec.build(), now=VECTORS_NOW)


def test_collateral_age_limit_of_five_days_refuses_the_sample(sgx, verifier):
    quote, collateral = sgx
    spec = PolicySpec(
        tcb_statuses=ALLOW_SAMPLE.tcb_statuses,
        allowed_advisories=ALLOW_SAMPLE.allowed_advisories,
        max_collateral_age=dt.timedelta(days=5),
    )
    with pytest.raises(CollateralExpiredError, match="older than the policy allows"):
        verifier.verify(quote, collateral, spec.build(), now=VECTORS_NOW)


def test_tdx_sample_verifies_up_to_date(tdx, verifier):
    quote, collateral = tdx
    verified = verifier.verify(quote, collateral, default_policy(), now=VECTORS_NOW)
    assert verified.tee is TEEType.TDX
    assert verified.tcb_status == "UpToDate"
    assert verified.advisory_ids == ()
    assert verified.quote.header.version == 4
    assert verified.mr_td.hex() == TDX_MRTD
    assert verified.report_data[:32].hex() == TDX_REPORT_DATA_32
    assert verified.mr_enclave is None
    document = verified.to_dict()
    assert document["mr_td"] == TDX_MRTD
    assert document["mrenclave"] is None


def test_mrenclave_policy_refuses_a_tdx_quote(tdx, verifier):
    quote, collateral = tdx
    spec = PolicySpec(mrenclaves=frozenset({bytes(32)}))
    with pytest.raises(MrEnclaveError, match="TDX quote has no MRENCLAVE"):
        verifier.verify(quote, collateral, spec.build(), now=VECTORS_NOW)


def test_sgx_collateral_does_not_verify_the_tdx_quote(tdx, sgx, verifier):
    with pytest.raises(QuoteVerificationError):
        verifier.verify(tdx[0], sgx[1], default_policy(), now=VECTORS_NOW)


def test_malformed_collateral_is_not_a_verification_error(dcap_vectors):
    with pytest.raises(MalformedEvidenceError):
        Collateral.from_json('{"tcb_info": "{}"}')
    with pytest.raises(MalformedEvidenceError, match="unknown field"):
        text = (dcap_vectors / "sgx_quote_collateral.json").read_text()
        Collateral.from_json(text[:-1] + ', "extra": "x"}')


def test_collateral_age_is_measured_from_tcb_info_and_qe_identity(sgx):
    _, collateral = sgx
    # The QE identity (2025-06-19T10:01:18Z) is older than the TCB info; the root CA's
    # CRL (March 2025) is not counted.
    assert collateral.issued_at == dt.datetime(2025, 6, 19, 10, 1, 18, tzinfo=dt.UTC)


def test_mrsigner_policy_refuses_a_tdx_quote(tdx, verifier):
    quote, collateral = tdx
    spec = PolicySpec(mrsigners=frozenset({bytes(32)}))
    with pytest.raises(MrSignerError, match="TDX quote has no MRSIGNER"):
        verifier.verify(quote, collateral, spec.build(), now=VECTORS_NOW)
