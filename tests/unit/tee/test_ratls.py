"""RA-TLS certificates: making them, verifying them, and every way a forgery is refused."""

from __future__ import annotations

import datetime as dt
import hashlib

import cbor2
import pytest
from cryptography import x509
from tee_helpers import MRENCLAVE, SIM_NOW, utc

from enclaverec.crypto import certs
from enclaverec.crypto.keys import public_key_der
from enclaverec.crypto.signing import generate_p256_key
from enclaverec.errors import (
    CertificateError,
    KeyBindingError,
    MalformedEvidenceError,
    MrEnclaveError,
    NonceError,
    ReportDataError,
    SimulatedEvidenceError,
    UsageError,
)
from enclaverec.tee.collateral import SimulationCollateral
from enclaverec.tee.policy import PolicySpec, default_policy
from enclaverec.tee.ratls import (
    GRAMINE_LEGACY_QUOTE_OID,
    TCG_DICE_TAGGED_EVIDENCE_OID,
    TEE_QUOTE_CBOR_TAG,
    RATLSCert,
    decode_claims,
    encode_claims,
    extract_evidence,
    report_data_for_claims,
    verify_ratls_certificate,
)

NONCE = b"verifier nonce 0123456789abcdef"
CREATED = utc(SIM_NOW)
CHECKED = SIM_NOW + 60


@pytest.fixture(scope="module")
def provider(sim_pki) -> SimulationCollateral:
    return SimulationCollateral(sim_pki.folder)


@pytest.fixture(scope="module")
def cert(sim_backend) -> RATLSCert:
    return RATLSCert.create(sim_backend, generate_p256_key(), nonce=NONCE, now=CREATED)


def verify(certificate, sim_verifier, provider, policy, **kwargs):
    return verify_ratls_certificate(
        certificate, sim_verifier, provider, policy, now=kwargs.pop("now", CHECKED), **kwargs
    )


def forge(key, extensions, *, issuer_key=None, not_before=CREATED, lifetime=dt.timedelta(hours=1)):
    """A self-signed certificate for ``key`` carrying ``extensions`` (an attacker's tool)."""
    name = certs.make_name("RATLS")
    return certs.build_certificate(
        subject=name,
        public_key=key.public_key(),
        issuer=name,
        issuer_key=issuer_key or key,
        not_before=not_before,
        not_after=not_before + lifetime,
        is_ca=False,
        extensions=[(ext, False) for ext in extensions],
    )


