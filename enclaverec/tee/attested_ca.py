"""The attested CA: an enclave that checks a joiner's proofs over its new key, then issues it a
short-lived client certificate for mutual TLS.

Enrollment, as the CA sees it (``docs/channels.md`` gives the whole protocol and what each
step defends against):

1. The joiner asks for a challenge: a random, single-use nonce that expires quickly.
2. The joiner makes a key pair, a CSR for it, and the **enrollment statement**: the canonical
   CBOR array ``["enclaverec enrollment v1", party id, nonce, SHA-256 of the server
   certificate the joiner pinned, SHA-256 of the CSR key's DER SubjectPublicKeyInfo]``.
3. Depending on :class:`EnrollmentConfig`, it proves membership (an ECDSA P-256 signature
   over the statement by the identity key the membership lists for its party id) and/or
   that it runs in an allowed enclave (an RA-TLS certificate for the CSR's key whose
   claims carry SHA-256(statement) as their nonce, verified against the joiners' policy,
   and from the MRENCLAVE pinned for its party id where the configuration pins one).
4. The CA issues a certificate for the CSR's key, naming the party and how it enrolled, and
   reports the enrollment to an audit hook.

After that the joiner is a client of plain mutual TLS; :meth:`AttestedCA.identify` reads its
identity back from the certificate the TLS stack verified.

Security: every proof is bound to the nonce (no replay), to the server's certificate (no
relay to another aggregator or through a man in the middle) and to the CSR's key (a proof
cannot be moved to a key the attacker holds). Proofs the configuration does not require
are ignored, never half-checked. Client certificates are short-lived instead of revocable.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import logging
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import cbor2
from cryptography import x509

# cryptography's CSR builder takes the signature hash as an argument, so this module names
# SHA-256 itself (the rest of the hazmat layer stays in enclaverec.crypto).
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from enclaverec.crypto import certs
from enclaverec.crypto.keys import parse_public_key_pem, public_key_der
from enclaverec.crypto.signing import ECPrivateKey, ECPublicKey, sign_raw, verify_raw
from enclaverec.errors import (
    CertificateError,
    ConfigError,
    KeyBindingError,
    MalformedEvidenceError,
    MalformedInputError,
    MembershipError,
    MrEnclaveError,
    NonceError,
    PeerNotAttestedError,
    ServerBindingError,
)
from enclaverec.tee.policy import Policy
from enclaverec.tee.ratls import VerifiedPeer
from enclaverec.tee.verifier import iso
from enclaverec.tee.verifier_context import Clock, VerifierContext, system_clock

log = logging.getLogger(__name__)

ENROLLMENT_EXTENSION_OID = "2.25.194266276471384049754363514740611070138"
"""Our private certificate extension (a UUID OID, ITU-T X.667, needs no registration): the
canonical CBOR map of how the holder enrolled. Not critical."""
STATEMENT_LABEL = "enclaverec enrollment v1"
NONCE_SIZE = 32
DEFAULT_CLIENT_CERTIFICATE_LIFETIME = dt.timedelta(hours=1)
MAX_CLIENT_CERTIFICATE_LIFETIME = dt.timedelta(days=1)
DEFAULT_NONCE_LIFETIME = dt.timedelta(minutes=2)
DEFAULT_MAX_OUTSTANDING_NONCES = 4096
MAX_CHECKED_CERTIFICATES = 4096
"""Client certificates whose signature check :meth:`AttestedCA.identify` remembers."""
CA_CERTIFICATE_LIFETIME = dt.timedelta(days=30)
CA_REISSUE_BEFORE = dt.timedelta(days=2)
"""The CA certificate is re-issued (same key, same name) when less than this remains, so a
long-running server never issues certificates under an expiring CA certificate."""
CA_COMMON_NAME = "enclaverec attested CA"
BACKDATE = dt.timedelta(minutes=5)
"""Certificates start a little early so that a peer whose clock lags accepts them."""
MAX_CSR_SIZE = 4096
MAX_EVIDENCE_SIZE = 64 * 1024
SHA256_SIZE = 32

_PARTY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_party_id(party_id: str) -> str:
    """A party id: 1 to 64 characters of ``[A-Za-z0-9._-]``, starting with a letter or digit
    (it becomes a certificate's common name and appears in logs)."""
    if not isinstance(party_id, str) or not _PARTY_ID_RE.fullmatch(party_id):
        raise MalformedInputError(
            f"invalid party id {party_id!r}: 1 to 64 characters of [A-Za-z0-9._-], "
            "starting with a letter or digit"
        )
    return party_id


class EnrollmentMethod(enum.Enum):
    """How a peer proved who it is."""

    MEMBERSHIP = "membership"
    """A signature by the identity key the membership lists for its party id."""
    EVIDENCE = "evidence"
    """RA-TLS evidence over its key that satisfied the joiners' policy."""
    MEMBERSHIP_AND_EVIDENCE = "membership+evidence"
    """Both."""
    DECLARED = "declared"
    """UNAUTHENTICATED: the plaintext ``--tee none`` baseline, where the peer only says who
    it is. Never issued by the CA."""


# --- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class EnrollmentConfig:
    """What the attested CA requires of a joiner.

    ``membership`` maps each party id allowed to enroll to its identity public key (PEM,
    P-256) or to None when the party has no key (then it can only enroll with evidence).
    At least one proof must be required: a membership list alone would let anyone claim
    any listed id. The joiners' evidence policy is the ``VerifierContext`` given to
    :class:`AttestedCA`.

    ``pinned_mrenclave`` (evidence only) gives the MRENCLAVE a party id must prove, or None
    where the id is not pinned to one enclave (several ids running the same measured code).
    The policy accepts a *set* of enclaves; without this binding any enclave of the set
    could enroll under any listed id (worker-0's enclave as worker-1). It is a function so
    that pins that arrive later (the owner's submission at the key broker) apply.

    ``member_policy`` (evidence only) gives the policy a party id's evidence must also meet,
    or None: the joiners' policy may accept enclaves of several roles (the key broker takes
    workers and parameter servers), and a worker's enclave must not enroll under a server's
    id while that id has no MRENCLAVE pin yet (its role's ISVPRODID tells them apart).
    """

    membership: Mapping[str, bytes | str | None]
    require_membership_signature: bool
    require_evidence: bool
    client_certificate_lifetime: dt.timedelta = DEFAULT_CLIENT_CERTIFICATE_LIFETIME
    nonce_lifetime: dt.timedelta = DEFAULT_NONCE_LIFETIME
    max_outstanding_nonces: int = DEFAULT_MAX_OUTSTANDING_NONCES
    pinned_mrenclave: Callable[[str], bytes | None] | None = field(default=None, compare=False)
    member_policy: Callable[[str], Policy | None] | None = field(default=None, compare=False)
    _keys: Mapping[str, ECPublicKey | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.require_membership_signature and not self.require_evidence:
            raise ConfigError(
                "enrollment must require a membership signature, evidence, or both; "
                "with neither, anyone could enroll under any listed party id"
            )
        if not self.membership:
            raise ConfigError("the membership lists no party")
        if self.pinned_mrenclave is not None and not self.require_evidence:
            raise ConfigError("per-party MRENCLAVE pins need enrollment with evidence")
        if self.member_policy is not None and not self.require_evidence:
            raise ConfigError("per-party policies need enrollment with evidence")
        keys: dict[str, ECPublicKey | None] = {}
        for party_id, pem in self.membership.items():
            try:
                check_party_id(party_id)
            except MalformedInputError as exc:
                raise ConfigError(f"membership: {exc}") from exc
            if pem is None:
                if self.require_membership_signature:
                    raise ConfigError(
                        f"membership: party {party_id} has no public key, but enrollment "
                        "requires a membership signature"
                    )
                keys[party_id] = None
                continue
            data = pem.encode("ascii") if isinstance(pem, str) else pem
            try:
                keys[party_id] = parse_public_key_pem(data, source=f"membership key of {party_id}")
            except (MalformedInputError, UnicodeEncodeError) as exc:
                raise ConfigError(f"membership: {exc}") from exc
        for name in ("client_certificate_lifetime", "nonce_lifetime"):
            if getattr(self, name) <= dt.timedelta(0):
                raise ConfigError(f"{name} must be positive")
        if self.client_certificate_lifetime > MAX_CLIENT_CERTIFICATE_LIFETIME:
            raise ConfigError(
                "client certificates are short-lived (there is no revocation): at most "
                f"{MAX_CLIENT_CERTIFICATE_LIFETIME}, got {self.client_certificate_lifetime}"
            )
        if isinstance(self.max_outstanding_nonces, bool) or self.max_outstanding_nonces < 1:
            raise ConfigError("max_outstanding_nonces must be a positive integer")
        # Read-only copies: the caller's dict cannot change the frozen config later.
        object.__setattr__(self, "membership", MappingProxyType(dict(self.membership)))
        object.__setattr__(self, "_keys", MappingProxyType(keys))

    @property
    def method(self) -> EnrollmentMethod:
        """How every joiner enrolls under this configuration."""
        if self.require_membership_signature and self.require_evidence:
            return EnrollmentMethod.MEMBERSHIP_AND_EVIDENCE
        if self.require_membership_signature:
            return EnrollmentMethod.MEMBERSHIP
        return EnrollmentMethod.EVIDENCE

    def public_key(self, party_id: str) -> ECPublicKey | None:
        """The party's identity key; ``MembershipError`` if the party is not listed."""
        if party_id not in self._keys:
            # The list itself is not revealed to the (unauthenticated) joiner.
            raise MembershipError(
                "the party is not in the membership", got=party_id, expected="a listed party"
            )
        return self._keys[party_id]


# --- the statement a joiner proves ------------------------------------------------------


def enrollment_statement(
    party_id: str, nonce: bytes, server_certificate_sha256: bytes, key_sha256: bytes
) -> bytes:
    """The bytes a joiner signs with its identity key (canonical CBOR, so unambiguous)."""
    check_party_id(party_id)
    for name, value, size in (
        ("nonce", nonce, NONCE_SIZE),
        ("server certificate hash", server_certificate_sha256, SHA256_SIZE),
        ("key hash", key_sha256, SHA256_SIZE),
    ):
        if not isinstance(value, bytes) or len(value) != size:
            raise MalformedInputError(f"the enrollment {name} has {size} bytes")
    return cbor2.dumps(
        [STATEMENT_LABEL, party_id, nonce, server_certificate_sha256, key_sha256], canonical=True
    )


def statement_digest(statement: bytes) -> bytes:
    """SHA-256 of the statement: the nonce a joiner's RA-TLS evidence carries in its claims."""
    return hashlib.sha256(statement).digest()


def sign_statement(identity_key: ECPrivateKey, statement: bytes) -> bytes:
    """The membership signature: ECDSA P-256 SHA-256, 64 bytes r‖s."""
    return sign_raw(identity_key, statement)


def build_csr(private_key: ECPrivateKey, party_id: str) -> bytes:
    """A DER PKCS#10 request for ``private_key``, signed by it (proof of possession)."""
    check_party_id(party_id)
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party_id)]))
        .sign(private_key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER)


