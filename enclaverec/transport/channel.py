"""Attest-then-pin: gRPC channels that accept exactly the server certificate the client verified.

Python gRPC has no certificate-verify callback (grpc issue 32635), so the client verifies
before it connects:

1. fetch the certificate the server presents, over a throw-away TLS connection that checks
   nothing (:func:`fetch_server_certificate`);
2. verify the RA-TLS evidence in it against the client's policy (:class:`ServerPin`);
3. open the gRPC channel with exactly that certificate as its only root, and its DNS name
   as ``grpc.ssl_target_name_override`` (:class:`AttestedChannel`). The handshake then
   proves that the server holds the key the evidence vouches for; a server presenting any
   other certificate, however valid, fails the handshake.

When a call fails as unavailable, the channel fetches the certificate again; if it changed
(a renewal, a restart), the new one is verified like the first before it replaces the pin,
and the call is tried once more. A certificate is never pinned without being verified.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from enclaverec.crypto import certs
from enclaverec.crypto.signing import ECPrivateKey, private_key_to_pem
from enclaverec.errors import MalformedEvidenceError, TransportError
from enclaverec.tee.ratls import VerifiedPeer
from enclaverec.tee.verifier_context import VerifierContext
from enclaverec.transport.endpoints import grpc_target

log = logging.getLogger(__name__)

T = TypeVar("T")
ChannelOption = tuple[str, Any]

DEFAULT_FETCH_TIMEOUT_SECONDS = 10.0
MAX_CERTIFICATE_SIZE = 64 * 1024
"""An RA-TLS certificate is about 6 KiB (a DCAP quote and its PCK chain); far more is not
one of ours."""

BASE_CHANNEL_OPTIONS: tuple[ChannelOption, ...] = (
    # A channel of its own per pin and identity: gRPC's global subchannel pool would
    # otherwise share connections between channels of different clients in one process.
    ("grpc.use_local_subchannel_pool", 1),
)


def fetch_server_certificate(
    host: str, port: int, *, timeout: float = DEFAULT_FETCH_TIMEOUT_SECONDS
) -> bytes:
    """The DER certificate that the server at ``host:port`` presents.

    Security: nothing is checked here, on purpose: the certificate is only a candidate,
    which :class:`ServerPin` verifies (its evidence) before any channel trusts it, and the
    gRPC handshake later proves the server holds its key. No data is sent on this
    connection.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # gRPC servers speak HTTP/2; offering it keeps a strict ALPN check from refusing us.
    context.set_alpn_protocols(["h2"])
    server_name = None if _is_ip_literal(host) else host
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(
            f"could not fetch the server certificate from {grpc_target(host, port)}: {exc}"
        ) from exc
    if not der:
        raise TransportError(f"{grpc_target(host, port)} presented no certificate")
    if len(der) > MAX_CERTIFICATE_SIZE:
        raise MalformedEvidenceError(
            f"the server certificate has {len(der)} bytes, more than {MAX_CERTIFICATE_SIZE}"
        )
    return der


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def tls_name(certificate: x509.Certificate) -> str:
    """The name to check the certificate against: its first DNS subject alternative name,
    else its common name (``grpc.ssl_target_name_override``; RA-TLS names are not real
    host names)."""
    try:
        names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    except ValueError as exc:
        raise MalformedEvidenceError("the certificate's extensions cannot be parsed") from exc
    if names:
        return names[0]
    common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not common_names:
        raise MalformedEvidenceError("the server certificate has neither a DNS name nor a CN")
    return str(common_names[0].value)


@dataclass(frozen=True)
class ClientIdentity:
    """A client's TLS key and the certificate the attested CA issued for it.

    Security: the key was made in this process and never leaves it; :meth:`private_key_pem`
    exists only to hand it to the local TLS stack.
    """

    party_id: str
    private_key: ECPrivateKey = field(repr=False)
    certificate: x509.Certificate = field(repr=False)

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    @property
    def certificate_pem(self) -> bytes:
        return certs.certificate_pem(self.certificate)

    @property
    def certificate_sha256(self) -> str:
        return hashlib.sha256(certs.certificate_der(self.certificate)).hexdigest()

    def private_key_pem(self) -> bytes:
        """Unencrypted PEM for gRPC. Security: never write, log or send it."""
        return private_key_to_pem(self.private_key)


