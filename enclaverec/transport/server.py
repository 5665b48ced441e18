"""The server side of attested gRPC: sealed keys, rotating RA-TLS certificates, the attested
CA, an enrollment port and a mutual-TLS application port.

Two ports, on purpose. Python gRPC either requires a client certificate on a port or does
not ask for one at all (``require_client_auth=False`` never requests it, so the auth
context would hold no certificate even from an enrolled client; checked with grpcio
1.85). The enrollment RPCs must be reachable before a client has a certificate, so they get
a port with server authentication only; the application services get a port whose TLS
layer refuses every client without a certificate from the attested CA, so no servicer can
forget the check. ``docs/channels.md`` has the whole argument.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc

from enclaverec.crypto.signing import ECPrivateKey
from enclaverec.errors import (
    ConfigError,
    MalformedInputError,
    PeerNotAttestedError,
    TransportError,
    UsageError,
    VerificationError,
)
from enclaverec.tee.attested_ca import (
    AttestedCA,
    AuditHook,
    EnrollmentConfig,
    PeerIdentity,
    check_party_id,
)
from enclaverec.tee.backend import EvidenceBackend
from enclaverec.tee.ratls import RATLSCert
from enclaverec.tee.sealed_keys import load_or_create_sealed_key
from enclaverec.tee.verifier import iso
from enclaverec.tee.verifier_context import Clock, VerifierContext, system_clock
from enclaverec.transport.endpoints import ServerEndpoints, is_loopback
from enclaverec.transport.enrollment import EnrollmentServicer
from enclaverec.transport.proto import enrollment_pb2_grpc

log = logging.getLogger(__name__)

TLS_KEY_NAME = "tls"
CA_KEY_NAME = "ca"
DEFAULT_CERTIFICATE_LIFETIME = dt.timedelta(hours=1)
DEFAULT_RENEW_BEFORE = dt.timedelta(minutes=15)
PARTY_ID_METADATA = "enclaverec-party-id"
"""Metadata key in which a plaintext-baseline client declares its party id."""
ENROLLMENT_MAX_MESSAGE_BYTES = 256 * 1024
"""Enrollment messages hold a CSR and an RA-TLS certificate (a few KiB); anyone can reach
the enrollment port, so it refuses anything larger before parsing it."""

ServerOption = tuple[str, Any]
BASE_SERVER_OPTIONS: tuple[ServerOption, ...] = (
    # gRPC sets SO_REUSEPORT by default: a second process could then bind the same port
    # and receive some of the connections. Refuse to share the port.
    ("grpc.so_reuseport", 0),
)


@dataclass(frozen=True)
class ServerIdentityConfig:
    """Where the server keeps its sealed keys and how its RA-TLS certificate rotates."""

    state_dir: Path
    certificate_lifetime: dt.timedelta = DEFAULT_CERTIFICATE_LIFETIME
    renew_before: dt.timedelta = DEFAULT_RENEW_BEFORE
    common_name: str = "RATLS"
    legacy_extension: bool = False
    """Also emit Gramine's legacy RA-TLS extension (for old Gramine verifiers)."""

    def __post_init__(self) -> None:
        if self.certificate_lifetime <= dt.timedelta(0):
            raise ConfigError("the certificate lifetime must be positive")
        if not dt.timedelta(0) <= self.renew_before < self.certificate_lifetime:
            raise ConfigError("renew_before must be at least 0 and below the lifetime")


