"""RA-TLS certificates: a TLS key made in the enclave, vouched for by a quote in its certificate.

Format (Gramine's RA-TLS since v1.8, TCG DICE "tagged evidence"): the short-lived,
self-signed certificate carries, under OID ``2.23.133.5.4.9``, the CBOR value
``60000([quote, claims])`` where ``claims`` is the CBOR encoding of
``{"pubkey-hash": [1, SHA-256(DER SubjectPublicKeyInfo)], "nonce": bytes}`` (nonce
optional; ``1`` is SHA-256 in the IANA named-information registry) and the quote's
REPORT_DATA is SHA-256(claims) followed by 32 zero bytes. Optionally the certificate also
carries Gramine's legacy extension ``1.2.840.113741.1337.6``: a raw quote whose REPORT_DATA
is SHA-256(DER SubjectPublicKeyInfo) then zeros.

Security: verification binds three things, each with its own error: the quote verifies and
satisfies the policy; REPORT_DATA is the hash of exactly these claims (``ReportDataError``);
the claims name this certificate's key (``KeyBindingError``); and, when the verifier sent
a nonce, the claims carry it (``NonceError``). The certificate's own signature and validity
are checked too (``CertificateError``). TLS then proves the peer holds the key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cbor2
from cryptography import x509

from enclaverec.crypto import certs
from enclaverec.crypto.keys import public_key_der
from enclaverec.crypto.signing import ECPrivateKey, private_key_to_pem
from enclaverec.errors import (
    CertificateError,
    KeyBindingError,
    MalformedEvidenceError,
    NonceError,
    ReportDataError,
    UsageError,
)
from enclaverec.tee.backend import EvidenceBackend
from enclaverec.tee.collateral import CollateralProvider
from enclaverec.tee.verifier import DCAPVerifier, VerifiedQuote, iso, to_datetime

if TYPE_CHECKING:
    from enclaverec.tee.policy import Policy

TCG_DICE_TAGGED_EVIDENCE_OID = "2.23.133.5.4.9"
GRAMINE_LEGACY_QUOTE_OID = "1.2.840.113741.1337.6"
TEE_QUOTE_CBOR_TAG = 60000
"""IANA CBOR tag for an Intel TEE quote as tagged evidence."""
IANA_HASH_SHA256 = 1
"""SHA-256 in the IANA "Named Information Hash Algorithm Registry"."""
CLAIM_PUBKEY_HASH = "pubkey-hash"
CLAIM_NONCE = "nonce"
DEFAULT_VALIDITY = dt.timedelta(hours=1)
DEFAULT_COMMON_NAME = "RATLS"
BACKDATE = dt.timedelta(minutes=5)
"""Certificates start a little early so that a peer whose clock lags accepts them."""
MAX_NONCE_SIZE = 64


def encode_claims(spki_der: bytes, nonce: bytes | None = None) -> bytes:
    """The CBOR claims map (canonical encoding, so the same claims give the same bytes)."""
    claims: dict[str, object] = {
        CLAIM_PUBKEY_HASH: [IANA_HASH_SHA256, hashlib.sha256(spki_der).digest()]
    }
    if nonce is not None:
        claims[CLAIM_NONCE] = nonce
    return cbor2.dumps(claims, canonical=True)


def report_data_for_claims(claims: bytes) -> bytes:
    """REPORT_DATA of a TCG DICE evidence: SHA-256(claims) then 32 zero bytes."""
    return hashlib.sha256(claims).digest() + bytes(32)


def report_data_for_key(spki_der: bytes) -> bytes:
    """REPORT_DATA of Gramine's legacy extension: SHA-256(SPKI) then 32 zero bytes."""
    return hashlib.sha256(spki_der).digest() + bytes(32)


@dataclass(frozen=True)
class Claims:
    """Decoded claims: the hash of the key they vouch for, and the nonce if any."""

    pubkey_sha256: bytes
    nonce: bytes | None