def parse_csr(der: bytes) -> tuple[ECPublicKey, bytes]:
    """Parse a CSR and check its self-signature; returns its P-256 key and the key's DER
    SubjectPublicKeyInfo."""
    if not isinstance(der, bytes) or not 0 < len(der) <= MAX_CSR_SIZE:
        raise MalformedInputError(f"a CSR is 1 to {MAX_CSR_SIZE} bytes of DER")
    try:
        request = x509.load_der_x509_csr(der)
        key = request.public_key()
        signature_valid = request.is_signature_valid
    except (ValueError, TypeError) as exc:
        raise MalformedInputError("the CSR is not a DER PKCS#10 request") from exc
    if not signature_valid:
        raise MalformedInputError("the CSR is not signed by its own key")
    # Only P-256 keys are issued certificates, as everywhere in the project.
    if not isinstance(key, ECPublicKey) or key.curve.name != "secp256r1":
        raise MalformedInputError("the CSR's key is not a P-256 key")
    return key, public_key_der(key)


# --- what is issued and recorded ----------------------------------------------------------


@dataclass(frozen=True)
class PeerIdentity:
    """Who a peer is, as the server established it. Safe to log (no secrets)."""

    party_id: str
    enrolled_by: EnrollmentMethod
    authenticated: bool
    """False only for the plaintext baseline (``DECLARED``)."""
    certificate_sha256: str | None = None
    """Lower-case hex SHA-256 of the peer's DER client certificate."""
    certificate_serial: int | None = None
    not_after: dt.datetime | None = None
    mrenclave: bytes | None = None
    """The measurement its evidence proved at enrollment (None without evidence)."""
    mrsigner: bytes | None = None
    simulated_evidence: bool | None = None
    """True when that evidence was SIMULATED (not hardware-backed)."""

    @classmethod
    def declared(cls, party_id: str) -> PeerIdentity:
        """UNAUTHENTICATED: a party id that a plaintext-baseline peer merely claims."""
        return cls(
            party_id=check_party_id(party_id),
            enrolled_by=EnrollmentMethod.DECLARED,
            authenticated=False,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "party_id": self.party_id,
            "enrolled_by": self.enrolled_by.value,
            "authenticated": self.authenticated,
            "certificate_sha256": self.certificate_sha256,
            "certificate_serial": (
                format(self.certificate_serial, "x") if self.certificate_serial else None
            ),
            "not_after": iso(self.not_after) if self.not_after else None,
            "mrenclave": self.mrenclave.hex() if self.mrenclave else None,
            "mrsigner": self.mrsigner.hex() if self.mrsigner else None,
            "simulated_evidence": self.simulated_evidence,
        }


