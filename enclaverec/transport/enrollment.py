"""The enrollment RPCs: the attested CA's servicer, and the client that enrolls with it.

The client runs over a channel pinned to the server certificate it verified
(``enclaverec.transport.channel``), so it sends its proofs only to the attested server; the
statement it proves names that certificate, so the proofs are worthless anywhere else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from enclaverec.crypto import certs
from enclaverec.crypto.keys import public_key_der
from enclaverec.crypto.signing import ECPrivateKey, generate_p256_key
from enclaverec.errors import (
    CertificateError,
    EnrollmentRefusedError,
    MalformedInputError,
    MembershipError,
    PeerNotAttestedError,
    TransportError,
    UsageError,
    VerificationError,
)
from enclaverec.tee.attested_ca import (
    AttestedCA,
    EnrollmentRequest,
    build_csr,
    check_party_id,
    enrollment_statement,
    sign_statement,
    statement_digest,
)
from enclaverec.tee.backend import EvidenceBackend
from enclaverec.tee.ratls import RATLSCert
from enclaverec.transport.channel import ClientIdentity
from enclaverec.transport.proto import enrollment_pb2, enrollment_pb2_grpc

log = logging.getLogger(__name__)

CHECK_METADATA = "enclaverec-check"
"""Trailing metadata naming the check that refused an enrollment (``membership``, ...)."""
MEMBERSHIP_REFUSAL = (
    "enrollment refused (membership): this party id and signature are not a member of "
    "this federation"
)
DEFAULT_EVIDENCE_VALIDITY = dt.timedelta(minutes=10)
DEFAULT_ENROLLMENT_TIMEOUT_SECONDS = 30.0


class EnrollmentServicer(enrollment_pb2_grpc.EnrollmentServicer):
    """Serves :class:`AttestedCA` over gRPC. Refusals are PERMISSION_DENIED with the check's
    name in the trailing metadata; malformed requests INVALID_ARGUMENT."""

    def __init__(
        self, ca: AttestedCA, *, on_refused: Callable[[str, str, str], None] | None = None
    ) -> None:
        self._ca = ca
        # Receives (claimed party id, check, detail) of every refusal: the owner's audit
        # log, which alone holds the detail of a membership refusal.
        self._on_refused = on_refused

    def Challenge(  # noqa: N802 - gRPC method name
        self, request: enrollment_pb2.ChallengeRequest, context: grpc.ServicerContext
    ) -> enrollment_pb2.ChallengeReply:
        challenge = self._ca.challenge()
        return enrollment_pb2.ChallengeReply(
            nonce=challenge.nonce, expires_unix=int(challenge.expires_at.timestamp())
        )

    def Enroll(  # noqa: N802 - gRPC method name
        self, request: enrollment_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> enrollment_pb2.EnrollReply:
        try:
            issued = self._ca.enroll(
                EnrollmentRequest(
                    party_id=request.party_id,
                    nonce=request.nonce,
                    csr_der=request.csr,
                    server_certificate_sha256=request.server_certificate_sha256,
                    membership_signature=request.membership_signature or None,
                    evidence_certificate_der=request.evidence_certificate or None,
                )
            )
        except (VerificationError, PeerNotAttestedError) as exc:
            check = exc.check if isinstance(exc, VerificationError) else "not_attested"
            if self._on_refused is not None:
                self._on_refused(request.party_id, check, str(exc))
            if isinstance(exc, MembershipError):
                # One answer for an unlisted id, a listed id with another key, and a key
                # claiming another member's id: the joiner learns nothing about the list.
                message = MEMBERSHIP_REFUSAL
            else:
                message = f"enrollment refused ({check}): {exc}"
            # The party id is only what the joiner claims; it is logged as such.
            log.warning("refused an enrollment claiming %r (%s)", request.party_id, check)
            context.set_trailing_metadata(((CHECK_METADATA, check),))
            context.abort(grpc.StatusCode.PERMISSION_DENIED, message)
        except MalformedInputError as exc:
            log.warning("refused a malformed enrollment request: %s", exc)
            context.set_trailing_metadata(((CHECK_METADATA, "malformed"),))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed enrollment request: {exc}")
        except TransportError as exc:
            # E.g. the PCCS could not be reached for the joiner's collateral.
            log.error("could not complete an enrollment: %s", exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, "enrollment temporarily unavailable")
        return enrollment_pb2.EnrollReply(
            certificate=issued.certificate_der,
            ca_certificate=certs.certificate_der(issued.ca_certificate),
        )


@dataclass(frozen=True)
class EnrollmentCredentials:
    """What a joiner proves with: its identity key (membership) and/or its enclave backend
    (evidence). The server's configuration decides which it checks; both are sent when
    present.

    Security: the identity key signs only enrollment statements, which name the pinned
    server certificate, the server's nonce and the new key; it never leaves this process.
    """

    party_id: str
    membership_key: ECPrivateKey | None = field(default=None, repr=False)
    backend: EvidenceBackend | None = field(default=None, repr=False)
    evidence_validity: dt.timedelta = DEFAULT_EVIDENCE_VALIDITY

    def __post_init__(self) -> None:
        check_party_id(self.party_id)
        if self.membership_key is None and self.backend is None:
            raise UsageError(
                "enrolling needs a membership key, an enclave backend for evidence, or both"
            )
        if self.evidence_validity <= dt.timedelta(0):
            raise UsageError("the evidence validity must be positive")


def _refusal(exc: grpc.RpcError) -> Exception:
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    trailing = exc.trailing_metadata() if callable(getattr(exc, "trailing_metadata", None)) else ()
    check = dict(trailing or ()).get(CHECK_METADATA, "enrollment")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return EnrollmentRefusedError(f"the server refused the enrollment: {details}", check=check)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return MalformedInputError(f"the server found the enrollment request malformed: {details}")
    return TransportError(f"enrollment failed: {code}: {details}")


def enroll(
    channel: grpc.Channel,
    server_certificate_sha256: bytes,
    credentials: EnrollmentCredentials,
    *,
    timeout: float = DEFAULT_ENROLLMENT_TIMEOUT_SECONDS,
) -> ClientIdentity:
    """Get a client certificate from the attested CA behind ``channel``.

    ``channel`` must be pinned to the verified server certificate whose SHA-256 is
    ``server_certificate_sha256`` (an :class:`~enclaverec.transport.channel.AttestedChannel`
    gives both). A new key is made here for every enrollment, so a renewal also renews the
    key. Raises ``EnrollmentRefusedError`` (with the server's check) when refused.
    """
    stub = enrollment_pb2_grpc.EnrollmentStub(channel)
    try:
        # 1. A fresh nonce from the server.
        challenge = stub.Challenge(enrollment_pb2.ChallengeRequest(), timeout=timeout)
        # 2. A new key, its CSR, and the statement binding nonce, server and key.
        key = generate_p256_key()
        csr = build_csr(key, credentials.party_id)
        key_sha256 = hashlib.sha256(public_key_der(key.public_key())).digest()
        statement = enrollment_statement(
            credentials.party_id, challenge.nonce, server_certificate_sha256, key_sha256
        )
        # 3. The proofs: a membership signature and/or evidence over the new key whose
        #    claims carry the statement's digest.
        signature = b""
        if credentials.membership_key is not None:
            signature = sign_statement(credentials.membership_key, statement)
        evidence = b""
        if credentials.backend is not None:
            evidence = RATLSCert.create(
                credentials.backend,
                key,
                nonce=statement_digest(statement),
                validity=credentials.evidence_validity,
                common_name=credentials.party_id,
            ).der
        reply = stub.Enroll(
            enrollment_pb2.EnrollRequest(
                party_id=credentials.party_id,
                nonce=challenge.nonce,
                csr=csr,
                server_certificate_sha256=server_certificate_sha256,
                membership_signature=signature,
                evidence_certificate=evidence,
            ),
            timeout=timeout,
        )
    except grpc.RpcError as exc:
        if callable(getattr(exc, "code", None)) and exc.code() == grpc.StatusCode.UNAVAILABLE:
            raise  # let AttestedChannel.call re-pin and retry
        raise _refusal(exc) from exc
    # 4. The certificate must be for our key and our party.
    certificate = certs.load_certificate(reply.certificate, source="issued client certificate")
    issued_key = certs.spki_der(certificate)
    if not hmac.compare_digest(issued_key, public_key_der(key.public_key())):
        raise CertificateError(
            "the issued certificate is for another key",
            got=hashlib.sha256(issued_key).hexdigest(),
            expected=key_sha256.hex(),
        )
    identity = ClientIdentity(
        party_id=credentials.party_id, private_key=key, certificate=certificate
    )
    log.info(
        "enrolled as %s: certificate serial %x until %s",
        credentials.party_id,
        identity.serial,
        identity.not_after.isoformat(),
    )
    return identity