def decode_claims(claims: bytes) -> Claims:
    """Decode a claims map. Also accepts Gramine's form, where ``pubkey-hash`` is a byte
    string holding the CBOR-encoded ``[1, hash]`` array."""
    try:
        decoded = cbor2.loads(claims)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise MalformedEvidenceError("RA-TLS claims are not CBOR") from exc
    if not isinstance(decoded, dict):
        raise MalformedEvidenceError("RA-TLS claims are not a CBOR map")
    entry = decoded.get(CLAIM_PUBKEY_HASH)
    if isinstance(entry, bytes):
        try:
            entry = cbor2.loads(entry)
        except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
            raise MalformedEvidenceError("RA-TLS pubkey-hash is not CBOR") from exc
    if not (isinstance(entry, list | tuple) and len(entry) == 2 and isinstance(entry[1], bytes)):
        raise MalformedEvidenceError("RA-TLS claims lack a [algorithm, hash] pubkey-hash")
    if entry[0] != IANA_HASH_SHA256 or len(entry[1]) != 32:
        raise MalformedEvidenceError(
            f"RA-TLS pubkey-hash uses hash algorithm {entry[0]!r}; only SHA-256 (1) is accepted"
        )
    nonce = decoded.get(CLAIM_NONCE)
    if nonce is not None and not isinstance(nonce, bytes):
        raise MalformedEvidenceError("RA-TLS nonce is not a byte string")
    return Claims(pubkey_sha256=entry[1], nonce=nonce)


@dataclass(frozen=True)
class Evidence:
    """What an RA-TLS certificate carries: a quote, and the claims when in TCG form."""

    quote: bytes = field(repr=False)
    claims: bytes | None = field(repr=False)
    kind: str
    """``tcg-dice`` or ``gramine-legacy``."""


def extract_evidence(certificate: x509.Certificate) -> Evidence:
    """The evidence of an RA-TLS certificate: the TCG DICE extension if present, otherwise
    Gramine's legacy one. Nothing is verified here."""
    try:
        extensions = {ext.oid.dotted_string: ext.value for ext in certificate.extensions}
    except ValueError as exc:
        # cryptography parses extensions lazily; a malformed one surfaces here.
        raise MalformedEvidenceError("the certificate's extensions cannot be parsed") from exc
    tagged = extensions.get(TCG_DICE_TAGGED_EVIDENCE_OID)
    if tagged is not None:
        try:
            value = cbor2.loads(tagged.value)
        except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
            raise MalformedEvidenceError("the tagged-evidence extension is not CBOR") from exc
        if not isinstance(value, cbor2.CBORTag) or value.tag != TEE_QUOTE_CBOR_TAG:
            raise MalformedEvidenceError(
                f"the tagged-evidence extension is not CBOR tag {TEE_QUOTE_CBOR_TAG}"
            )
        item = value.value
        if not (
            # cbor2 decodes an array inside a tag as a tuple.
            isinstance(item, list | tuple)
            and len(item) == 2
            and all(isinstance(part, bytes) and part for part in item)
        ):
            raise MalformedEvidenceError("tagged evidence is not [quote, claims] byte strings")
        return Evidence(quote=item[0], claims=item[1], kind="tcg-dice")
    legacy = extensions.get(GRAMINE_LEGACY_QUOTE_OID)
    if legacy is not None:
        return Evidence(quote=legacy.value, claims=None, kind="gramine-legacy")
    raise MalformedEvidenceError(
        f"no attestation evidence in the certificate (neither {TCG_DICE_TAGGED_EVIDENCE_OID} "
        f"nor {GRAMINE_LEGACY_QUOTE_OID})"
    )


