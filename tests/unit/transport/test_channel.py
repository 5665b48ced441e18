"""Attest-then-pin: a client accepts exactly the server certificate it verified, re-pins only
after verifying, and refuses a man in the middle whatever certificate it presents."""

from __future__ import annotations

import datetime as dt
import time
from concurrent import futures

import grpc
import pytest
from channel_helpers import (
    AGGREGATOR_MRENCLAVE,
    ROGUE_MRENCLAVE,
    Echo,
    SwitchingProxy,
    expect_unavailable,
    free_port,
    verification,
    who_am_i,
)
from cryptography import x509

from enclaverec.crypto import certs
from enclaverec.crypto.signing import generate_p256_key, private_key_to_pem
from enclaverec.errors import (
    KeyBindingError,
    MalformedEvidenceError,
    MrEnclaveError,
    SimulatedEvidenceError,
    TransportError,
)
from enclaverec.tee.policy import PolicySpec
from enclaverec.tee.ratls import TCG_DICE_TAGGED_EVIDENCE_OID
from enclaverec.tee.verifier_context import VerifierContext
from enclaverec.transport.channel import AttestedChannel, ServerPin, fetch_server_certificate
from enclaverec.transport.server import ServerIdentity, ServerIdentityConfig

LOOPBACK = "127.0.0.1"


class TLSServer:
    """A gRPC server with the Echo service and the given server credentials (server
    authentication only)."""

    def __init__(self, credentials: grpc.ServerCredentials) -> None:
        self.echo = Echo()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2),
            handlers=[self.echo.handler()],
            options=[("grpc.so_reuseport", 0)],
        )
        self.port = self.server.add_secure_port(f"{LOOPBACK}:0", credentials)
        self.server.start()

    def stop(self) -> None:
        self.server.stop(None).wait()


@pytest.fixture
def serve():
    servers: list[TLSServer] = []

    def start(credentials: grpc.ServerCredentials) -> TLSServer:
        server = TLSServer(credentials)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def identity(tmp_path, aggregator_backend) -> ServerIdentity:
    return ServerIdentity(aggregator_backend, ServerIdentityConfig(tmp_path / "state"))


@pytest.fixture
def trusting(live_pki) -> VerifierContext:
    """A client policy allowing the aggregator's measurement on the live deployment."""
    return verification(live_pki, AGGREGATOR_MRENCLAVE)


def self_signed(key, extensions=()) -> x509.Certificate:
    name = certs.make_name("RATLS")
    now = dt.datetime.now(dt.UTC)
    return certs.build_certificate(
        subject=name,
        public_key=key.public_key(),
        issuer=name,
        issuer_key=key,
        not_before=now - dt.timedelta(minutes=5),
        not_after=now + dt.timedelta(hours=1),
        is_ca=False,
        extensions=[(x509.SubjectAlternativeName([x509.DNSName("RATLS")]), False), *extensions],
    )


def credentials_for(key, certificate: x509.Certificate) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(private_key_to_pem(key), certs.certificate_pem(certificate))]
    )


def evidence_moved_to_new_key(original: x509.Certificate):
    """A certificate for a key the attacker holds, carrying another server's evidence."""
    key = generate_p256_key()
    evidence = original.extensions.get_extension_for_oid(
        x509.ObjectIdentifier(TCG_DICE_TAGGED_EVIDENCE_OID)
    ).value
    return key, self_signed(key, [(evidence, False)])


# --- verify, then pin -----------------------------------------------------------------------


def test_pins_the_verified_certificate_and_calls_through_it(serve, identity, trusting):
    server = serve(identity.credentials())
    with AttestedChannel.connect(LOOPBACK, server.port, trusting) as channel:
        assert channel.server.certificate_der == identity.certificate.der
        assert channel.server.identity.mr_enclave == AGGREGATOR_MRENCLAVE
        assert channel.call(who_am_i) == {}
    assert server.echo.calls == 1


def test_fetch_returns_the_presented_certificate(serve, identity):
    server = serve(identity.credentials())
    assert fetch_server_certificate(LOOPBACK, server.port) == identity.certificate.der


def test_fetch_from_a_closed_port_is_a_transport_error():
    with pytest.raises(TransportError, match="could not fetch the server certificate"):
        fetch_server_certificate(LOOPBACK, free_port(), timeout=2)


def test_refuses_a_server_whose_measurement_the_policy_does_not_allow(serve, identity, live_pki):
    server = serve(identity.credentials())
    with pytest.raises(MrEnclaveError):
        AttestedChannel.connect(LOOPBACK, server.port, verification(live_pki, ROGUE_MRENCLAVE))
    assert server.echo.calls == 0


def test_refuses_simulated_evidence_under_a_production_policy(serve, identity, live_pki):
    server = serve(identity.credentials())
    production = VerifierContext.for_simulation(live_pki.folder, PolicySpec().build())
    with pytest.raises(SimulatedEvidenceError):
        AttestedChannel.connect(LOOPBACK, server.port, production)


def test_refuses_a_server_certificate_without_evidence(serve, trusting):
    key = generate_p256_key()
    server = serve(credentials_for(key, self_signed(key)))
    with pytest.raises(MalformedEvidenceError, match="no attestation evidence"):
        AttestedChannel.connect(LOOPBACK, server.port, trusting)