class ServerIdentity:
    """An enclave server's TLS key and CA key (sealed), and its current RA-TLS certificate.

    At start the two P-256 keys are unsealed from ``state_dir`` (or made and sealed there),
    and a fresh RA-TLS certificate with a fresh quote is made for the TLS key. The
    certificate is renewed when less than ``renew_before`` of it remains; the credentials
    from :meth:`credentials` pick the new one up at the next TLS handshake.

    Security: the private keys never leave this object except as PEM handed to gRPC in
    this process; they are on disk only sealed.
    """

    def __init__(
        self,
        backend: EvidenceBackend,
        config: ServerIdentityConfig,
        *,
        clock: Clock = system_clock,
    ) -> None:
        self._backend = backend
        self._config = config
        self._clock = clock
        self._tls_key = load_or_create_sealed_key(backend, config.state_dir, TLS_KEY_NAME)
        self._ca_key = load_or_create_sealed_key(backend, config.state_dir, CA_KEY_NAME)
        self._lock = threading.Lock()
        self._recent: dict[bytes, dt.datetime] = {}
        self._current = self._make_certificate()

    @property
    def backend(self) -> EvidenceBackend:
        return self._backend

    @property
    def simulated(self) -> bool:
        return self._backend.simulated

    @property
    def ca_key(self) -> ECPrivateKey:
        """The attested CA's private key. Security: hand it only to :class:`AttestedCA`."""
        return self._ca_key.private_key

    @property
    def certificate(self) -> RATLSCert:
        with self._lock:
            return self._current

    @property
    def certificate_sha256(self) -> bytes:
        return hashlib.sha256(self.certificate.der).digest()

    def _make_certificate(self) -> RATLSCert:
        cert = RATLSCert.create(
            self._backend,
            self._tls_key.private_key,
            validity=self._config.certificate_lifetime,
            common_name=self._config.common_name,
            legacy_extension=self._config.legacy_extension,
            now=self._clock(),
        )
        digest = hashlib.sha256(cert.der).digest()
        self._recent[digest] = cert.not_after
        log.info(
            "RA-TLS certificate sha256 %s for TLS key %s, valid until %s%s",
            digest.hex(),
            self._tls_key.fingerprint,
            iso(cert.not_after),
            " (SIMULATED evidence)" if cert.simulated else "",
        )
        return cert

    def rotate(self) -> RATLSCert:
        """Make a new certificate now (same key, fresh quote)."""
        with self._lock:
            self._current = self._make_certificate()
            return self._current

    def renew_if_due(self) -> bool:
        """Renew the certificate if less than ``renew_before`` of it remains."""
        with self._lock:
            if self._current.not_after - self._clock() > self._config.renew_before:
                return False
            self._current = self._make_certificate()
            return True

    def accepted_certificate_digests(self) -> frozenset[bytes]:
        """SHA-256 of this server's certificates that are still valid: an enrollment
        statement may name any of them (a client may have pinned the previous one just
        before a renewal)."""
        now = self._clock()
        with self._lock:
            for digest in [d for d, until in self._recent.items() if until < now]:
                del self._recent[digest]
            return frozenset(self._recent)

    def credentials(
        self, *, client_ca: Callable[[], bytes] | None = None
    ) -> grpc.ServerCredentials:
        """Server credentials presenting the current RA-TLS certificate, renewed in place.

        With ``client_ca`` (returning the attested CA's PEM certificate), every client must
        present a certificate issued by that CA (mutual TLS); without it, no client
        certificate is asked for (the enrollment port).
        """
        cert, root = self.certificate, client_ca() if client_ca is not None else None
        last = [(cert.der, root)]
        lock = threading.Lock()

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by gRPC before each TLS handshake; None keeps the current
            # configuration. An error here must not break the server: an unrenewed
            # certificate expires and clients then refuse it (fail closed).
            try:
                self.renew_if_due()
                cert, root = self.certificate, client_ca() if client_ca is not None else None
            except Exception:  # noqa: BLE001 - see above
                log.exception("could not renew the server certificate; keeping the current one")
                return None
            with lock:
                if (cert.der, root) == last[0]:
                    return None
                last[0] = (cert.der, root)
            return _configuration(cert, root)

        return grpc.dynamic_ssl_server_credentials(
            _configuration(cert, root), fetch, require_client_authentication=client_ca is not None
        )


def _configuration(cert: RATLSCert, root: bytes | None) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(cert.private_key_pem(), cert.pem)], root_certificates=root
    )


@dataclass(frozen=True)
class ListenConfig:
    """Where and how the server listens. Port 0 picks a free port."""

    host: str = "127.0.0.1"
    application_port: int = 0
    enrollment_port: int = 0
    max_workers: int = 8
    enrollment_workers: int = 2

    def __post_init__(self) -> None:
        for name in ("application_port", "enrollment_port"):
            port = getattr(self, name)
            if isinstance(port, bool) or not 0 <= port < 65536:
                raise ConfigError(f"{name} must be 0 to 65535, got {port!r}")
        if self.max_workers < 1 or self.enrollment_workers < 1:
            raise ConfigError("a server needs at least one worker thread")