@dataclass(frozen=True)
class EnrollmentRecord:
    """What the audit hook receives for each certificate issued (no secrets)."""

    at: dt.datetime
    identity: PeerIdentity

    def to_dict(self) -> dict[str, object]:
        return {"at": iso(self.at), **self.identity.to_dict()}


AuditHook = Callable[[EnrollmentRecord], None]


def log_enrollment(record: EnrollmentRecord) -> None:
    """The default audit hook: one INFO line per enrollment."""
    identity = record.identity
    log.info(
        "enrolled %s by %s: certificate serial %x, sha256 %s, until %s, MRENCLAVE %s%s",
        identity.party_id,
        identity.enrolled_by.value,
        identity.certificate_serial or 0,
        identity.certificate_sha256,
        iso(identity.not_after) if identity.not_after else "?",
        identity.mrenclave.hex() if identity.mrenclave else "none",
        " (SIMULATED evidence)" if identity.simulated_evidence else "",
    )


@dataclass(frozen=True)
class Challenge:
    nonce: bytes = field(repr=False)
    expires_at: dt.datetime


@dataclass(frozen=True)
class EnrollmentRequest:
    """A joiner's request, as received (nothing in it is trusted yet)."""

    party_id: str
    nonce: bytes = field(repr=False)
    csr_der: bytes = field(repr=False)
    server_certificate_sha256: bytes
    membership_signature: bytes | None = field(default=None, repr=False)
    evidence_certificate_der: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: x509.Certificate = field(repr=False)
    ca_certificate: x509.Certificate = field(repr=False)
    identity: PeerIdentity

    @property
    def certificate_der(self) -> bytes:
        return certs.certificate_der(self.certificate)