def test_refuses_another_servers_evidence_on_its_own_key(serve, identity, trusting):
    key, forged = evidence_moved_to_new_key(identity.certificate.certificate)
    server = serve(credentials_for(key, forged))
    with pytest.raises(KeyBindingError):
        AttestedChannel.connect(LOOPBACK, server.port, trusting)


def test_a_plaintext_client_cannot_talk_to_a_secure_server(serve, identity):
    server = serve(identity.credentials())
    with grpc.insecure_channel(f"{LOOPBACK}:{server.port}") as channel:
        expect_unavailable(lambda: who_am_i(channel))
    assert server.echo.calls == 0


# --- the man in the middle ------------------------------------------------------------------


def test_a_pinned_client_refuses_any_other_server(
    serve, identity, trusting, tmp_path, aggregator_backend, rogue_backend
):
    genuine = serve(identity.credentials())
    proxy = SwitchingProxy(genuine.port)
    try:
        channel = AttestedChannel.connect(LOOPBACK, proxy.port, trusting)
        assert channel.call(who_am_i) == {}
        pinned = channel.server.certificate_der

        # 1. Another server with its own key, even one whose evidence would verify (same
        #    enclave, same policy): the pinned channel's handshake refuses it.
        twin = ServerIdentity(aggregator_backend, ServerIdentityConfig(tmp_path / "twin"))
        other = serve(twin.credentials())
        proxy.switch(other.port)
        expect_unavailable(lambda: who_am_i(channel.channel))

        # 2. A man in the middle with the genuine server's evidence on its own key: the
        #    channel fetches its certificate, which fails verification, and does not re-pin.
        key, forged = evidence_moved_to_new_key(identity.certificate.certificate)
        forger = serve(credentials_for(key, forged))
        proxy.switch(forger.port)
        with pytest.raises(KeyBindingError):
            channel.call(who_am_i)

        # 3. A genuine enclave that the client's policy does not allow.
        rogue_identity = ServerIdentity(rogue_backend, ServerIdentityConfig(tmp_path / "rogue"))
        rogue = serve(rogue_identity.credentials())
        proxy.switch(rogue.port)
        with pytest.raises(MrEnclaveError):
            channel.call(who_am_i)

        assert (other.echo.calls, forger.echo.calls, rogue.echo.calls) == (0, 0, 0)
        assert channel.server.certificate_der == pinned  # never re-pinned unverified

        # Back to the genuine server: the pin still works.
        proxy.switch(genuine.port)
        assert who_am_i(channel.channel, wait_for_ready=True) == {}
        assert genuine.echo.calls == 2
        channel.close()
    finally:
        proxy.close()


# --- a server whose certificate changes ------------------------------------------------------


def test_a_rotated_certificate_is_verified_then_pinned(serve, identity, trusting):
    server = serve(identity.credentials())
    pin = ServerPin(LOOPBACK, server.port, trusting)
    first = pin.peer.certificate_der
    version = pin.version
    identity.rotate()  # same sealed key, fresh quote, new certificate
    with AttestedChannel(LOOPBACK, server.port, pin) as channel:
        expect_unavailable(lambda: who_am_i(channel.channel))
        assert channel.call(who_am_i) == {}
    assert pin.peer.certificate_der == identity.certificate.der != first
    assert pin.version == version + 1
    assert server.echo.calls == 1


def test_the_server_renews_its_certificate_at_a_handshake_when_due(
    serve, tmp_path, aggregator_backend, trusting
):
    config = ServerIdentityConfig(
        tmp_path / "state",
        certificate_lifetime=dt.timedelta(hours=1),
        renew_before=dt.timedelta(hours=1) - dt.timedelta(seconds=0.3),
    )
    renewing = ServerIdentity(aggregator_backend, config)
    server = serve(renewing.credentials())
    pin = ServerPin(LOOPBACK, server.port, trusting)
    first = pin.peer.certificate_der
    time.sleep(0.4)  # now less than renew_before remains: the next handshake renews
    with AttestedChannel(LOOPBACK, server.port, pin) as channel:
        assert channel.call(who_am_i) == {}
    assert pin.peer.certificate_der != first
    assert (
        pin.peer.public_key_sha256
        == ServerPin(LOOPBACK, server.port, trusting).peer.public_key_sha256
    )


def test_refresh_keeps_the_pin_when_the_certificate_is_unchanged(serve, identity, trusting):
    server = serve(identity.credentials())
    pin = ServerPin(LOOPBACK, server.port, trusting)
    version = pin.version
    assert pin.refresh() is False
    assert pin.version == version


def test_refresh_of_a_server_that_is_gone_is_a_transport_error(identity, trusting, serve):
    server = serve(identity.credentials())
    pin = ServerPin(LOOPBACK, server.port, trusting, timeout=2)
    pin.peer  # noqa: B018
    server.stop()
    with pytest.raises(TransportError):
        pin.refresh()


def test_a_call_to_a_server_that_is_gone_fails_as_unavailable(serve, identity, trusting):
    server = serve(identity.credentials())
    channel = AttestedChannel.connect(LOOPBACK, server.port, trusting, timeout=2)
    assert channel.call(who_am_i) == {}
    server.stop()
    with channel:
        expect_unavailable(lambda: channel.call(who_am_i))