@dataclass(frozen=True)
class RATLSCert:
    """An RA-TLS certificate and its private key.

    Security: the private key never leaves the process that made it (the enclave); the
    ``repr`` omits it, and :meth:`private_key_pem` exists only to hand it to the local TLS
    stack (gRPC takes PEM bytes).
    """

    certificate: x509.Certificate = field(repr=False)
    private_key: ECPrivateKey = field(repr=False)
    nonce: bytes | None = field(repr=False)
    not_after: dt.datetime
    simulated: bool

    @classmethod
    def create(
        cls,
        backend: EvidenceBackend,
        private_key: ECPrivateKey,
        *,
        nonce: bytes | None = None,
        validity: dt.timedelta = DEFAULT_VALIDITY,
        common_name: str = DEFAULT_COMMON_NAME,
        dns_names: Sequence[str] = (),
        legacy_extension: bool = False,
        now: dt.datetime | None = None,
    ) -> RATLSCert:
        """Make the certificate for ``private_key`` with a fresh quote from ``backend``.

        ``dns_names`` go into a subject alternative name extension (with the common name
        when empty, which lets gRPC's ``ssl_target_name_override`` match it).
        """
        if validity <= dt.timedelta(0):
            raise UsageError("a certificate's validity must be positive")
        if nonce is not None and not 0 < len(nonce) <= MAX_NONCE_SIZE:
            raise UsageError(f"a nonce has 1 to {MAX_NONCE_SIZE} bytes")
        moment = to_datetime(now) if now is not None else dt.datetime.now(dt.UTC)
        public_key = private_key.public_key()
        spki = public_key_der(public_key)
        claims = encode_claims(spki, nonce)
        quote = backend.quote(report_data_for_claims(claims))
        evidence = cbor2.dumps(cbor2.CBORTag(TEE_QUOTE_CBOR_TAG, [quote, claims]))
        extensions: list[certs.ExtensionSpec] = [
            # Not critical: a TLS stack that does not know the OID must still accept the
            # certificate, since we pin it and verify the evidence ourselves.
            (
                x509.UnrecognizedExtension(
                    x509.ObjectIdentifier(TCG_DICE_TAGGED_EVIDENCE_OID), evidence
                ),
                False,
            ),
            (
                x509.SubjectAlternativeName(
                    [x509.DNSName(name) for name in (dns_names or [common_name])]
                ),
                False,
            ),
            (
                x509.ExtendedKeyUsage(
                    [
                        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
                    ]
                ),
                False,
            ),
        ]
        if legacy_extension:
            legacy_quote = backend.quote(report_data_for_key(spki))
            extensions.append(
                (
                    x509.UnrecognizedExtension(
                        x509.ObjectIdentifier(GRAMINE_LEGACY_QUOTE_OID), legacy_quote
                    ),
                    False,
                )
            )
        name = certs.make_name(
            common_name,
            organization="enclaverec",
            unit="SIMULATED" if backend.simulated else None,
        )
        not_after = moment + validity
        certificate = certs.build_certificate(
            subject=name,
            public_key=public_key,
            issuer=name,
            issuer_key=private_key,
            not_before=moment - BACKDATE,
            not_after=not_after,
            is_ca=False,
            extensions=extensions,
        )
        return cls(
            certificate=certificate,
            private_key=private_key,
            nonce=nonce,
            not_after=not_after,
            simulated=backend.simulated,
        )

    @property
    def der(self) -> bytes:
        return certs.certificate_der(self.certificate)

    @property
    def pem(self) -> bytes:
        return certs.certificate_pem(self.certificate)

    def private_key_pem(self) -> bytes:
        """The private key as unencrypted PEM, for the local TLS stack only.

        Security: never write it to disk unsealed, log it or send it anywhere.
        """
        return private_key_to_pem(self.private_key)


