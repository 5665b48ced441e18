"""The ``--tee none`` baseline: the same API, plaintext on loopback only, declared identities,
a warning at every start."""

from __future__ import annotations

import logging

import grpc
import pytest
from channel_helpers import AGGREGATOR_MRENCLAVE, attach, verification, who_am_i

from enclaverec.errors import MalformedInputError, UsageError
from enclaverec.transport.endpoints import ServerEndpoints, is_loopback
from enclaverec.transport.enrollment import EnrollmentCredentials
from enclaverec.transport.server import AttestedServer, ListenConfig
from enclaverec.transport.session import ClientSession


@pytest.fixture
def baseline():
    servers = []

    def start(parties=("p0", "p1")):
        server = AttestedServer.unsafe_plaintext_baseline(ListenConfig(), parties=parties)
        echo = attach(server)
        server.start()
        servers.append(server)
        return server, echo

    yield start
    for server in servers:
        server.stop(None)


def test_a_declared_party_reaches_the_service_unauthenticated(baseline, caplog):
    with caplog.at_level(logging.WARNING):
        server, echo = baseline()
        session = ClientSession.unsafe_plaintext_baseline(server.endpoints, "p1")
    assert server.endpoints.enrollment_port is None
    with session:
        seen = session.call(who_am_i)
    assert seen["party_id"] == "p1"
    assert seen["enrolled_by"] == "declared"
    assert seen["authenticated"] is False
    assert seen["certificate_sha256"] is None
    assert echo.calls == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("UNSAFE --tee none baseline" in message for message in warnings) == 2


def test_a_call_without_a_declared_party_is_unauthenticated(baseline):
    server, _ = baseline()
    with grpc.insecure_channel(server.endpoints.application_target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            who_am_i(channel)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_party_outside_the_list_is_unauthenticated(baseline):
    server, _ = baseline(parties=("p0",))
    with ClientSession.unsafe_plaintext_baseline(server.endpoints, "p7") as session:
        with pytest.raises(grpc.RpcError) as caught:
            session.call(who_am_i)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "example.org"])
def test_the_server_refuses_to_bind_beyond_loopback(host):
    with pytest.raises(UsageError, match="loopback only"):
        AttestedServer.unsafe_plaintext_baseline(ListenConfig(host=host))


@pytest.mark.parametrize("host", ["192.168.0.7", "aggregator.example.org"])
def test_the_client_refuses_to_connect_beyond_loopback(host):
    with pytest.raises(UsageError, match="loopback only"):
        ClientSession.unsafe_plaintext_baseline(ServerEndpoints(host, 5000, None), "p0")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host):
    assert is_loopback(host)


def test_party_ids_are_checked():
    with pytest.raises(MalformedInputError):
        ClientSession.unsafe_plaintext_baseline(ServerEndpoints("127.0.0.1", 5000, None), "p 0")
    with pytest.raises(MalformedInputError):
        AttestedServer.unsafe_plaintext_baseline(ListenConfig(), parties=["../p0"])


def test_an_attested_session_needs_an_enrollment_port(live_pki, member_key):
    with pytest.raises(UsageError, match="enrollment port"):
        ClientSession(
            ServerEndpoints("127.0.0.1", 5000, None),
            verification(live_pki, AGGREGATOR_MRENCLAVE),
            EnrollmentCredentials("p0", membership_key=member_key),
        )
