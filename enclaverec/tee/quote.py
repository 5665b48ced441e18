"""The DCAP quote formats (SGX v3, TDX v4): parsing without trust, and encoding for simulation.

Layouts follow Intel's "SGX ECDSA Quote Library API" (quote v3, appendix A) and "TDX DCAP
Quoting Library API" (quote v4, appendix A); offsets are summarised in
``notes/dcap-facts.md``. Every integer is little-endian.

Security: :func:`parse_unverified_quote` checks structure only. Nothing in a :class:`Quote`
is trustworthy until :class:`enclaverec.tee.verifier.DCAPVerifier` has verified the
signatures and returned a ``VerifiedQuote``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from enclaverec.errors import MalformedEvidenceError

# --- header (48 bytes) -------------------------------------------------------------------
HEADER_SIZE = 48
HEADER_FORMAT = "<HHIHH16s20s"
SGX_QUOTE_VERSION = 3
TDX_QUOTE_VERSION = 4
ATTESTATION_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
"""Intel's quoting enclave vendor id (quote v3 spec, table 3)."""

# --- SGX enclave report body (384 bytes; SDK sgx_report_body_t) ---------------------------
SGX_REPORT_BODY_SIZE = 384
SGX_OFFSET_CPU_SVN = 0
SGX_OFFSET_MISC_SELECT = 16
SGX_OFFSET_ATTRIBUTES = 48
SGX_OFFSET_MR_ENCLAVE = 64
SGX_OFFSET_MR_SIGNER = 128
SGX_OFFSET_ISV_PROD_ID = 256
SGX_OFFSET_ISV_SVN = 258
SGX_OFFSET_REPORT_DATA = 320
SGX_FLAG_INIT = 0x01
SGX_FLAG_DEBUG = 0x02
SGX_FLAG_MODE64BIT = 0x04
"""ATTRIBUTES.FLAGS bits (SDM vol. 3D, table 38-3)."""

# --- TDX TD report body, TDREPORT 1.0 (584 bytes) -----------------------------------------
TDX_REPORT_BODY_SIZE = 584
TDX_BODY_FORMAT = "<16s48s48s8s8s8s48s48s48s48s48s48s48s48s64s"
TDX_ATTRIBUTE_DEBUG = 0x01
"""TDATTRIBUTES bit 0, TUD.DEBUG (TDX module spec, table "TD attributes")."""

# --- signature data ------------------------------------------------------------------------
ECDSA_SIGNATURE_SIZE = 64
ECDSA_KEY_SIZE = 64
CERT_DATA_PCK_CHAIN = 5
"""Certification data type 5: PCK leaf, PCK CA and root certificates, PEM-concatenated."""
CERT_DATA_QE_REPORT = 6
"""Certification data type 6 (quote v4): the QE report certification data."""
REPORT_DATA_SIZE = 64


class TEEType(enum.Enum):
    """Which TEE produced a quote."""

    SGX = "SGX"
    TDX = "TDX"


@dataclass(frozen=True)
class QuoteHeader:
    version: int
    attestation_key_type: int
    tee_type: TEEType
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    def encode(self) -> bytes:
        tee = TEE_TYPE_SGX if self.tee_type is TEEType.SGX else TEE_TYPE_TDX
        return struct.pack(
            HEADER_FORMAT,
            self.version,
            self.attestation_key_type,
            tee,
            self.qe_svn,
            self.pce_svn,
            self.qe_vendor_id,
            self.user_data,
        )


