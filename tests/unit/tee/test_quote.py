from __future__ import annotations

import struct

import dcap_qvl
import pytest
from tee_helpers import SGX_MRENCLAVE, SGX_MRSIGNER, TDX_MRTD, TDX_REPORT_DATA_32

from enclaverec.errors import MalformedEvidenceError
from enclaverec.tee.quote import (
    HEADER_SIZE,
    SGX_REPORT_BODY_SIZE,
    SGXReportBody,
    TEEType,
    parse_unverified_quote,
)


@pytest.fixture(scope="module")
def sgx_quote(dcap_vectors) -> bytes:
    return (dcap_vectors / "sgx_quote").read_bytes()


@pytest.fixture(scope="module")
def tdx_quote(dcap_vectors) -> bytes:
    return (dcap_vectors / "tdx_quote").read_bytes()


def test_parses_the_sgx_vector(sgx_quote):
    quote = parse_unverified_quote(sgx_quote)
    assert quote.tee is TEEType.SGX
    assert quote.header.version == 3
    assert quote.header.attestation_key_type == 2
    body = quote.sgx
    assert body.mr_enclave.hex() == SGX_MRENCLAVE
    assert body.mr_signer.hex() == SGX_MRSIGNER
    assert (body.isv_prod_id, body.isv_svn) == (0, 0)
    assert body.attributes.hex() == "0500000000000000e700000000000000"
    assert not quote.debug
    assert quote.report_data == b"Hello, world!".ljust(64, b"\x00")
    assert quote.pck_chain_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert quote.pck_chain_pem.endswith(b"-----END CERTIFICATE-----\n")


def test_sgx_fields_agree_with_dcap_qvl_parser(sgx_quote):
    ours = parse_unverified_quote(sgx_quote).sgx
    theirs = dcap_qvl.parse_quote(sgx_quote).report
    assert (ours.mr_enclave, ours.mr_signer, ours.report_data, ours.attributes, ours.cpu_svn) == (
        theirs.mr_enclave,
        theirs.mr_signer,
        theirs.report_data,
        theirs.attributes,
        theirs.cpu_svn,
    )


def test_parses_the_tdx_vector(tdx_quote):
    quote = parse_unverified_quote(tdx_quote)
    assert quote.tee is TEEType.TDX
    assert quote.header.version == 4
    assert quote.sgx is None
    body = quote.tdx
    assert body.mr_td.hex() == TDX_MRTD
    assert body.report_data[:32].hex() == TDX_REPORT_DATA_32
    theirs = dcap_qvl.parse_quote(tdx_quote).report
    assert body.rtmrs == (theirs.rt_mr0, theirs.rt_mr1, theirs.rt_mr2, theirs.rt_mr3)
    assert (body.mr_seam, body.td_attributes, body.xfam) == (
        theirs.mr_seam,
        theirs.td_attributes,
        theirs.xfam,
    )
    assert not quote.debug
    assert quote.pck_chain_pem is not None


def test_report_body_round_trips():
    body = SGXReportBody(
        cpu_svn=bytes(range(16)),
        misc_select=5,
        attributes=bytes(range(16, 32)),
        mr_enclave=b"\x01" * 32,
        mr_signer=b"\x02" * 32,
        isv_prod_id=0x1234,
        isv_svn=0x5678,
        report_data=bytes(range(64)),
    )
    encoded = body.encode()
    assert len(encoded) == SGX_REPORT_BODY_SIZE
    # ISVPRODID and ISVSVN at body offsets 256 and 258, little-endian (dcap-facts.md).
    assert struct.unpack_from("<HH", encoded, 256) == (0x1234, 0x5678)
    assert SGXReportBody.decode(encoded) == body


def test_debug_flag_is_bit_1_of_the_attribute_flags():
    body = SGXReportBody(
        cpu_svn=bytes(16),
        misc_select=0,
        attributes=(0x07).to_bytes(8, "little") + bytes(8),
        mr_enclave=bytes(32),
        mr_signer=bytes(32),
        isv_prod_id=0,
        isv_svn=0,
        report_data=bytes(64),
    )
    assert body.debug


@pytest.mark.parametrize("length", [0, 10, HEADER_SIZE, HEADER_SIZE + 100, 1000])
def test_rejects_truncated_quote(sgx_quote, length):
    with pytest.raises(MalformedEvidenceError):
        parse_unverified_quote(sgx_quote[:length])


def test_rejects_truncated_signature_data(sgx_quote):
    with pytest.raises(MalformedEvidenceError, match="truncated"):
        parse_unverified_quote(sgx_quote[:-1])


def test_rejects_unknown_version(sgx_quote):
    with pytest.raises(MalformedEvidenceError, match="version 2"):
        parse_unverified_quote(b"\x02\x00" + sgx_quote[2:])


def test_rejects_unknown_attestation_key_type(sgx_quote):
    with pytest.raises(MalformedEvidenceError, match="attestation key type 3"):
        parse_unverified_quote(sgx_quote[:2] + b"\x03\x00" + sgx_quote[4:])


def test_rejects_unknown_tee_type(sgx_quote):
    with pytest.raises(MalformedEvidenceError, match="TEE type"):
        parse_unverified_quote(sgx_quote[:4] + b"\x01\x00\x00\x00" + sgx_quote[8:])


def test_rejects_bytes_smuggled_after_the_signature_data(sgx_quote):
    with pytest.raises(MalformedEvidenceError, match="after the quote's signature data"):
        parse_unverified_quote(sgx_quote + b"extra")


def test_accepts_zero_padding_after_the_signature_data(sgx_quote):
    assert parse_unverified_quote(sgx_quote + bytes(70)).raw == sgx_quote + bytes(70)


def test_rejects_non_bytes():
    with pytest.raises(MalformedEvidenceError):
        parse_unverified_quote("not bytes")  # type: ignore[arg-type]
