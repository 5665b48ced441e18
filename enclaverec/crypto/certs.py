"""X.509 certificates and CRLs with ``cryptography``: building, loading and signature checks.

The TEE layer builds the simulation PKI and RA-TLS certificates through these helpers, so
that the hazmat layer (hash objects, signature algorithms) stays inside ``crypto``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from enclaverec.errors import MalformedEvidenceError

Certificate = x509.Certificate
PublicKey = CertificatePublicKeyTypes
"""Any public key a certificate can hold."""
ExtensionSpec = tuple[x509.ExtensionType, bool]
"""An extension value and its ``critical`` flag."""


def make_name(
    common_name: str, *, organization: str | None = None, unit: str | None = None
) -> x509.Name:
    """A distinguished name: CN, then O and OU when given."""
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    if unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    return x509.Name(attributes)


def build_certificate(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    is_ca: bool,
    path_length: int | None = None,
    extensions: Sequence[ExtensionSpec] = (),
) -> x509.Certificate:
    """Build and sign (ECDSA-SHA256) a certificate.

    CA certificates get key usage certificate-sign and CRL-sign, others digital-signature
    only; both get subject and authority key identifiers, as RFC 5280 §4.2.1.1-2 asks.
    """
    if is_ca:
        key_usage = x509.KeyUsage(
            digital_signature=False,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
    else:
        key_usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None),
            critical=True,
        )
        .add_extension(key_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def build_crl(
    *,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    this_update: dt.datetime,
    next_update: dt.datetime,
    number: int = 1,
) -> bytes:
    """An empty CRL (nothing revoked) signed by ``issuer_key``, DER-encoded."""
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.DER)


def load_crl(der: bytes, *, source: str = "CRL") -> x509.CertificateRevocationList:
    """Parse a DER CRL; a malformed one is :class:`MalformedEvidenceError`."""
    try:
        return x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise MalformedEvidenceError(f"{source}: not a DER CRL") from exc


def certificate_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def load_certificate(data: bytes, *, source: str = "certificate") -> x509.Certificate:
    """Parse one certificate, PEM or DER."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise MalformedEvidenceError(f"{source}: not an X.509 certificate") from exc


def load_pem_chain(data: bytes, *, source: str = "certificate chain") -> list[x509.Certificate]:
    """Parse every certificate of a PEM chain, in order; an empty chain is malformed."""
    try:
        chain = x509.load_pem_x509_certificates(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise MalformedEvidenceError(f"{source}: not a PEM certificate chain") from exc
    if not chain:
        raise MalformedEvidenceError(f"{source}: no certificate")
    return chain


def spki_der(certificate: x509.Certificate) -> bytes:
    """The certificate's DER SubjectPublicKeyInfo (what RA-TLS hashes into REPORT_DATA)."""
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise MalformedEvidenceError("the certificate's public key cannot be read") from exc
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def subject_text(certificate: x509.Certificate) -> str:
    """The subject as an RFC 4514 string. ``cryptography`` parses names lazily, so a
    malformed name surfaces here, as :class:`MalformedEvidenceError`."""
    try:
        return certificate.subject.rfc4514_string()
    except ValueError as exc:
        raise MalformedEvidenceError("the certificate's subject cannot be parsed") from exc


def is_signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s key signed ``certificate`` and the names chain (RFC 5280 §6.1.3).

    For a self-signed certificate pass it as both arguments.
    """
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True