def _encode_enrollment_extension(identity: PeerIdentity) -> bytes:
    value: dict[str, object] = {
        "v": 1,
        "party": identity.party_id,
        "how": identity.enrolled_by.value,
    }
    if identity.mrenclave is not None:
        value["mrenclave"] = identity.mrenclave
    if identity.mrsigner is not None:
        value["mrsigner"] = identity.mrsigner
    if identity.simulated_evidence is not None:
        value["simulated"] = identity.simulated_evidence
    return cbor2.dumps(value, canonical=True)


def _decode_enrollment_extension(data: bytes) -> dict[str, object]:
    try:
        value = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise MalformedEvidenceError("the enrollment extension is not CBOR") from exc
    if not isinstance(value, dict) or value.get("v") != 1:
        raise MalformedEvidenceError("the enrollment extension is not a version 1 map")
    return value


# --- nonces -------------------------------------------------------------------------------


class _NonceStore:
    """Server-generated nonces: random, single-use, short-lived, bounded in number."""

    def __init__(self, lifetime: dt.timedelta, capacity: int, clock: Clock) -> None:
        self._lifetime = lifetime
        self._capacity = capacity
        self._clock = clock
        self._expiry: OrderedDict[bytes, dt.datetime] = OrderedDict()
        self._warned = False
        self._lock = threading.Lock()

    def issue(self) -> Challenge:
        now = self._clock()
        nonce = secrets.token_bytes(NONCE_SIZE)
        expires = now + self._lifetime
        with self._lock:
            self._purge(now)
            if len(self._expiry) >= self._capacity:
                # Oldest first: a flood of challenges can only make slow joiners retry.
                self._expiry.popitem(last=False)
                if not self._warned:  # once per flood, not once per challenge
                    self._warned = True
                    log.warning("too many outstanding enrollment nonces; dropping the oldest")
            else:
                self._warned = False
            self._expiry[nonce] = expires
        return Challenge(nonce=nonce, expires_at=expires)

    def consume(self, nonce: bytes) -> None:
        """Accept ``nonce`` once, if this server issued it and it has not expired."""
        now = self._clock()
        with self._lock:
            expires = self._expiry.pop(nonce, None) if isinstance(nonce, bytes) else None
        if expires is None:
            raise NonceError(
                "the enrollment nonce was not issued by this server, or was already used",
                got="an unknown or used nonce",
                expected="a nonce from Challenge, used once",
            )
        if now > expires:
            raise NonceError(
                "the enrollment nonce has expired",
                got=f"expired at {iso(expires)}",
                expected=f"valid at {iso(now)}",
            )

    def _purge(self, now: dt.datetime) -> None:
        # Every nonce lives equally long, so insertion order is expiry order.
        while self._expiry and next(iter(self._expiry.values())) < now:
            self._expiry.popitem(last=False)


