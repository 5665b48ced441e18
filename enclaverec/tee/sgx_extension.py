"""Intel's SGX extension of PCK certificates (OID 1.2.840.113741.1.13.1), encoded with pyasn1.

The value is a DER SEQUENCE of (OID, value) pairs, as Intel's "SGX PCK Certificate and
CRL Profile" §1.3.5 defines it. The simulated backend puts it in its PCK leaf so that
``dcap-qvl`` reads the platform's FMSPC, PCESVN and CPUSVN from it exactly as it does from
Intel's certificates.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyasn1.codec.der import encoder
from pyasn1.type import univ

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_PPID = SGX_EXTENSION_OID + ".1"
_TCB = SGX_EXTENSION_OID + ".2"
_PCESVN = _TCB + ".17"
_CPUSVN = _TCB + ".18"
_PCEID = SGX_EXTENSION_OID + ".3"
_FMSPC = SGX_EXTENSION_OID + ".4"
_SGX_TYPE = SGX_EXTENSION_OID + ".5"
SGX_TYPE_STANDARD = 0


@dataclass(frozen=True)
class PCKPlatformInfo:
    """What a PCK certificate says about its platform."""

    ppid: bytes
    cpu_svn: bytes
    pce_svn: int
    pce_id: bytes
    fmspc: bytes

    def __post_init__(self) -> None:
        for name, value, size in (
            ("ppid", self.ppid, 16),
            ("cpu_svn", self.cpu_svn, 16),
            ("pce_id", self.pce_id, 2),
            ("fmspc", self.fmspc, 6),
        ):
            if len(value) != size:
                raise ValueError(f"{name} must have {size} bytes, got {len(value)}")
        if not 0 <= self.pce_svn <= 0xFFFF:
            raise ValueError("pce_svn is a 16-bit value")


def _pair(oid: str, value: univ.Asn1Item) -> univ.Sequence:
    pair = univ.Sequence()
    pair.setComponentByPosition(0, univ.ObjectIdentifier(oid))
    pair.setComponentByPosition(1, value)
    return pair


def _sequence(items: list[univ.Sequence]) -> univ.Sequence:
    sequence = univ.Sequence()
    for index, item in enumerate(items):
        sequence.setComponentByPosition(index, item)
    return sequence


def encode_sgx_extension(info: PCKPlatformInfo) -> bytes:
    """The DER value of the SGX extension for ``info``.

    The 16 TCB component SVNs are the bytes of CPUSVN, in order, as on Intel's PCK
    certificates.
    """
    components = [
        _pair(f"{_TCB}.{index + 1}", univ.Integer(svn)) for index, svn in enumerate(info.cpu_svn)
    ]
    components.append(_pair(_PCESVN, univ.Integer(info.pce_svn)))
    components.append(_pair(_CPUSVN, univ.OctetString(info.cpu_svn)))
    extension = _sequence(
        [
            _pair(_PPID, univ.OctetString(info.ppid)),
            _pair(_TCB, _sequence(components)),
            _pair(_PCEID, univ.OctetString(info.pce_id)),
            _pair(_FMSPC, univ.OctetString(info.fmspc)),
            _pair(_SGX_TYPE, univ.Enumerated(SGX_TYPE_STANDARD)),
        ]
    )
    return encoder.encode(extension)