def tagged(quote: bytes, claims: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(
        x509.ObjectIdentifier(TCG_DICE_TAGGED_EVIDENCE_OID),
        cbor2.dumps(cbor2.CBORTag(TEE_QUOTE_CBOR_TAG, [quote, claims])),
    )


def test_make_and_verify(cert, sim_verifier, provider, sim_spec):
    peer = verify(cert.der, sim_verifier, provider, sim_spec.build(), expected_nonce=NONCE)
    assert peer.identity.mr_enclave == MRENCLAVE
    assert peer.identity.simulated
    assert peer.nonce == NONCE
    assert peer.evidence_kind == "tcg-dice"
    assert (
        peer.public_key_sha256
        == hashlib.sha256(public_key_der(cert.private_key.public_key())).hexdigest()
    )
    assert public_key_der(peer.public_key) == public_key_der(cert.private_key.public_key())
    assert peer.certificate_der == cert.der
    assert peer.identity.report_data == report_data_for_claims(
        encode_claims(public_key_der(cert.private_key.public_key()), NONCE)
    )


def test_verify_accepts_pem_and_parsed_certificates(cert, sim_verifier, provider, sim_spec):
    verify(cert.pem, sim_verifier, provider, sim_spec.build())
    verify(cert.certificate, sim_verifier, provider, sim_spec.build())


def test_certificate_layout(cert):
    certificate = cert.certificate
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc <= dt.timedelta(
        hours=1, minutes=5
    )
    assert "SIMULATED" in certificate.subject.rfc4514_string()
    assert certificate.subject == certificate.issuer
    extension = certificate.extensions.get_extension_for_oid(
        x509.ObjectIdentifier(TCG_DICE_TAGGED_EVIDENCE_OID)
    )
    assert not extension.critical
    value = cbor2.loads(extension.value.value)
    assert value.tag == TEE_QUOTE_CBOR_TAG
    quote, claims = value.value
    assert cbor2.loads(claims) == {
        "pubkey-hash": [1, hashlib.sha256(certs.spki_der(certificate)).digest()],
        "nonce": NONCE,
    }
    assert "PRIVATE" not in repr(cert)


def test_claims_without_nonce_have_only_the_key_hash():
    key = generate_p256_key()
    assert decode_claims(encode_claims(public_key_der(key.public_key()))).nonce is None


def test_evidence_moved_to_another_key_is_refused(cert, sim_verifier, provider, sim_spec):
    stolen = cert.certificate.extensions.get_extension_for_oid(
        x509.ObjectIdentifier(TCG_DICE_TAGGED_EVIDENCE_OID)
    ).value
    forged = forge(generate_p256_key(), [stolen])
    with pytest.raises(KeyBindingError) as excinfo:
        verify(forged, sim_verifier, provider, sim_spec.build())
    assert excinfo.value.check == "key_binding"


def test_claims_not_matching_report_data_are_refused(cert, sim_verifier, provider, sim_spec):
    # The attacker rewrites the claims for its own key but cannot get a quote over them.
    evidence = extract_evidence(cert.certificate)
    attacker = generate_p256_key()
    claims = encode_claims(public_key_der(attacker.public_key()), NONCE)
    forged = forge(attacker, [tagged(evidence.quote, claims)])
    with pytest.raises(ReportDataError) as excinfo:
        verify(forged, sim_verifier, provider, sim_spec.build())
    assert excinfo.value.check == "report_data"


def test_wrong_nonce_is_refused(cert, sim_verifier, provider, sim_spec):
    with pytest.raises(NonceError) as excinfo:
        verify(cert.der, sim_verifier, provider, sim_spec.build(), expected_nonce=b"other nonce")
    assert excinfo.value.got == NONCE.hex()


def test_missing_nonce_is_refused(sim_backend, sim_verifier, provider, sim_spec):
    without = RATLSCert.create(sim_backend, generate_p256_key(), now=CREATED)
    verify(without.der, sim_verifier, provider, sim_spec.build())
    with pytest.raises(NonceError, match="no nonce"):
        verify(without.der, sim_verifier, provider, sim_spec.build(), expected_nonce=NONCE)


def test_expired_certificate_is_refused(cert, sim_verifier, provider, sim_spec):
    with pytest.raises(CertificateError, match="not valid at the verification time"):
        verify(cert.der, sim_verifier, provider, sim_spec.build(), now=SIM_NOW + 2 * 3600)


def test_not_yet_valid_certificate_is_refused(cert, sim_verifier, provider, sim_spec):
    with pytest.raises(CertificateError):
        verify(cert.der, sim_verifier, provider, sim_spec.build(), now=SIM_NOW - 3600)


def test_certificate_not_signed_by_its_own_key_is_refused(cert, sim_verifier, provider, sim_spec):
    extension = cert.certificate.extensions.get_extension_for_oid(
        x509.ObjectIdentifier(TCG_DICE_TAGGED_EVIDENCE_OID)
    ).value
    forged = forge(cert.private_key, [extension], issuer_key=generate_p256_key())
    with pytest.raises(CertificateError, match="not signed by its own key"):
        verify(forged, sim_verifier, provider, sim_spec.build())


def test_policy_refusal_comes_through(cert, sim_verifier, provider):
    with pytest.raises(SimulatedEvidenceError):
        verify(cert.der, sim_verifier, provider, default_policy())
    spec = PolicySpec(
        unsafe_allow_simulation=True,
        simulation_roots=frozenset({sim_verifier.trust_roots[1].sha256}),
        mrenclaves=frozenset({bytes(32)}),
    )
    with pytest.raises(MrEnclaveError):
        verify(cert.der, sim_verifier, provider, spec.build())


def test_certificate_without_evidence_is_malformed(sim_verifier, provider, sim_spec):
    with pytest.raises(MalformedEvidenceError, match="no attestation evidence"):
        verify(forge(generate_p256_key(), []), sim_verifier, provider, sim_spec.build())


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff",
        cbor2.dumps([b"quote", b"claims"]),
        cbor2.dumps(cbor2.CBORTag(60001, [b"quote", b"claims"])),
        cbor2.dumps(cbor2.CBORTag(TEE_QUOTE_CBOR_TAG, [b"quote"])),
        cbor2.dumps(cbor2.CBORTag(TEE_QUOTE_CBOR_TAG, ["quote", b"claims"])),
    ],
)
def test_malformed_tagged_evidence_is_refused(payload, sim_verifier, provider, sim_spec):
    extension = x509.UnrecognizedExtension(
        x509.ObjectIdentifier(TCG_DICE_TAGGED_EVIDENCE_OID), payload
    )
    with pytest.raises(MalformedEvidenceError):
        verify(forge(generate_p256_key(), [extension]), sim_verifier, provider, sim_spec.build())