def _bind(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise TransportError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise TransportError(f"cannot listen on {address}")
    return port


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    # context.abort raises; should a test double return instead, still refuse.
    raise PeerNotAttestedError(message)


class _CertificateAuthenticator:
    def __init__(self, ca: AttestedCA) -> None:
        self._ca = ca

    def identify(self, context: grpc.ServicerContext) -> PeerIdentity:
        auth = context.auth_context()
        pem = auth.get("x509_pem_cert")
        if auth.get("transport_security_type") != [b"ssl"] or not pem:
            _abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "no verified client certificate (enroll with the attested CA first)",
            )
        try:
            return self._ca.identify(pem[0])
        except (VerificationError, MalformedInputError) as exc:
            check = getattr(exc, "check", "malformed")
            _abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                f"client certificate refused ({check}): {exc}",
            )


class _DeclaredAuthenticator:
    def __init__(self, parties: frozenset[str] | None) -> None:
        self._parties = parties

    def identify(self, context: grpc.ServicerContext) -> PeerIdentity:
        declared = [v for k, v in context.invocation_metadata() if k == PARTY_ID_METADATA]
        if len(declared) != 1 or not isinstance(declared[0], str):
            _abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                f"declare exactly one party id in the {PARTY_ID_METADATA} metadata",
            )
        if self._parties is not None and declared[0] not in self._parties:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, "the party is not in the membership")
        try:
            return PeerIdentity.declared(declared[0])
        except MalformedInputError as exc:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))