@dataclass(frozen=True)
class SGXReportBody:
    """An SGX enclave report body (the enclave's identity and its 64 bytes of data)."""

    cpu_svn: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes

    @property
    def attribute_flags(self) -> int:
        return int.from_bytes(self.attributes[:8], "little")

    @property
    def debug(self) -> bool:
        return bool(self.attribute_flags & SGX_FLAG_DEBUG)

    @classmethod
    def decode(cls, body: bytes) -> SGXReportBody:
        if len(body) != SGX_REPORT_BODY_SIZE:
            raise MalformedEvidenceError(
                f"an SGX report body has {SGX_REPORT_BODY_SIZE} bytes, got {len(body)}"
            )
        (misc_select,) = struct.unpack_from("<I", body, SGX_OFFSET_MISC_SELECT)
        isv_prod_id, isv_svn = struct.unpack_from("<HH", body, SGX_OFFSET_ISV_PROD_ID)
        return cls(
            cpu_svn=body[SGX_OFFSET_CPU_SVN : SGX_OFFSET_CPU_SVN + 16],
            misc_select=misc_select,
            attributes=body[SGX_OFFSET_ATTRIBUTES : SGX_OFFSET_ATTRIBUTES + 16],
            mr_enclave=body[SGX_OFFSET_MR_ENCLAVE : SGX_OFFSET_MR_ENCLAVE + 32],
            mr_signer=body[SGX_OFFSET_MR_SIGNER : SGX_OFFSET_MR_SIGNER + 32],
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            report_data=body[SGX_OFFSET_REPORT_DATA : SGX_OFFSET_REPORT_DATA + 64],
        )

    def encode(self) -> bytes:
        sizes = {
            "cpu_svn": (self.cpu_svn, 16),
            "attributes": (self.attributes, 16),
            "mr_enclave": (self.mr_enclave, 32),
            "mr_signer": (self.mr_signer, 32),
            "report_data": (self.report_data, REPORT_DATA_SIZE),
        }
        for name, (value, size) in sizes.items():
            if len(value) != size:
                raise ValueError(f"{name} must have {size} bytes, got {len(value)}")
        body = bytearray(SGX_REPORT_BODY_SIZE)
        body[SGX_OFFSET_CPU_SVN : SGX_OFFSET_CPU_SVN + 16] = self.cpu_svn
        struct.pack_into("<I", body, SGX_OFFSET_MISC_SELECT, self.misc_select)
        body[SGX_OFFSET_ATTRIBUTES : SGX_OFFSET_ATTRIBUTES + 16] = self.attributes
        body[SGX_OFFSET_MR_ENCLAVE : SGX_OFFSET_MR_ENCLAVE + 32] = self.mr_enclave
        body[SGX_OFFSET_MR_SIGNER : SGX_OFFSET_MR_SIGNER + 32] = self.mr_signer
        struct.pack_into("<HH", body, SGX_OFFSET_ISV_PROD_ID, self.isv_prod_id, self.isv_svn)
        body[SGX_OFFSET_REPORT_DATA : SGX_OFFSET_REPORT_DATA + 64] = self.report_data
        return bytes(body)