@dataclass(frozen=True)
class VerifiedPeer:
    """A peer whose RA-TLS certificate verified: its enclave identity and its TLS key."""

    identity: VerifiedQuote
    certificate: x509.Certificate = field(repr=False)
    public_key_sha256: str
    nonce: bytes | None = field(repr=False)
    evidence_kind: str

    @property
    def certificate_der(self) -> bytes:
        """The exact certificate to pin as the TLS root for this peer (attest-then-pin)."""
        return certs.certificate_der(self.certificate)

    @property
    def certificate_pem(self) -> bytes:
        return certs.certificate_pem(self.certificate)

    @property
    def public_key(self) -> certs.PublicKey:
        """The key the evidence vouches for (the peer proves possession in the TLS
        handshake)."""
        return self.certificate.public_key()


def verify_ratls_certificate(
    certificate: bytes | x509.Certificate,
    verifier: DCAPVerifier,
    collateral_provider: CollateralProvider,
    policy: Policy,
    *,
    now: int | dt.datetime,
    expected_nonce: bytes | None = None,
) -> VerifiedPeer:
    """Verify an RA-TLS certificate (DER or PEM bytes, or a parsed certificate).

    Returns the verified peer, or raises the error of the check that refused.
    """
    moment = to_datetime(now)
    # 1. Parse the certificate.
    if isinstance(certificate, bytes):
        certificate = certs.load_certificate(certificate, source="RA-TLS certificate")
    # 2. It must be valid now, and signed by its own key.
    try:
        not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    except ValueError as exc:
        raise MalformedEvidenceError("the certificate's validity cannot be parsed") from exc
    if not not_before <= moment <= not_after:
        raise CertificateError(
            "the RA-TLS certificate is not valid at the verification time",
            got=f"valid {iso(not_before)} to {iso(not_after)}",
            expected=f"valid at {iso(moment)}",
        )
    if not certs.is_signed_by(certificate, certificate):
        raise CertificateError(
            "the RA-TLS certificate is not signed by its own key",
            got="a signature by another key",
            expected="self-signed",
        )
    spki_sha256 = hashlib.sha256(certs.spki_der(certificate)).digest()
    # 3. Extract the evidence (quote and claims).
    evidence = extract_evidence(certificate)
    claims = decode_claims(evidence.claims) if evidence.claims is not None else None
    # 4. Verify the quote under the trust roots, collateral and policy.
    identity = verifier.verify(
        evidence.quote, collateral_provider.collateral_for(evidence.quote), policy, now=moment
    )
    # 5. REPORT_DATA must bind the claims, and the claims this certificate's key.
    if claims is not None:
        expected_report_data = report_data_for_claims(evidence.claims or b"")
        if not hmac.compare_digest(identity.report_data, expected_report_data):
            raise ReportDataError(
                "REPORT_DATA is not the hash of the certificate's claims",
                got=identity.report_data.hex(),
                expected=expected_report_data.hex(),
            )
        if not hmac.compare_digest(claims.pubkey_sha256, spki_sha256):
            raise KeyBindingError(
                "the evidence vouches for another key than this certificate's",
                got=claims.pubkey_sha256.hex(),
                expected=spki_sha256.hex(),
            )
    else:
        expected_report_data = spki_sha256 + bytes(32)
        if not hmac.compare_digest(identity.report_data, expected_report_data):
            raise KeyBindingError(
                "the legacy quote vouches for another key than this certificate's",
                got=identity.report_data[:32].hex(),
                expected=spki_sha256.hex(),
            )
    # 6. Freshness: the verifier's nonce must be in the claims.
    nonce = claims.nonce if claims is not None else None
    if expected_nonce is not None:
        if nonce is None:
            raise NonceError(
                "the evidence carries no nonce", got="no nonce", expected=expected_nonce.hex()
            )
        if not hmac.compare_digest(nonce, expected_nonce):
            raise NonceError(
                "the evidence carries another nonce", got=nonce.hex(), expected=expected_nonce.hex()
            )
    return VerifiedPeer(
        identity=identity,
        certificate=certificate,
        public_key_sha256=spki_sha256.hex(),
        nonce=nonce,
        evidence_kind=evidence.kind,
    )