class AttestedServer:
    """An enrollment port and an application port, with one authenticated way to ask who
    the peer of an application call is (:meth:`peer_identity`).

    Add the application servicers to :attr:`application_server` before :meth:`start`.
    Make one with :meth:`create` (attested) or :meth:`unsafe_plaintext_baseline`.
    """

    def __init__(
        self,
        *,
        listen: ListenConfig,
        authenticator: _CertificateAuthenticator | _DeclaredAuthenticator,
        application_credentials: grpc.ServerCredentials | None,
        enrollment: tuple[grpc.Server, grpc.ServerCredentials] | None,
        identity: ServerIdentity | None,
        ca: AttestedCA | None,
        application_options: Sequence[ServerOption],
    ) -> None:
        self._listen = listen
        self._authenticator = authenticator
        self._application_credentials = application_credentials
        self._enrollment = enrollment
        self._identity = identity
        self._ca = ca
        self.application_server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=listen.max_workers, thread_name_prefix="enclaverec-app"
            ),
            options=[*BASE_SERVER_OPTIONS, *application_options],
        )
        self._endpoints: ServerEndpoints | None = None

    @classmethod
    def create(
        cls,
        identity: ServerIdentity,
        enrollment: EnrollmentConfig,
        listen: ListenConfig,
        *,
        evidence_verification: VerifierContext | None = None,
        audit: AuditHook | None = None,
        refused: Callable[[str, str, str], None] | None = None,
        clock: Clock = system_clock,
        application_options: Sequence[ServerOption] = (),
    ) -> AttestedServer:
        """An attested server: RA-TLS on both ports, mutual TLS on the application port.

        ``evidence_verification`` verifies joiners' evidence against the joiners' policy
        (required when ``enrollment.require_evidence``); ``audit`` receives one record per
        certificate issued; ``refused`` (claimed party id, check, detail) one per refused
        enrollment.
        """
        ca = AttestedCA(
            identity.ca_key,
            enrollment,
            server_certificates=identity.accepted_certificate_digests,
            evidence_verification=evidence_verification,
            audit=audit,
            clock=clock,
            simulated=identity.simulated,
        )
        enrollment_server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=listen.enrollment_workers, thread_name_prefix="enclaverec-enroll"
            ),
            options=[
                *BASE_SERVER_OPTIONS,
                ("grpc.max_receive_message_length", ENROLLMENT_MAX_MESSAGE_BYTES),
            ],
        )
        enrollment_pb2_grpc.add_EnrollmentServicer_to_server(
            EnrollmentServicer(ca, on_refused=refused), enrollment_server
        )
        return cls(
            listen=listen,
            authenticator=_CertificateAuthenticator(ca),
            application_credentials=identity.credentials(client_ca=lambda: ca.certificate_pem),
            enrollment=(enrollment_server, identity.credentials()),
            identity=identity,
            ca=ca,
            application_options=application_options,
        )

    @classmethod
    def unsafe_plaintext_baseline(
        cls,
        listen: ListenConfig,
        *,
        parties: Collection[str] | None = None,
        application_options: Sequence[ServerOption] = (),
    ) -> AttestedServer:
        """UNSAFE, for the ``--tee none`` measurement baseline only: plaintext gRPC on
        loopback, no attestation, no enrollment; a peer's identity is the party id it
        declares (checked against ``parties`` when given).

        Security: anyone on the machine can connect and claim any party id. Binding a
        non-loopback address is refused.
        """
        if not is_loopback(listen.host):
            raise UsageError(
                f"the plaintext baseline (--tee none) listens on loopback only, not {listen.host}"
            )
        allowed = None
        if parties is not None:
            allowed = frozenset(check_party_id(party) for party in parties)
        return cls(
            listen=listen,
            authenticator=_DeclaredAuthenticator(allowed),
            application_credentials=None,
            enrollment=None,
            identity=None,
            ca=None,
            application_options=application_options,
        )

    @property
    def attested(self) -> bool:
        return self._identity is not None

    @property
    def identity(self) -> ServerIdentity | None:
        return self._identity

    @property
    def ca(self) -> AttestedCA | None:
        return self._ca

    @property
    def enrollment_server(self) -> grpc.Server | None:
        """The enrollment port's server (RA-TLS, no client certificate asked), for services
        that callers without an enclave certificate must reach, such as an owner who
        proves itself by a signature. Add them before :meth:`start`. None in the
        baseline, which has no enrollment port.

        Security: anything added here is reachable by anyone who can reach the port; each
        RPC must authenticate its caller itself.
        """
        return self._enrollment[0] if self._enrollment is not None else None

    @property
    def endpoints(self) -> ServerEndpoints:
        if self._endpoints is None:
            raise UsageError("the server has not been started")
        return self._endpoints

    def start(self) -> ServerEndpoints:
        """Bind both ports and start serving; returns the bound ports."""
        host = self._listen.host
        if self._enrollment is None:
            log.warning(
                "UNSAFE --tee none baseline: plaintext gRPC on %s, no attestation, no "
                "encryption; peers merely declare their party id. A measurement baseline, "
                "not a deployment mode.",
                host,
            )
        application_port = _bind(
            self.application_server,
            _bind_address(host, self._listen.application_port),
            self._application_credentials,
        )
        enrollment_port = None
        if self._enrollment is not None:
            server, credentials = self._enrollment
            enrollment_port = _bind(
                server, _bind_address(host, self._listen.enrollment_port), credentials
            )
            server.start()
        self.application_server.start()
        self._endpoints = ServerEndpoints(host, application_port, enrollment_port)
        log.info(
            "listening on %s: application port %d%s",
            host,
            application_port,
            f", enrollment port {enrollment_port}" if enrollment_port else "",
        )
        return self._endpoints

    def peer_identity(self, context: grpc.ServicerContext) -> PeerIdentity:
        """Who called this application RPC. Aborts the call with UNAUTHENTICATED if the
        peer has no valid client certificate from this server's CA (or, in the baseline,
        no declared party id); never returns an unauthenticated identity in attested
        mode."""
        return self._authenticator.identify(context)

    def stop(self, grace: float | None = None) -> None:
        events = [self.application_server.stop(grace)]
        if self._enrollment is not None:
            events.append(self._enrollment[0].stop(grace))
        for event in events:
            event.wait()

    def __enter__(self) -> AttestedServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop(None)


def _bind_address(host: str, port: int) -> str:
    # Unlike a target, a bind address may have port 0 (pick a free one).
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"