class ServerPin:
    """The server certificate a client verified: the only one its channels accept.

    Made lazily on first use; :meth:`refresh` replaces it only with a certificate that
    verified against the same policy. Shared by the channels to the ports of one server
    (they present the same certificate).
    """

    def __init__(
        self,
        host: str,
        port: int,
        verification: VerifierContext,
        *,
        timeout: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
        fetch: Callable[[str, int], bytes] | None = None,
    ) -> None:
        grpc_target(host, port)
        self._host = host
        self._port = port
        self._verification = verification
        self._fetch = fetch or (lambda h, p: fetch_server_certificate(h, p, timeout=timeout))
        self._peer: VerifiedPeer | None = None
        self._version = 0
        self._lock = threading.Lock()

    @property
    def verification(self) -> VerifierContext:
        return self._verification

    @property
    def peer(self) -> VerifiedPeer:
        """The verified server (fetching and verifying it on first use)."""
        with self._lock:
            if self._peer is None:
                self._peer = self._verify(self._fetch(self._host, self._port))
                self._version += 1
            return self._peer

    @property
    def version(self) -> int:
        """Increases each time another certificate is pinned."""
        self.peer  # noqa: B018 - pins on first use
        return self._version

    @property
    def certificate_sha256(self) -> bytes:
        """SHA-256 of the pinned DER certificate (what enrollment statements name)."""
        return hashlib.sha256(self.peer.certificate_der).digest()

    def refresh(self) -> bool:
        """Fetch the server's certificate again; pin it if it changed and verifies.

        Returns whether the pin changed. Raises the refusing check's error if the server
        now presents a certificate that does not verify (the old pin stays: channels keep
        refusing the new certificate).
        """
        with self._lock:
            der = self._fetch(self._host, self._port)
            current = self._peer
            if current is not None and der == current.certificate_der:
                if current.certificate.not_valid_after_utc > self._verification.now():
                    return False
            peer = self._verify(der)
            changed = current is None or peer.certificate_der != current.certificate_der
            self._peer = peer
            if changed:
                self._version += 1
            return changed

    def _verify(self, der: bytes) -> VerifiedPeer:
        peer = self._verification.verify_certificate(der)
        identity = peer.identity
        log.info(
            "verified the server at %s: MRENCLAVE %s, TCB %s%s; pinned its certificate "
            "(key sha256 %s, until %s)",
            grpc_target(self._host, self._port),
            identity.mr_enclave.hex() if identity.mr_enclave else "none",
            identity.tcb_status,
            " (SIMULATED evidence)" if identity.simulated else "",
            peer.public_key_sha256,
            peer.certificate.not_valid_after_utc.isoformat(),
        )
        return peer


def _is_unavailable(exc: grpc.RpcError) -> bool:
    code = getattr(exc, "code", None)
    return callable(code) and code() == grpc.StatusCode.UNAVAILABLE


class AttestedChannel:
    """A gRPC channel to one port of an attested server, accepting only the pinned
    certificate; with a :class:`ClientIdentity`, it also presents a client certificate.

    Use :meth:`call` (or :attr:`channel` for long-lived streams): ``call`` re-pins (after
    verifying) and retries once when the server's certificate changed.
    """

    def __init__(
        self,
        host: str,
        port: int,
        pin: ServerPin,
        *,
        client_identity: ClientIdentity | None = None,
        options: Sequence[ChannelOption] = (),
    ) -> None:
        self._target = grpc_target(host, port)
        self._pin = pin
        self._identity = client_identity
        self._options = tuple(options)
        self._channel: grpc.Channel | None = None
        self._built_for: tuple[int, int | None] | None = None
        self._retired: list[grpc.Channel] = []
        self._lock = threading.Lock()

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        verification: VerifierContext,
        *,
        options: Sequence[ChannelOption] = (),
        timeout: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
    ) -> AttestedChannel:
        """Verify the server at ``host:port`` and pin it (raises if refused)."""
        pin = ServerPin(host, port, verification, timeout=timeout)
        pin.peer  # noqa: B018 - verify now, so a refusal surfaces here
        return cls(host, port, pin, options=options)

    @property
    def pin(self) -> ServerPin:
        return self._pin

    @property
    def server(self) -> VerifiedPeer:
        return self._pin.peer

    @property
    def client_identity(self) -> ClientIdentity | None:
        return self._identity

    def set_client_identity(self, identity: ClientIdentity) -> None:
        """Present ``identity`` from now on (a renewed certificate): new calls use a new
        channel; calls in flight finish on the old one."""
        with self._lock:
            self._identity = identity

    @property
    def channel(self) -> grpc.Channel:
        """The channel for the current pin and identity (rebuilt when either changed)."""
        version = self._pin.version
        with self._lock:
            key = (version, self._identity.serial if self._identity else None)
            if self._channel is None or self._built_for != key:
                if self._channel is not None:
                    # Keep one generation alive for calls in flight; close older ones.
                    for old in self._retired:
                        old.close()
                    self._retired = [self._channel]
                self._channel = self._build()
                self._built_for = key
            return self._channel

    def _build(self) -> grpc.Channel:
        peer = self._pin.peer
        if self._identity is None:
            credentials = grpc.ssl_channel_credentials(root_certificates=peer.certificate_pem)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=peer.certificate_pem,
                private_key=self._identity.private_key_pem(),
                certificate_chain=self._identity.certificate_pem,
            )
        options = (
            *BASE_CHANNEL_OPTIONS,
            ("grpc.ssl_target_name_override", tls_name(peer.certificate)),
            *self._options,
        )
        return grpc.secure_channel(self._target, credentials, options=options)

    def call(self, fn: Callable[[grpc.Channel], T]) -> T:
        """``fn(channel)``; if it fails as unavailable and the server's certificate has
        changed and verifies, once more on a channel pinned to the new certificate.

        RPCs passed here should be idempotent: a call that failed as unavailable may
        have reached the old server before it went away.
        """
        try:
            return fn(self.channel)
        except grpc.RpcError as exc:
            if not _is_unavailable(exc):
                raise
            try:
                changed = self._pin.refresh()
            except TransportError:
                raise exc from None  # the server is down: report the call's own failure
            if not changed:
                raise
            log.info("the server at %s presents a new, verified certificate", self._target)
        return fn(self.channel)

    def close(self) -> None:
        with self._lock:
            for channel in [*self._retired, *([self._channel] if self._channel else [])]:
                channel.close()
            self._retired = []
            self._channel = None
            self._built_for = None

    def __enter__(self) -> AttestedChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
