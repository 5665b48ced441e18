"""A client's session with one attested server: verify and pin it, enroll, call over mutual
TLS, renew the client certificate before it expires, re-verify a server that changed.

The plaintext ``--tee none`` baseline has the same interface
(:meth:`ClientSession.unsafe_plaintext_baseline`), so that the code of a party or a worker
has one path for every mode.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from enclaverec.errors import UsageError
from enclaverec.tee.attested_ca import check_party_id
from enclaverec.tee.ratls import VerifiedPeer
from enclaverec.tee.verifier_context import Clock, VerifierContext
from enclaverec.transport.channel import (
    BASE_CHANNEL_OPTIONS,
    DEFAULT_FETCH_TIMEOUT_SECONDS,
    AttestedChannel,
    ChannelOption,
    ClientIdentity,
    ServerPin,
)
from enclaverec.transport.endpoints import ServerEndpoints, is_loopback
from enclaverec.transport.enrollment import (
    DEFAULT_ENROLLMENT_TIMEOUT_SECONDS,
    EnrollmentCredentials,
    enroll,
)
from enclaverec.transport.server import PARTY_ID_METADATA

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_RENEW_BEFORE = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class SessionConfig:
    """How a client session renews and times out.

    ``renew_before``: re-enroll (new key, fresh proofs) when less than this remains of the
    client certificate; it should be below the server's client-certificate lifetime, or
    every call re-enrolls.
    """

    renew_before: dt.timedelta = DEFAULT_RENEW_BEFORE
    enrollment_timeout: float = DEFAULT_ENROLLMENT_TIMEOUT_SECONDS
    fetch_timeout: float = DEFAULT_FETCH_TIMEOUT_SECONDS
    channel_options: tuple[ChannelOption, ...] = ()

    def __post_init__(self) -> None:
        if self.renew_before < dt.timedelta(0):
            raise UsageError("renew_before must not be negative")
        if self.enrollment_timeout <= 0 or self.fetch_timeout <= 0:
            raise UsageError("timeouts must be positive")


class Session(Protocol):
    """What party and worker code uses, whatever the mode."""

    @property
    def attested(self) -> bool: ...

    @property
    def party_id(self) -> str: ...

    @property
    def channel(self) -> grpc.Channel: ...

    def open(self) -> Session: ...

    def call(self, fn: Callable[[grpc.Channel], T]) -> T: ...

    def close(self) -> None: ...


class ClientSession:
    """One client's mutually authenticated connection to one attested server.

    :meth:`open` verifies the server (attest-then-pin over the enrollment port), enrolls
    and prepares the application channel; :meth:`call` runs an RPC on it, renewing the
    client certificate first when it nears expiry and re-verifying the server when its
    certificate changed (a refused server raises the refusing check's error).
    """

    def __init__(
        self,
        endpoints: ServerEndpoints,
        verification: VerifierContext,
        credentials: EnrollmentCredentials,
        config: SessionConfig | None = None,
    ) -> None:
        if endpoints.enrollment_port is None:
            raise UsageError("an attested session needs the server's enrollment port")
        self._config = config or SessionConfig()
        self._credentials = credentials
        self._clock: Clock = verification.clock
        self._pin = ServerPin(
            endpoints.host,
            endpoints.enrollment_port,
            verification,
            timeout=self._config.fetch_timeout,
        )
        options = self._config.channel_options
        self._enrollment = AttestedChannel(
            endpoints.host, endpoints.enrollment_port, self._pin, options=options
        )
        self._application = AttestedChannel(
            endpoints.host, endpoints.application_port, self._pin, options=options
        )
        self._lock = threading.Lock()

    @classmethod
    def unsafe_plaintext_baseline(
        cls,
        endpoints: ServerEndpoints,
        party_id: str,
        *,
        channel_options: Sequence[ChannelOption] = (),
    ) -> PlaintextBaselineSession:
        """UNSAFE, for the ``--tee none`` measurement baseline only: plaintext gRPC to a
        loopback server, which takes this client's word for its ``party_id``.

        Security: nothing is verified or encrypted. A non-loopback host is refused.
        """
        return PlaintextBaselineSession(endpoints, party_id, channel_options=channel_options)

    @property
    def attested(self) -> bool:
        return True

    @property
    def party_id(self) -> str:
        return self._credentials.party_id

    @property
    def server(self) -> VerifiedPeer:
        """The verified server (verified and pinned on first use)."""
        return self._pin.peer

    @property
    def identity(self) -> ClientIdentity | None:
        """The current client certificate (None before :meth:`open`)."""
        return self._application.client_identity

    def open(self) -> ClientSession:
        """Verify and pin the server, and enroll (no-op when already done)."""
        with self._lock:
            if self._application.client_identity is None:
                self._enroll()
        return self

    def _enroll(self) -> None:
        # The statement names the pin as it is when the call runs: after a re-pin inside
        # AttestedChannel.call, the retry names the new certificate.
        identity = self._enrollment.call(
            lambda channel: enroll(
                channel,
                self._pin.certificate_sha256,
                self._credentials,
                timeout=self._config.enrollment_timeout,
            )
        )
        self._application.set_client_identity(identity)

    def renew_if_due(self) -> bool:
        """Re-enroll (new key, fresh nonce and proofs) if the client certificate expires
        within ``renew_before``. Returns whether it did."""
        with self._lock:
            identity = self._application.client_identity
            if identity is not None and identity.not_after - self._clock() > (
                self._config.renew_before
            ):
                return False
            self._enroll()
            return True

    @property
    def channel(self) -> grpc.Channel:
        """The application channel (for stubs and long-lived streams); prefer :meth:`call`."""
        self.open()
        return self._application.channel

    def call(self, fn: Callable[[grpc.Channel], T]) -> T:
        """``fn(application channel)``, after renewing the client certificate if due; once
        more after re-verifying the server if the call failed as unavailable because the
        server's certificate changed (see :meth:`AttestedChannel.call`)."""
        self.open()
        self.renew_if_due()
        return self._application.call(fn)

    def close(self) -> None:
        self._enrollment.close()
        self._application.close()

    def __enter__(self) -> ClientSession:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PlaintextBaselineSession:
    """UNSAFE: the ``--tee none`` baseline's session (see
    :meth:`ClientSession.unsafe_plaintext_baseline`)."""

    def __init__(
        self,
        endpoints: ServerEndpoints,
        party_id: str,
        *,
        channel_options: Sequence[ChannelOption] = (),
    ) -> None:
        if not is_loopback(endpoints.host):
            raise UsageError(
                f"the plaintext baseline (--tee none) connects to loopback only, not "
                f"{endpoints.host}"
            )
        self._party_id = check_party_id(party_id)
        log.warning(
            "UNSAFE --tee none baseline: plaintext gRPC to %s; the server is not verified "
            "and nothing is encrypted",
            endpoints.application_target,
        )
        self._channel = grpc.intercept_channel(
            grpc.insecure_channel(
                endpoints.application_target,
                options=[*BASE_CHANNEL_OPTIONS, *channel_options],
            ),
            _DeclarePartyId(party_id),
        )

    @property
    def attested(self) -> bool:
        return False

    @property
    def party_id(self) -> str:
        return self._party_id

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    def open(self) -> PlaintextBaselineSession:
        return self

    def call(self, fn: Callable[[grpc.Channel], T]) -> T:
        return fn(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PlaintextBaselineSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, details: grpc.ClientCallDetails, metadata: list[tuple[str, Any]]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class _DeclarePartyId(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the baseline's declared party id to every call's metadata."""

    def __init__(self, party_id: str) -> None:
        self._party_id = party_id

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [
            (key, value) for key, value in (details.metadata or ()) if key != PARTY_ID_METADATA
        ]
        metadata.append((PARTY_ID_METADATA, self._party_id))
        return _CallDetails(details, metadata)

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)