@pytest.mark.parametrize(
    "claims",
    [
        cbor2.dumps([1, 2]),
        cbor2.dumps({"nonce": b"x"}),
        cbor2.dumps({"pubkey-hash": [7, bytes(48)]}),
        cbor2.dumps({"pubkey-hash": [1, bytes(32)], "nonce": "text"}),
    ],
)
def test_malformed_claims_are_refused(claims):
    with pytest.raises(MalformedEvidenceError):
        decode_claims(claims)


def test_gramine_style_claims_are_accepted(sim_backend, sim_verifier, provider, sim_spec):
    # Gramine's RA-TLS library wraps the [1, hash] entry in a byte string.
    key = generate_p256_key()
    entry = cbor2.dumps([1, hashlib.sha256(public_key_der(key.public_key())).digest()])
    claims = cbor2.dumps({"pubkey-hash": entry})
    quote = sim_backend.quote(report_data_for_claims(claims))
    peer = verify(forge(key, [tagged(quote, claims)]), sim_verifier, provider, sim_spec.build())
    assert peer.evidence_kind == "tcg-dice"


def test_legacy_extension_alone_verifies(sim_backend, sim_verifier, provider, sim_spec):
    made = RATLSCert.create(sim_backend, generate_p256_key(), legacy_extension=True, now=CREATED)
    legacy = made.certificate.extensions.get_extension_for_oid(
        x509.ObjectIdentifier(GRAMINE_LEGACY_QUOTE_OID)
    ).value
    only_legacy = forge(made.private_key, [legacy])
    peer = verify(only_legacy, sim_verifier, provider, sim_spec.build())
    assert peer.evidence_kind == "gramine-legacy"
    with pytest.raises(NonceError):
        verify(only_legacy, sim_verifier, provider, sim_spec.build(), expected_nonce=NONCE)


def test_legacy_evidence_moved_to_another_key_is_refused(
    sim_backend, sim_verifier, provider, sim_spec
):
    made = RATLSCert.create(sim_backend, generate_p256_key(), legacy_extension=True, now=CREATED)
    legacy = made.certificate.extensions.get_extension_for_oid(
        x509.ObjectIdentifier(GRAMINE_LEGACY_QUOTE_OID)
    ).value
    with pytest.raises(KeyBindingError):
        verify(forge(generate_p256_key(), [legacy]), sim_verifier, provider, sim_spec.build())


def test_create_refuses_bad_arguments(sim_backend):
    key = generate_p256_key()
    with pytest.raises(UsageError):
        RATLSCert.create(sim_backend, key, validity=dt.timedelta(0))
    with pytest.raises(UsageError):
        RATLSCert.create(sim_backend, key, nonce=b"")


def test_gramine_backend_makes_verifiable_certificates(
    sim_backend, sim_verifier, provider, sim_spec, tmp_path
):
    from enclaverec.tee.gramine import GramineBackend
    from enclaverec.tools.fake_device import SimulatedAttestationDevice

    with SimulatedAttestationDevice(tmp_path / "attestation", sim_backend) as device:
        made = RATLSCert.create(
            GramineBackend(device.folder), generate_p256_key(), nonce=NONCE, now=CREATED
        )
    peer = verify(made.der, sim_verifier, provider, sim_spec.build(), expected_nonce=NONCE)
    assert peer.identity.mr_enclave == MRENCLAVE


@pytest.mark.parametrize(
    "data", [b"", b"\x30\x03\x02\x01\x4e", b"-----BEGIN CERTIFICATE-----\nAA\n"]
)
def test_unparsable_certificate_is_malformed(data, sim_verifier, provider, sim_spec):
    with pytest.raises(MalformedEvidenceError):
        verify(data, sim_verifier, provider, sim_spec.build())
