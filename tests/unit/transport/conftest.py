"""Fixtures of the attested-channel tests: a live simulation deployment, keys, servers."""

from __future__ import annotations

from pathlib import Path

import pytest
from channel_helpers import (
    AGGREGATOR_MRENCLAVE,
    PARTY_MRENCLAVE,
    ROGUE_MRENCLAVE,
    attach,
    backend,
    verification,
)

from enclaverec.crypto.keys import public_key_pem
from enclaverec.crypto.signing import generate_p256_key
from enclaverec.tee.attested_ca import EnrollmentConfig
from enclaverec.tee.simulation_pki import SimulationPKI
from enclaverec.tee.verifier_context import system_clock
from enclaverec.transport.enrollment import EnrollmentCredentials
from enclaverec.transport.server import (
    AttestedServer,
    ListenConfig,
    ServerIdentity,
    ServerIdentityConfig,
)
from enclaverec.transport.session import ClientSession


@pytest.fixture(scope="session")
def live_pki(tmp_path_factory: pytest.TempPathFactory) -> SimulationPKI:
    """A simulation deployment made now (gRPC checks certificates against the real clock)."""
    return SimulationPKI.create(tmp_path_factory.mktemp("live") / "deployment")


@pytest.fixture(scope="session")
def aggregator_backend(live_pki):
    return backend(live_pki, AGGREGATOR_MRENCLAVE)


@pytest.fixture(scope="session")
def party_backend(live_pki):
    return backend(live_pki, PARTY_MRENCLAVE)


@pytest.fixture(scope="session")
def rogue_backend(live_pki):
    return backend(live_pki, ROGUE_MRENCLAVE)


@pytest.fixture(scope="session")
def member_key():
    return generate_p256_key()


@pytest.fixture(scope="session")
def stranger_key():
    """A P-256 key that no membership lists."""
    return generate_p256_key()


@pytest.fixture(scope="session")
def both_required(member_key) -> EnrollmentConfig:
    """Party p0 must sign with its listed key and attest as the party enclave."""
    return EnrollmentConfig(
        membership={"p0": public_key_pem(member_key.public_key())},
        require_membership_signature=True,
        require_evidence=True,
    )


@pytest.fixture
def start_server(tmp_path: Path, live_pki, aggregator_backend, both_required):
    """Start an attested server (stopped at teardown); returns (server, echo service)."""
    started: list[AttestedServer] = []

    def start(
        enrollment: EnrollmentConfig | None = None,
        *,
        server_backend=None,
        state: Path | None = None,
        ca_clock=system_clock,
        audit=None,
        refused=None,
        joiners=(PARTY_MRENCLAVE,),
        identity_config: ServerIdentityConfig | None = None,
        listen_on=None,
        listen: ListenConfig | None = None,
        on_overload=None,
    ):
        identity = ServerIdentity(
            server_backend or aggregator_backend,
            identity_config or ServerIdentityConfig(state or tmp_path / f"state{len(started)}"),
        )
        server = AttestedServer.create(
            identity,
            enrollment or both_required,
            listen
            or (
                ListenConfig()
                if listen_on is None
                else ListenConfig(
                    application_port=listen_on.application_port,
                    enrollment_port=listen_on.enrollment_port,
                )
            ),
            evidence_verification=verification(live_pki, *joiners),
            audit=audit,
            refused=refused,
            clock=ca_clock,
            on_overload=on_overload,
        )
        echo = attach(server)
        server.start()
        started.append(server)
        return server, echo

    yield start
    for server in started:
        server.stop(None)


@pytest.fixture
def open_session(live_pki, member_key, party_backend):
    """Make a client session to a server (closed at teardown)."""
    sessions: list[ClientSession] = []

    def make(
        endpoints, credentials=None, *, trusted=(AGGREGATOR_MRENCLAVE,), clock=None, config=None
    ):
        credentials = credentials or EnrollmentCredentials(
            "p0", membership_key=member_key, backend=party_backend
        )
        session = ClientSession(
            endpoints, verification(live_pki, *trusted, clock=clock), credentials, config
        )
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.close()