# --- the CA -------------------------------------------------------------------------------


class AttestedCA:
    """Issues short-lived client certificates to joiners whose proofs satisfy ``config``.

    ``ca_key`` is made inside the enclave and kept in sealed state (see
    ``enclaverec.tee.sealed_keys``). ``server_certificates`` returns the SHA-256 digests of
    the server certificates this server currently presents (a joiner's statement must name
    one of them). ``evidence_verification`` verifies joiners' RA-TLS evidence against the
    joiners' policy; it is required when ``config.require_evidence``.

    Security: the CA certificate is re-made from the key at every start (same name, same
    key), so nothing but the sealed key has to be stored, and certificates issued before a
    restart still verify.
    """

    def __init__(
        self,
        ca_key: ECPrivateKey,
        config: EnrollmentConfig,
        *,
        server_certificates: Callable[[], Collection[bytes]],
        evidence_verification: VerifierContext | None = None,
        audit: AuditHook | None = None,
        clock: Clock = system_clock,
        simulated: bool = False,
    ) -> None:
        if config.require_evidence and evidence_verification is None:
            raise ConfigError(
                "enrollment requires evidence, but no verifier (policy for the joiners' "
                "evidence) was given"
            )
        self._key = ca_key
        self._config = config
        self._server_certificates = server_certificates
        self._evidence = evidence_verification
        self._audit = audit or log_enrollment
        self._clock = clock
        self._simulated = simulated
        self._nonces = _NonceStore(config.nonce_lifetime, config.max_outstanding_nonces, clock)
        self._lock = threading.Lock()
        self._name = certs.make_name(
            CA_COMMON_NAME, organization="enclaverec", unit="SIMULATED" if simulated else None
        )
        self._certificate = self._make_ca_certificate(clock())
        # Certificates whose issuer signature and enrollment record were checked, by their
        # bytes: each enrolled party calls many times with the same one (issue 12).
        self._checked: dict[bytes, tuple[x509.Certificate, PeerIdentity]] = {}

    @property
    def config(self) -> EnrollmentConfig:
        return self._config

    def _make_ca_certificate(self, now: dt.datetime) -> x509.Certificate:
        return certs.build_certificate(
            subject=self._name,
            public_key=self._key.public_key(),
            issuer=self._name,
            issuer_key=self._key,
            not_before=now - BACKDATE,
            not_after=now + CA_CERTIFICATE_LIFETIME,
            is_ca=True,
            path_length=0,
        )

    @property
    def certificate(self) -> x509.Certificate:
        """The CA certificate, re-issued over the same key when it nears expiry."""
        now = self._clock()
        with self._lock:
            if self._certificate.not_valid_after_utc - now < CA_REISSUE_BEFORE:
                self._certificate = self._make_ca_certificate(now)
            return self._certificate

    @property
    def certificate_pem(self) -> bytes:
        return certs.certificate_pem(self.certificate)

    def challenge(self) -> Challenge:
        """Step 1: a fresh nonce for one enrollment."""
        return self._nonces.issue()

    def enroll(self, request: EnrollmentRequest) -> IssuedCertificate:
        """Check a joiner's proofs and issue its certificate, or raise the refusing check's
        error (``MalformedInputError`` for a request that does not parse)."""
        config = self._config
        # 1. Parse: party id, CSR (self-signed: the joiner holds its key), sizes.
        party_id = check_party_id(request.party_id)
        public_key, spki = parse_csr(request.csr_der)
        key_sha256 = hashlib.sha256(spki).digest()
        if not isinstance(request.server_certificate_sha256, bytes) or (
            len(request.server_certificate_sha256) != SHA256_SIZE
        ):
            raise MalformedInputError("the server certificate hash has 32 bytes")
        # 2. The nonce: issued here, unexpired, and now used up (even if a later check
        #    fails, so a refused joiner cannot retry the same proofs).
        self._nonces.consume(request.nonce)
        # 3. The statement names this server's certificate: a proof made for another
        #    server (or a man in the middle with its own certificate) is refused here.
        accepted = self._server_certificates()
        if not any(
            hmac.compare_digest(request.server_certificate_sha256, digest) for digest in accepted
        ):
            raise ServerBindingError(
                "the enrollment statement names another server certificate",
                got=request.server_certificate_sha256.hex(),
                expected=sorted(digest.hex() for digest in accepted),
            )
        # 4. The party must be listed.
        identity_key = config.public_key(party_id)
        statement = enrollment_statement(
            party_id, request.nonce, request.server_certificate_sha256, key_sha256
        )
        # 5. Membership: the listed identity key signed the statement.
        if config.require_membership_signature:
            signature = request.membership_signature
            if identity_key is None:  # excluded by EnrollmentConfig; kept as a refusal
                raise MembershipError("the party has no identity key", got=party_id)
            if not signature or not verify_raw(identity_key, statement, signature):
                raise MembershipError(
                    "the membership signature does not verify under the party's listed key",
                    got="no signature" if not signature else "a signature by another key",
                    expected=f"a signature by the key listed for {party_id}",
                )
        # 6. Evidence: an enclave the joiners' policy allows vouches for the CSR's key,
        #    with the statement's digest as its nonce.
        verified: VerifiedPeer | None = None
        if config.require_evidence:
            if self._evidence is None:  # excluded by __init__; kept as a refusal
                raise PeerNotAttestedError("no verifier for the joiners' evidence")
            evidence = request.evidence_certificate_der
            if not evidence:
                raise PeerNotAttestedError(
                    "enrollment requires RA-TLS evidence over the CSR's key; none was sent"
                )
            if len(evidence) > MAX_EVIDENCE_SIZE:
                raise MalformedInputError(f"the evidence exceeds {MAX_EVIDENCE_SIZE} bytes")
            verified = self._evidence.verify_certificate(
                evidence, expected_nonce=statement_digest(statement)
            )
            if not hmac.compare_digest(bytes.fromhex(verified.public_key_sha256), key_sha256):
                raise KeyBindingError(
                    "the evidence vouches for another key than the CSR's",
                    got=verified.public_key_sha256,
                    expected=key_sha256.hex(),
                )
        # 7. The enclave is the one pinned for the claimed id: the policy allows a set of
        #    enclaves, and one of them must not take another member's id.
        if verified is not None and config.pinned_mrenclave is not None:
            expected_mrenclave = config.pinned_mrenclave(party_id)
            if expected_mrenclave is not None and not hmac.compare_digest(
                verified.identity.mr_enclave, expected_mrenclave
            ):
                raise MrEnclaveError(
                    f"the enclave is not the one pinned for {party_id}",
                    got=verified.identity.mr_enclave.hex(),
                    expected=expected_mrenclave.hex(),
                )
        if verified is not None and config.member_policy is not None:
            own_policy = config.member_policy(party_id)
            if own_policy is not None:
                own_policy.verify(verified.identity)  # raises the failed check, as the policy
        # 8. Issue the certificate, then record the enrollment.
        issued = self._issue(party_id, public_key, verified)
        self._audit(EnrollmentRecord(at=self._clock(), identity=issued.identity))
        return issued

    def _issue(
        self, party_id: str, public_key: ECPublicKey, verified: VerifiedPeer | None
    ) -> IssuedCertificate:
        now = self._clock()
        ca_certificate = self.certificate
        not_after = min(
            now + self._config.client_certificate_lifetime, ca_certificate.not_valid_after_utc
        )
        evidence = verified.identity if verified is not None else None
        provisional = PeerIdentity(
            party_id=party_id,
            enrolled_by=self._config.method,
            authenticated=True,
            mrenclave=evidence.mr_enclave if evidence else None,
            mrsigner=evidence.mr_signer if evidence else None,
            simulated_evidence=evidence.simulated if evidence else None,
        )
        certificate = certs.build_certificate(
            subject=certs.make_name(
                party_id,
                organization="enclaverec party",
                unit="SIMULATED" if self._simulated else None,
            ),
            public_key=public_key,
            issuer=self._name,
            issuer_key=self._key,
            not_before=now - BACKDATE,
            not_after=not_after,
            is_ca=False,
            extensions=[
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
                (
                    x509.UnrecognizedExtension(
                        x509.ObjectIdentifier(ENROLLMENT_EXTENSION_OID),
                        _encode_enrollment_extension(provisional),
                    ),
                    False,
                ),
            ],
        )
        identity = self._identity_of(certificate)
        return IssuedCertificate(certificate, ca_certificate, identity)

    def identify(self, certificate: bytes | x509.Certificate) -> PeerIdentity:
        """The identity in a client certificate, if this CA issued it and it is valid now.

        The TLS stack has already checked the chain; this repeats the checks that matter
        (issuer signature, validity) so that a misconfigured server fails closed. The
        signature and the enrollment record of a certificate are checked once per distinct
        certificate (the same bytes cannot change); validity and membership at every call.
        """
        key = certificate if isinstance(certificate, bytes) else certs.certificate_der(certificate)
        checked = self._checked.get(key)
        if checked is None:
            if isinstance(certificate, bytes):
                certificate = certs.load_certificate(certificate, source="client certificate")
            # 1. Issued by this CA's key (and name).
            if not certs.is_signed_by(certificate, self.certificate):
                raise CertificateError(
                    "the client certificate was not issued by this attested CA",
                    got=_issuer_text(certificate),
                    expected=certs.subject_text(self.certificate),
                )
            checked = (certificate, self._identity_of(certificate))
            with self._lock:
                if len(self._checked) >= MAX_CHECKED_CERTIFICATES:
                    self._checked.clear()  # bounded: a renewal wave starts it afresh
                self._checked[key] = checked
        certificate, identity = checked
        now = self._clock()
        # 2. Valid now.
        try:
            not_before = certificate.not_valid_before_utc
            not_after = certificate.not_valid_after_utc
        except ValueError as exc:
            raise MalformedEvidenceError("the certificate's validity cannot be parsed") from exc
        if not not_before <= now <= not_after:
            raise CertificateError(
                "the client certificate is not valid now",
                got=f"valid {iso(not_before)} to {iso(not_after)}",
                expected=f"valid at {iso(now)}",
            )
        # 3. Its enrollment record (read above), and a party that is still listed.
        self._config.public_key(identity.party_id)
        return identity

    def _identity_of(self, certificate: x509.Certificate) -> PeerIdentity:
        try:
            extension = certificate.extensions.get_extension_for_oid(
                x509.ObjectIdentifier(ENROLLMENT_EXTENSION_OID)
            )
        except x509.ExtensionNotFound as exc:
            raise MalformedEvidenceError("the certificate has no enrollment extension") from exc
        except ValueError as exc:
            raise MalformedEvidenceError("the certificate's extensions cannot be parsed") from exc
        value = _decode_enrollment_extension(extension.value.value)
        try:
            party_id = check_party_id(str(value.get("party")))
            method = EnrollmentMethod(value.get("how"))
        except (MalformedInputError, ValueError) as exc:
            raise MalformedEvidenceError("the enrollment extension is malformed") from exc
        if method is EnrollmentMethod.DECLARED:
            raise MalformedEvidenceError("a certificate never records a declared identity")
        common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [attribute.value for attribute in common_names] != [party_id]:
            raise MalformedEvidenceError("the certificate's subject and enrollment disagree")
        mrenclave, mrsigner = value.get("mrenclave"), value.get("mrsigner")
        simulated = value.get("simulated")
        return PeerIdentity(
            party_id=party_id,
            enrolled_by=method,
            authenticated=True,
            certificate_sha256=hashlib.sha256(certs.certificate_der(certificate)).hexdigest(),
            certificate_serial=certificate.serial_number,
            not_after=certificate.not_valid_after_utc,
            mrenclave=mrenclave if isinstance(mrenclave, bytes) else None,
            mrsigner=mrsigner if isinstance(mrsigner, bytes) else None,
            simulated_evidence=simulated if isinstance(simulated, bool) else None,
        )


def _issuer_text(certificate: x509.Certificate) -> str:
    try:
        return certificate.issuer.rfc4514_string()
    except ValueError:
        return "an unparsable issuer"
