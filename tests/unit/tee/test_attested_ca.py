"""The attested CA at a fixed time: what it issues, and every way it refuses a joiner."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tee_helpers import MRENCLAVE, SIM_NOW, utc

from enclaverec.crypto import certs
from enclaverec.crypto.keys import public_key_der, public_key_pem
from enclaverec.crypto.signing import generate_p256_key
from enclaverec.errors import (
    CertificateError,
    ConfigError,
    ISVProdIDError,
    KeyBindingError,
    MalformedEvidenceError,
    MalformedInputError,
    MembershipError,
    MrEnclaveError,
    NonceError,
    PeerNotAttestedError,
    ServerBindingError,
)
from enclaverec.tee.attested_ca import (
    CA_CERTIFICATE_LIFETIME,
    ENROLLMENT_EXTENSION_OID,
    AttestedCA,
    EnrollmentConfig,
    EnrollmentMethod,
    EnrollmentRequest,
    PeerIdentity,
    build_csr,
    enrollment_statement,
    sign_statement,
    statement_digest,
)
from enclaverec.tee.collateral import SimulationCollateral
from enclaverec.tee.policy import PolicySpec
from enclaverec.tee.ratls import RATLSCert
from enclaverec.tee.verifier_context import VerifierContext

SERVER = hashlib.sha256(b"the aggregator's RA-TLS certificate").digest()
OTHER_SERVER = hashlib.sha256(b"another aggregator's certificate").digest()


class Clock:
    def __init__(self) -> None:
        self.now = utc(SIM_NOW)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def member_key():
    return generate_p256_key()


@pytest.fixture(scope="module")
def stranger_key():
    return generate_p256_key()


def config(member_key, *, signature=True, evidence=True, **kwargs) -> EnrollmentConfig:
    return EnrollmentConfig(
        membership={
            "p0": public_key_pem(member_key.public_key()),
            "p1": public_key_pem(member_key.public_key()),
        },
        require_membership_signature=signature,
        require_evidence=evidence,
        **kwargs,
    )


@pytest.fixture
def evidence_check(sim_pki, sim_verifier, sim_spec, clock) -> VerifierContext:
    """Joiners must run the enclave MRENCLAVE on the shared simulation deployment."""
    policy = PolicySpec(
        mrenclaves=frozenset({MRENCLAVE}),
        unsafe_allow_simulation=True,
        simulation_roots=sim_spec.simulation_roots,
    ).build()
    return VerifierContext(sim_verifier, SimulationCollateral(sim_pki.folder), policy, clock)


@pytest.fixture
def make_ca(member_key, evidence_check, clock):
    def make(cfg: EnrollmentConfig | None = None, *, key=None, audit=None) -> AttestedCA:
        return AttestedCA(
            key or generate_p256_key(),
            cfg or config(member_key),
            server_certificates=lambda: {SERVER},
            evidence_verification=evidence_check,
            audit=audit or (lambda record: None),
            clock=clock,
            simulated=True,
        )

    return make


def request(
    ca: AttestedCA,
    *,
    member_key,
    backend,
    party_id: str = "p0",
    key=None,
    evidence_key=None,
    nonce: bytes | None = None,
    server: bytes = SERVER,
    statement_server: bytes | None = None,
    evidence_statement: bytes | None = None,
    clock_now: dt.datetime | None = None,
) -> EnrollmentRequest:
    """A request as a well-behaved joiner makes it, with knobs to break one thing."""
    key = key or generate_p256_key()
    nonce = nonce or ca.challenge().nonce
    key_sha256 = hashlib.sha256(public_key_der(key.public_key())).digest()
    statement = enrollment_statement(party_id, nonce, statement_server or server, key_sha256)
    signature = sign_statement(member_key, statement) if member_key is not None else None
    evidence = None
    if backend is not None:
        evidence = RATLSCert.create(
            backend,
            evidence_key or key,
            nonce=statement_digest(evidence_statement or statement),
            now=clock_now or utc(SIM_NOW),
        ).der
    return EnrollmentRequest(
        party_id=party_id,
        nonce=nonce,
        csr_der=build_csr(key, party_id),
        server_certificate_sha256=server,
        membership_signature=signature,
        evidence_certificate_der=evidence,
    )


# --- issued --------------------------------------------------------------------------------


def test_issues_a_short_lived_client_certificate_naming_party_and_method(
    make_ca, member_key, sim_backend, clock
):
    records = []
    ca = make_ca(audit=records.append)
    issued = ca.enroll(request(ca, member_key=member_key, backend=sim_backend))
    cert = issued.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "p0"
    assert cert.not_valid_after_utc == clock.now + dt.timedelta(hours=1)
    assert certs.is_signed_by(cert, ca.certificate)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    identity = issued.identity
    assert identity.enrolled_by is EnrollmentMethod.MEMBERSHIP_AND_EVIDENCE
    assert identity.mrenclave == MRENCLAVE
    assert identity.simulated_evidence is True
    assert identity.certificate_serial == cert.serial_number
    assert ca.identify(cert) == identity
    assert [record.identity for record in records] == [identity]


def test_the_ca_certificate_is_a_ca_limited_to_leaves(make_ca):
    ca = make_ca()
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    assert "SIMULATED" in ca.certificate.subject.rfc4514_string()


@pytest.mark.parametrize(
    ("signature", "evidence", "method"),
    [
        (True, False, EnrollmentMethod.MEMBERSHIP),
        (False, True, EnrollmentMethod.EVIDENCE),
    ],
)
def test_one_proof_when_only_one_is_required(
    make_ca, member_key, sim_backend, signature, evidence, method
):
    ca = make_ca(config(member_key, signature=signature, evidence=evidence))
    issued = ca.enroll(
        request(
            ca,
            member_key=member_key if signature else None,
            backend=sim_backend if evidence else None,
        )
    )
    assert issued.identity.enrolled_by is method
    assert (issued.identity.mrenclave is not None) is evidence


def test_a_proof_that_is_not_required_is_ignored(make_ca, member_key, stranger_key, sim_backend):
    # Only the configured proofs are checked: a stray signature neither helps nor hurts.
    ca = make_ca(config(member_key, signature=False, evidence=True))
    issued = ca.enroll(request(ca, member_key=stranger_key, backend=sim_backend))
    assert issued.identity.enrolled_by is EnrollmentMethod.EVIDENCE


# --- refused -------------------------------------------------------------------------------


def test_refuses_a_party_not_in_the_membership(make_ca, member_key, sim_backend):
    ca = make_ca()
    with pytest.raises(MembershipError, match="not in the membership"):
        ca.enroll(request(ca, member_key=member_key, backend=sim_backend, party_id="p9"))


def test_refuses_a_signature_by_a_key_not_in_the_list(make_ca, stranger_key, sim_backend):
    ca = make_ca()
    with pytest.raises(MembershipError, match="does not verify"):
        ca.enroll(request(ca, member_key=stranger_key, backend=sim_backend))


def test_refuses_a_missing_signature(make_ca, sim_backend):
    ca = make_ca()
    with pytest.raises(MembershipError, match="no signature"):
        ca.enroll(request(ca, member_key=None, backend=sim_backend))


def test_refuses_a_signature_replayed_for_another_key(make_ca, member_key, sim_backend):
    ca = make_ca()
    genuine = request(ca, member_key=member_key, backend=sim_backend)
    # The attacker keeps the nonce and the signature but swaps in its own key's CSR.
    attacker_key = generate_p256_key()
    forged = EnrollmentRequest(
        party_id="p0",
        nonce=genuine.nonce,
        csr_der=build_csr(attacker_key, "p0"),
        server_certificate_sha256=SERVER,
        membership_signature=genuine.membership_signature,
        evidence_certificate_der=genuine.evidence_certificate_der,
    )
    with pytest.raises(MembershipError):
        ca.enroll(forged)


def test_refuses_evidence_that_fails_the_policy(sim_pki, make_ca, member_key):
    from enclaverec.tee.simulated_backend import SimulatedBackend

    other = SimulatedBackend(sim_pki, bytes.fromhex("77" * 32))
    ca = make_ca()
    with pytest.raises(MrEnclaveError):
        ca.enroll(request(ca, member_key=member_key, backend=other))


def test_refuses_an_allowed_enclave_claiming_an_id_pinned_to_another_enclave(
    make_ca, member_key, sim_backend
):
    # The policy allows the enclave; p1 is pinned to another MRENCLAVE, so this enclave
    # enrolls as p0 (pinned to it) and never as p1.
    pins = {"p0": MRENCLAVE, "p1": bytes.fromhex("77" * 32)}
    ca = make_ca(config(member_key, signature=False, pinned_mrenclave=pins.get))
    assert ca.enroll(request(ca, member_key=None, backend=sim_backend)).identity.party_id == "p0"
    with pytest.raises(MrEnclaveError, match="pinned for p1") as refused:
        ca.enroll(request(ca, member_key=None, backend=sim_backend, party_id="p1"))
    assert refused.value.got == MRENCLAVE.hex() and refused.value.expected == "77" * 32


def test_ids_without_a_pin_accept_any_allowed_enclave(make_ca, member_key, sim_backend):
    # Same measured code for several ids (e.g. Gramine with signer pins): no binding.
    ca = make_ca(config(member_key, signature=False, pinned_mrenclave=lambda party: None))
    for party in ("p0", "p1"):
        issued = ca.enroll(request(ca, member_key=None, backend=sim_backend, party_id=party))
        assert issued.identity.party_id == party and issued.identity.mrenclave == MRENCLAVE


def test_config_refuses_mrenclave_pins_without_evidence(member_key):
    with pytest.raises(ConfigError, match="need enrollment with evidence"):
        config(member_key, evidence=False, pinned_mrenclave=lambda party: MRENCLAVE)


def test_refuses_an_allowed_enclave_failing_the_policy_of_the_claimed_ids_role(
    make_ca, member_key, sim_backend
):
    # The joiners' policy accepts the enclave; p1's own role policy wants another
    # ISVPRODID (a server's id claimed by a worker's enclave at the key broker).
    role_policies = {"p1": PolicySpec(isv_prod_id=99, mrenclaves=frozenset({MRENCLAVE})).build()}
    ca = make_ca(config(member_key, signature=False, member_policy=role_policies.get))
    assert ca.enroll(request(ca, member_key=None, backend=sim_backend)).identity.party_id == "p0"
    with pytest.raises(ISVProdIDError, match="ISVPRODID differs"):
        ca.enroll(request(ca, member_key=None, backend=sim_backend, party_id="p1"))


def test_config_refuses_member_policies_without_evidence(member_key):
    with pytest.raises(ConfigError, match="need enrollment with evidence"):
        config(member_key, evidence=False, member_policy=lambda party: None)


def test_refuses_evidence_bound_to_another_key(make_ca, member_key, sim_backend):
    ca = make_ca()
    forged = request(
        ca, member_key=member_key, backend=sim_backend, evidence_key=generate_p256_key()
    )
    with pytest.raises(KeyBindingError, match="another key than the CSR"):
        ca.enroll(forged)


def test_refuses_evidence_over_another_statement(make_ca, member_key, sim_backend):
    ca = make_ca()
    stale = enrollment_statement("p0", bytes(32), SERVER, bytes(32))
    forged = request(ca, member_key=member_key, backend=sim_backend, evidence_statement=stale)
    with pytest.raises(NonceError):
        ca.enroll(forged)


def test_refuses_missing_evidence(make_ca, member_key):
    ca = make_ca()
    with pytest.raises(PeerNotAttestedError):
        ca.enroll(request(ca, member_key=member_key, backend=None))


def test_refuses_a_nonce_it_did_not_issue(make_ca, member_key, sim_backend):
    ca = make_ca()
    with pytest.raises(NonceError, match="not issued by this server"):
        ca.enroll(request(ca, member_key=member_key, backend=sim_backend, nonce=bytes(32)))


def test_refuses_a_replayed_request(make_ca, member_key, sim_backend):
    ca = make_ca()
    once = request(ca, member_key=member_key, backend=sim_backend)
    ca.enroll(once)
    with pytest.raises(NonceError, match="already used"):
        ca.enroll(once)


def test_a_refused_request_uses_up_its_nonce(make_ca, member_key, stranger_key, sim_backend):
    ca = make_ca()
    bad = request(ca, member_key=stranger_key, backend=sim_backend)
    with pytest.raises(MembershipError):
        ca.enroll(bad)
    retry = request(ca, member_key=member_key, backend=sim_backend, nonce=bad.nonce)
    with pytest.raises(NonceError):
        ca.enroll(retry)


def test_refuses_an_expired_nonce(make_ca, member_key, sim_backend, clock):
    ca = make_ca()
    late = request(ca, member_key=member_key, backend=sim_backend)
    clock.now += dt.timedelta(minutes=3)
    with pytest.raises(NonceError, match="expired"):
        ca.enroll(late)


def test_refuses_proofs_for_another_server(make_ca, member_key, sim_backend):
    ca = make_ca()
    relayed = request(ca, member_key=member_key, backend=sim_backend, server=OTHER_SERVER)
    with pytest.raises(ServerBindingError):
        ca.enroll(relayed)


def test_refuses_a_statement_that_does_not_name_the_server_it_claims(
    make_ca, member_key, sim_backend
):
    ca = make_ca()
    mismatched = request(
        ca, member_key=member_key, backend=sim_backend, statement_server=OTHER_SERVER
    )
    with pytest.raises(MembershipError):
        ca.enroll(mismatched)


def test_oldest_nonces_are_dropped_beyond_the_limit(make_ca, member_key, sim_backend):
    ca = make_ca(config(member_key, max_outstanding_nonces=2))
    first, second, third = (ca.challenge().nonce for _ in range(3))
    with pytest.raises(NonceError):
        ca.enroll(request(ca, member_key=member_key, backend=sim_backend, nonce=first))
    for nonce in (second, third):
        ca.enroll(request(ca, member_key=member_key, backend=sim_backend, nonce=nonce))


@pytest.mark.parametrize("party_id", ["", "p 0", "../p0", "p0\n", "x" * 65])
def test_refuses_a_malformed_party_id(make_ca, member_key, party_id):
    ca = make_ca()
    bad = EnrollmentRequest(
        party_id=party_id,
        nonce=ca.challenge().nonce,
        csr_der=build_csr(generate_p256_key(), "p0"),
        server_certificate_sha256=SERVER,
    )
    with pytest.raises(MalformedInputError, match="invalid party id"):
        ca.enroll(bad)


def test_refuses_a_csr_not_signed_by_its_key(make_ca, member_key, sim_backend):
    ca = make_ca()
    good = request(ca, member_key=member_key, backend=sim_backend)
    csr = bytearray(good.csr_der)
    csr[-3] ^= 0x01  # inside the signature
    with pytest.raises(MalformedInputError, match="CSR"):
        ca.enroll(EnrollmentRequest("p0", good.nonce, bytes(csr), SERVER))


def test_refuses_a_csr_for_a_key_other_than_p256(make_ca):
    ca = make_ca()
    key = ec.generate_private_key(ec.SECP384R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p0")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(MalformedInputError, match="P-256"):
        ca.enroll(EnrollmentRequest("p0", ca.challenge().nonce, csr, SERVER))


def test_an_audit_failure_issues_nothing(make_ca, member_key, sim_backend):
    def broken(record):
        raise OSError("audit log unavailable")

    ca = make_ca(audit=broken)
    with pytest.raises(OSError):
        ca.enroll(request(ca, member_key=member_key, backend=sim_backend))


# --- identifying a client certificate later --------------------------------------------------


@pytest.fixture
def issued(make_ca, member_key, sim_backend):
    ca = make_ca()
    return ca, ca.enroll(request(ca, member_key=member_key, backend=sim_backend))


def test_identify_refuses_a_certificate_of_another_ca(make_ca, issued):
    _, result = issued
    with pytest.raises(CertificateError, match="not issued by this attested CA"):
        make_ca().identify(result.certificate)


def test_identify_refuses_an_expired_certificate(issued, clock):
    ca, result = issued
    clock.now += dt.timedelta(hours=1, seconds=1)
    with pytest.raises(CertificateError, match="not valid now"):
        ca.identify(result.certificate)


def test_identify_remembers_the_signature_check_but_not_the_validity(issued, clock):
    """A certificate identified once (its signature check remembered) is still refused
    once it expires, and the same bytes from PEM and from the object agree."""
    ca, result = issued
    first = ca.identify(result.certificate)
    assert ca.identify(result.certificate) == first
    clock.now += dt.timedelta(hours=1, seconds=1)
    with pytest.raises(CertificateError, match="not valid now"):
        ca.identify(result.certificate)


def test_identify_refuses_a_certificate_not_yet_valid(issued, clock):
    ca, result = issued
    clock.now -= dt.timedelta(minutes=10)
    with pytest.raises(CertificateError, match="not valid now"):
        ca.identify(result.certificate)


def test_identify_refuses_a_party_no_longer_listed(make_ca, issued, member_key):
    ca, result = issued
    narrower = EnrollmentConfig(
        membership={"p1": public_key_pem(member_key.public_key())},
        require_membership_signature=True,
        require_evidence=True,
    )
    same_key = make_ca(narrower, key=ca._key)
    with pytest.raises(MembershipError):
        same_key.identify(result.certificate)


def _signed_by_ca(ca: AttestedCA, *, common_name: str, extensions=()) -> x509.Certificate:
    now = utc(SIM_NOW)
    return certs.build_certificate(
        subject=certs.make_name(common_name),
        public_key=generate_p256_key().public_key(),
        issuer=ca.certificate.subject,
        issuer_key=ca._key,
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(hours=1),
        is_ca=False,
        extensions=extensions,
    )


def test_identify_refuses_a_certificate_without_the_enrollment_record(issued):
    ca, _ = issued
    with pytest.raises(MalformedEvidenceError, match="no enrollment extension"):
        ca.identify(_signed_by_ca(ca, common_name="p0"))


def test_identify_refuses_a_subject_that_disagrees_with_the_record(issued):
    ca, result = issued
    record = result.certificate.extensions.get_extension_for_oid(
        x509.ObjectIdentifier(ENROLLMENT_EXTENSION_OID)
    ).value
    with pytest.raises(MalformedEvidenceError, match="disagree"):
        ca.identify(_signed_by_ca(ca, common_name="p1", extensions=[(record, False)]))


def test_certificates_survive_a_reissued_ca_certificate(issued, clock):
    ca, result = issued
    before = ca.certificate
    clock.now += CA_CERTIFICATE_LIFETIME - dt.timedelta(days=1)
    after = ca.certificate
    assert after.serial_number != before.serial_number
    assert certs.spki_der(after) == certs.spki_der(before)
    assert certs.is_signed_by(result.certificate, after)


def test_a_declared_identity_is_marked_unauthenticated():
    identity = PeerIdentity.declared("p0")
    assert (identity.authenticated, identity.enrolled_by) == (False, EnrollmentMethod.DECLARED)


# --- configuration ---------------------------------------------------------------------------


def test_config_requires_a_proof(member_key):
    with pytest.raises(ConfigError, match="membership signature, evidence, or both"):
        config(member_key, signature=False, evidence=False)


def test_config_requires_keys_when_signatures_are_required():
    with pytest.raises(ConfigError, match="has no public key"):
        EnrollmentConfig({"p0": None}, require_membership_signature=True, require_evidence=False)


@pytest.mark.parametrize(
    ("membership", "message"),
    [
        ({}, "lists no party"),
        ({"bad id": None}, "invalid party id"),
        ({"p0": b"not a key"}, "not a PEM public key"),
    ],
)
def test_config_refuses_a_bad_membership(membership, message):
    with pytest.raises(ConfigError, match=message):
        EnrollmentConfig(membership, require_membership_signature=False, require_evidence=True)


def test_config_refuses_long_lived_client_certificates(member_key):
    with pytest.raises(ConfigError, match="short-lived"):
        config(member_key, client_certificate_lifetime=dt.timedelta(days=2))


def test_config_is_not_changed_by_the_callers_dict(member_key):
    membership = {"p0": public_key_pem(member_key.public_key())}
    frozen = EnrollmentConfig(membership, require_membership_signature=True, require_evidence=False)
    membership["p9"] = public_key_pem(member_key.public_key())
    with pytest.raises(MembershipError):
        frozen.public_key("p9")


def test_the_ca_refuses_to_require_evidence_without_a_verifier(member_key):
    with pytest.raises(ConfigError, match="no verifier"):
        AttestedCA(generate_p256_key(), config(member_key), server_certificates=lambda: {SERVER})


def test_the_statement_is_canonical_and_checks_sizes():
    one = enrollment_statement("p0", bytes(32), SERVER, bytes(32))
    assert one == enrollment_statement("p0", bytes(32), SERVER, bytes(32))
    assert one != enrollment_statement("p1", bytes(32), SERVER, bytes(32))
    with pytest.raises(MalformedInputError):
        enrollment_statement("p0", bytes(16), SERVER, bytes(32))


def test_refuses_evidence_above_the_size_limit_before_parsing_it(make_ca, member_key, sim_backend):
    from dataclasses import replace

    from enclaverec.tee.attested_ca import MAX_EVIDENCE_SIZE

    ca = make_ca()
    huge = replace(
        request(ca, member_key=member_key, backend=sim_backend),
        evidence_certificate_der=b"\x30" * (MAX_EVIDENCE_SIZE + 1),
    )
    with pytest.raises(MalformedInputError, match="exceeds"):
        ca.enroll(huge)


@pytest.mark.parametrize("size", [0, 4097])
def test_refuses_an_empty_or_oversized_csr(size):
    from enclaverec.tee.attested_ca import MAX_CSR_SIZE, parse_csr

    assert MAX_CSR_SIZE == 4096
    with pytest.raises(MalformedInputError, match="a CSR is 1 to 4096 bytes"):
        parse_csr(b"\x30" * size)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"client_certificate_lifetime": dt.timedelta(0)}, "client_certificate_lifetime"),
        ({"nonce_lifetime": dt.timedelta(seconds=-1)}, "nonce_lifetime"),
        ({"max_outstanding_nonces": 0}, "max_outstanding_nonces"),
        ({"max_outstanding_nonces": True}, "max_outstanding_nonces"),
    ],
)
def test_refuses_a_configuration_that_disables_a_limit(member_key, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        config(member_key, **kwargs)