@dataclass(frozen=True)
class TDXReportBody:
    """A TDX TD report body (TDREPORT 1.0): the TD's measurements and its 64 bytes of data."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes[0] & TDX_ATTRIBUTE_DEBUG)

    @classmethod
    def decode(cls, body: bytes) -> TDXReportBody:
        if len(body) != TDX_REPORT_BODY_SIZE:
            raise MalformedEvidenceError(
                f"a TDX report body has {TDX_REPORT_BODY_SIZE} bytes, got {len(body)}"
            )
        fields = struct.unpack(TDX_BODY_FORMAT, body)
        return cls(
            tee_tcb_svn=fields[0],
            mr_seam=fields[1],
            mr_signer_seam=fields[2],
            seam_attributes=fields[3],
            td_attributes=fields[4],
            xfam=fields[5],
            mr_td=fields[6],
            mr_config_id=fields[7],
            mr_owner=fields[8],
            mr_owner_config=fields[9],
            rtmrs=(fields[10], fields[11], fields[12], fields[13]),
            report_data=fields[14],
        )


@dataclass(frozen=True)
class Quote:
    """A structurally valid, **unverified** DCAP quote.

    Security: every field is what the quote claims. Use it to display evidence or to pick
    collateral, never to decide trust; ``DCAPVerifier.verify`` decides trust.
    """

    header: QuoteHeader
    body: SGXReportBody | TDXReportBody
    signature: bytes = field(repr=False)
    attestation_key: bytes = field(repr=False)
    pck_chain_pem: bytes | None = field(repr=False)
    raw: bytes = field(repr=False)

    @property
    def tee(self) -> TEEType:
        return self.header.tee_type

    @property
    def report_data(self) -> bytes:
        return self.body.report_data

    @property
    def debug(self) -> bool:
        return self.body.debug

    @property
    def sgx(self) -> SGXReportBody | None:
        return self.body if isinstance(self.body, SGXReportBody) else None

    @property
    def tdx(self) -> TDXReportBody | None:
        return self.body if isinstance(self.body, TDXReportBody) else None


class _Reader:
    """Bounds-checked sequential reads; running off the end is malformed evidence."""

    def __init__(self, data: bytes, offset: int, end: int) -> None:
        self.data = data
        self.offset = offset
        self.end = end

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.offset + size > self.end:
            raise MalformedEvidenceError(f"quote truncated: {what} runs past the end")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")


def _parse_qe_report_certification(reader: _Reader) -> bytes | None:
    """QE report, its signature, QE auth data, then the certification data; returns the PCK
    chain when the certification data is of type 5."""
    reader.take(SGX_REPORT_BODY_SIZE, "QE report")
    reader.take(ECDSA_SIGNATURE_SIZE, "QE report signature")
    auth_size = reader.u16("QE authentication data size")
    reader.take(auth_size, "QE authentication data")
    cert_type = reader.u16("certification data type")
    cert_size = reader.u32("certification data size")
    cert_data = reader.take(cert_size, "certification data")
    if cert_type != CERT_DATA_PCK_CHAIN:
        return None
    # The chain is NUL-terminated in quotes from Intel's quoting library.
    return cert_data.rstrip(b"\x00")


def parse_unverified_quote(data: bytes) -> Quote:
    """Parse an SGX v3 or TDX v4 ECDSA-P256 quote; structure only, no signature checked.

    Raises :class:`MalformedEvidenceError` for anything that is not such a quote,
    including non-zero bytes after the signature data.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedEvidenceError("a quote is bytes")
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise MalformedEvidenceError(f"too short for a quote header: {len(data)} bytes")
    version, key_type, tee_raw, qe_svn, pce_svn, vendor, user_data = struct.unpack_from(
        HEADER_FORMAT, data, 0
    )
    if tee_raw == TEE_TYPE_SGX:
        tee = TEEType.SGX
        expected_version = SGX_QUOTE_VERSION
        body_size = SGX_REPORT_BODY_SIZE
    elif tee_raw == TEE_TYPE_TDX:
        tee = TEEType.TDX
        expected_version = TDX_QUOTE_VERSION
        body_size = TDX_REPORT_BODY_SIZE
    else:
        raise MalformedEvidenceError(f"unknown TEE type 0x{tee_raw:08x} in the quote header")
    if version != expected_version:
        raise MalformedEvidenceError(
            f"unsupported {tee.value} quote version {version} (supported: {expected_version})"
        )
    if key_type != ATTESTATION_KEY_TYPE_ECDSA_P256:
        raise MalformedEvidenceError(
            f"unsupported attestation key type {key_type} (supported: 2, ECDSA P-256)"
        )
    header = QuoteHeader(
        version=version,
        attestation_key_type=key_type,
        tee_type=tee,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=vendor,
        user_data=user_data,
    )
    reader = _Reader(data, HEADER_SIZE, len(data))
    raw_body = reader.take(body_size, "report body")
    body: SGXReportBody | TDXReportBody = (
        SGXReportBody.decode(raw_body) if tee is TEEType.SGX else TDXReportBody.decode(raw_body)
    )
    signature_data_size = reader.u32("signature data size")
    end = reader.offset + signature_data_size
    if end > len(data):
        raise MalformedEvidenceError(
            f"quote truncated: signature data size {signature_data_size}, but only "
            f"{len(data) - reader.offset} bytes remain"
        )
    # Quotes read from a fixed-size buffer (the TDX vector, for one) carry zero padding
    # after the signature data; anything else there would be unauthenticated smuggled data.
    if data[end:].strip(b"\x00"):
        raise MalformedEvidenceError("non-zero bytes after the quote's signature data")
    reader.end = end
    signature = reader.take(ECDSA_SIGNATURE_SIZE, "quote signature")
    attestation_key = reader.take(ECDSA_KEY_SIZE, "attestation key")
    if tee is TEEType.SGX:
        chain = _parse_qe_report_certification(reader)
    else:
        outer_type = reader.u16("certification data type")
        outer_size = reader.u32("certification data size")
        if outer_type != CERT_DATA_QE_REPORT:
            raise MalformedEvidenceError(
                f"TDX quote: certification data type {outer_type}, expected {CERT_DATA_QE_REPORT}"
            )
        inner = _Reader(data, reader.offset, reader.offset + outer_size)
        reader.take(outer_size, "QE report certification data")
        chain = _parse_qe_report_certification(inner)
    return Quote(
        header=header,
        body=body,
        signature=signature,
        attestation_key=attestation_key,
        pck_chain_pem=chain,
        raw=data,
    )


def encode_sgx_quote(
    *,
    header: QuoteHeader,
    body: SGXReportBody,
    signature: bytes,
    attestation_key: bytes,
    qe_report: bytes,
    qe_report_signature: bytes,
    qe_auth_data: bytes,
    pck_chain_pem: bytes,
) -> bytes:
    """Assemble an SGX v3 quote from its parts (used by the simulated backend)."""
    certification = pck_chain_pem + b"\x00"
    signature_data = (
        signature
        + attestation_key
        + qe_report
        + qe_report_signature
        + struct.pack("<H", len(qe_auth_data))
        + qe_auth_data
        + struct.pack("<HI", CERT_DATA_PCK_CHAIN, len(certification))
        + certification
    )
    return header.encode() + body.encode() + struct.pack("<I", len(signature_data)) + signature_data
