"""Enrollment with the attested CA, then mutual TLS: who is accepted, who is refused, and how."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading

import grpc
import pytest
from channel_helpers import (
    AGGREGATOR_MRENCLAVE,
    PARTY_MRENCLAVE,
    FakeClock,
    attach,
    expect_unavailable,
    verification,
    who_am_i,
)

from enclaverec.crypto.keys import public_key_der, public_key_pem
from enclaverec.crypto.signing import generate_p256_key
from enclaverec.errors import (
    EnrollmentRefusedError,
    MalformedInputError,
    MrEnclaveError,
    ServerBusyError,
    UsageError,
)
from enclaverec.tee.attested_ca import (
    AttestedCA,
    EnrollmentConfig,
    EnrollmentRequest,
    build_csr,
    enrollment_statement,
    sign_statement,
    statement_digest,
)
from enclaverec.tee.gramine import GramineBackend
from enclaverec.tee.ratls import RATLSCert
from enclaverec.tools.fake_device import SimulatedAttestationDevice
from enclaverec.transport.channel import AttestedChannel, ClientIdentity, ServerPin
from enclaverec.transport.enrollment import EnrollmentCredentials, enroll
from enclaverec.transport.proto import enrollment_pb2, enrollment_pb2_grpc
from enclaverec.transport.server import (
    AttestedServer,
    ListenConfig,
    ServerIdentity,
    ServerIdentityConfig,
)
from enclaverec.transport.session import SessionConfig


def refused(session) -> EnrollmentRefusedError:
    with pytest.raises(EnrollmentRefusedError) as caught:
        session.call(who_am_i)
    return caught.value


class RawEnrollment:
    """The enrollment RPCs by hand, over a channel pinned to the verified server: for
    requests a well-behaved client never sends."""

    def __init__(self, server, live_pki) -> None:
        endpoints = server.endpoints
        self.channel = AttestedChannel.connect(
            endpoints.host, endpoints.enrollment_port, verification(live_pki, AGGREGATOR_MRENCLAVE)
        )
        self.stub = enrollment_pb2_grpc.EnrollmentStub(self.channel.channel)
        self.server_sha256 = self.channel.pin.certificate_sha256

    def nonce(self) -> bytes:
        return self.stub.Challenge(enrollment_pb2.ChallengeRequest(), timeout=5).nonce

    def request(self, *, member_key, backend, party_id="p0", server_sha256=None, evidence_key=None):
        """A request with proofs over a fresh key; ``evidence_key`` puts the evidence on
        another key than the CSR's."""
        nonce = self.nonce()
        key = generate_p256_key()
        statement = enrollment_statement(
            party_id,
            nonce,
            server_sha256 or self.server_sha256,
            hashlib.sha256(public_key_der(key.public_key())).digest(),
        )
        evidence = RATLSCert.create(
            backend, evidence_key or key, nonce=statement_digest(statement)
        ).der
        return enrollment_pb2.EnrollRequest(
            party_id=party_id,
            nonce=nonce,
            csr=build_csr(key, party_id),
            server_certificate_sha256=server_sha256 or self.server_sha256,
            membership_signature=sign_statement(member_key, statement),
            evidence_certificate=evidence,
        )

    def refusal(self, request) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as caught:
            self.stub.Enroll(request, timeout=5)
        check = dict(caught.value.trailing_metadata() or ()).get("enclaverec-check")
        return caught.value.code(), check

    def close(self) -> None:
        self.channel.close()


@pytest.fixture
def raw(live_pki):
    opened = []

    def make(server) -> RawEnrollment:
        client = RawEnrollment(server, live_pki)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


# --- accepted --------------------------------------------------------------------------------


def test_an_enrolled_client_is_accepted_and_identified(start_server, open_session):
    records = []
    server, echo = start_server(audit=records.append)
    session = open_session(server.endpoints)
    seen = session.call(who_am_i)
    assert seen["party_id"] == "p0"
    assert seen["enrolled_by"] == "membership+evidence"
    assert seen["authenticated"] is True
    assert seen["mrenclave"] == PARTY_MRENCLAVE.hex()
    assert seen["simulated_evidence"] is True
    assert seen["certificate_sha256"] == session.identity.certificate_sha256
    assert echo.calls == 1
    # One audit record, naming the party, the method, the measurement and the serial.
    (record,) = records
    assert record.identity.party_id == "p0"
    assert record.identity.certificate_serial == session.identity.serial
    assert record.identity.mrenclave == PARTY_MRENCLAVE
    assert set(record.to_dict()) == {
        "at",
        "party_id",
        "enrolled_by",
        "authenticated",
        "certificate_sha256",
        "certificate_serial",
        "not_after",
        "mrenclave",
        "mrsigner",
        "simulated_evidence",
    }


def test_membership_signature_alone_when_configured(start_server, open_session, member_key):
    config = EnrollmentConfig(
        membership={"p0": public_key_pem(member_key.public_key())},
        require_membership_signature=True,
        require_evidence=False,
    )
    server, _ = start_server(config)
    session = open_session(server.endpoints, EnrollmentCredentials("p0", membership_key=member_key))
    seen = session.call(who_am_i)
    assert (seen["enrolled_by"], seen["mrenclave"]) == ("membership", None)


def test_evidence_alone_for_a_party_without_a_key(start_server, open_session, party_backend):
    config = EnrollmentConfig(
        membership={"worker-3": None}, require_membership_signature=False, require_evidence=True
    )
    server, _ = start_server(config)
    session = open_session(
        server.endpoints, EnrollmentCredentials("worker-3", backend=party_backend)
    )
    seen = session.call(who_am_i)
    assert (seen["party_id"], seen["enrolled_by"]) == ("worker-3", "evidence")
    assert seen["mrenclave"] == PARTY_MRENCLAVE.hex()


def test_the_client_certificate_is_renewed_before_it_expires(start_server, open_session, live_pki):
    records = []
    server, _ = start_server(audit=records.append)
    clock = FakeClock()
    session = open_session(
        server.endpoints,
        clock=clock,
        config=SessionConfig(renew_before=dt.timedelta(minutes=15)),
    )
    first = session.call(who_am_i)
    assert session.renew_if_due() is False
    clock.offset = dt.timedelta(minutes=50)  # 10 minutes left of the 1-hour certificate
    second = session.call(who_am_i)
    assert second["certificate_serial"] != first["certificate_serial"]
    assert second["certificate_sha256"] == session.identity.certificate_sha256
    assert len(records) == 2  # re-enrolled: fresh nonce, new key, fresh evidence


def test_a_certificate_from_before_a_restart_is_still_accepted(
    tmp_path, start_server, open_session, live_pki
):
    # Same measurement, same sealed state: the CA key is the same, so certificates it
    # issued before the restart still verify.
    server, _ = start_server(state=tmp_path / "kept")
    session = open_session(server.endpoints)
    session.open()
    old_identity = session.identity
    server.stop(None)
    restarted, echo = start_server(state=tmp_path / "kept")
    endpoints = restarted.endpoints
    pin = ServerPin(
        endpoints.host, endpoints.enrollment_port, verification(live_pki, AGGREGATOR_MRENCLAVE)
    )
    with AttestedChannel(
        endpoints.host, endpoints.application_port, pin, client_identity=old_identity
    ) as channel:
        assert channel.call(who_am_i)["certificate_sha256"] == old_identity.certificate_sha256
    assert echo.calls == 1


# --- refused at enrollment -----------------------------------------------------------------


def test_refuses_a_party_not_in_the_membership(
    start_server, open_session, member_key, party_backend
):
    server, echo = start_server()
    credentials = EnrollmentCredentials("p9", membership_key=member_key, backend=party_backend)
    assert refused(open_session(server.endpoints, credentials)).check == "membership"
    assert echo.calls == 0


def test_refuses_a_membership_signature_by_a_key_not_in_the_list(
    start_server, open_session, stranger_key, party_backend
):
    server, echo = start_server()
    credentials = EnrollmentCredentials("p0", membership_key=stranger_key, backend=party_backend)
    error = refused(open_session(server.endpoints, credentials))
    assert error.check == "membership"
    assert echo.calls == 0


def test_one_refusal_for_not_a_member_wrong_key_and_wrong_id(
    start_server, open_session, member_key, stranger_key, party_backend
):
    """No membership oracle: an unlisted id, a listed id signed by another key, and a
    member's key claiming another member's id all get the same answer; the detail goes
    only to the server's own refusal hook (the aggregator's audit log)."""
    other_member = generate_p256_key()
    config = EnrollmentConfig(
        membership={
            "p0": public_key_pem(member_key.public_key()),
            "p1": public_key_pem(other_member.public_key()),
        },
        require_membership_signature=True,
        require_evidence=True,
    )
    recorded: list[tuple[str, str, str]] = []
    server, echo = start_server(
        config,
        refused=lambda *record: recorded.append(record),  # noqa: PLW0108
    )
    attempts = {
        "not a member": EnrollmentCredentials(
            "p9", membership_key=stranger_key, backend=party_backend
        ),
        "wrong key": EnrollmentCredentials(
            "p0", membership_key=stranger_key, backend=party_backend
        ),
        "wrong id": EnrollmentCredentials("p1", membership_key=member_key, backend=party_backend),
    }
    answers = {
        what: str(refused(open_session(server.endpoints, credentials)))
        for what, credentials in attempts.items()
    }
    assert len(set(answers.values())) == 1, answers
    assert "not in the membership" not in answers["not a member"]
    assert "listed key" not in answers["wrong key"]
    assert echo.calls == 0
    assert [(claimed, check) for claimed, check, _ in recorded] == [
        ("p9", "membership"),
        ("p0", "membership"),
        ("p1", "membership"),
    ]
    assert "not in the membership" in recorded[0][2]
    assert "does not verify" in recorded[1][2]


def test_refuses_a_client_whose_evidence_fails_the_policy(
    start_server, open_session, member_key, rogue_backend
):
    server, echo = start_server()
    credentials = EnrollmentCredentials("p0", membership_key=member_key, backend=rogue_backend)
    assert refused(open_session(server.endpoints, credentials)).check == "mrenclave"
    assert echo.calls == 0


def test_refuses_a_client_without_evidence_when_evidence_is_required(
    start_server, open_session, member_key
):
    server, _ = start_server()
    credentials = EnrollmentCredentials("p0", membership_key=member_key)
    assert refused(open_session(server.endpoints, credentials)).check == "not_attested"


def test_refuses_evidence_bound_to_another_key(start_server, raw, member_key, party_backend):
    server, _ = start_server()
    client = raw(server)
    request = client.request(
        member_key=member_key, backend=party_backend, evidence_key=generate_p256_key()
    )
    assert client.refusal(request) == (grpc.StatusCode.PERMISSION_DENIED, "key_binding")


def test_refuses_a_replayed_enrollment(start_server, raw, member_key, party_backend):
    server, _ = start_server()
    client = raw(server)
    request = client.request(member_key=member_key, backend=party_backend)
    assert client.stub.Enroll(request, timeout=5).certificate
    assert client.refusal(request) == (grpc.StatusCode.PERMISSION_DENIED, "nonce")


def test_refuses_proofs_made_for_another_server(start_server, raw, member_key, party_backend):
    server, _ = start_server()
    client = raw(server)
    elsewhere = hashlib.sha256(b"the certificate of another aggregator").digest()
    request = client.request(member_key=member_key, backend=party_backend, server_sha256=elsewhere)
    assert client.refusal(request) == (grpc.StatusCode.PERMISSION_DENIED, "server_binding")


def test_a_malformed_request_is_invalid_argument(start_server, raw, member_key, party_backend):
    server, _ = start_server()
    client = raw(server)
    request = client.request(member_key=member_key, backend=party_backend)
    request.csr = request.csr[:-1]
    assert client.refusal(request) == (grpc.StatusCode.INVALID_ARGUMENT, "malformed")


def test_the_client_maps_invalid_argument_to_malformed_input(
    start_server, raw, member_key, party_backend
):
    from enclaverec.transport.enrollment import _refusal

    server, _ = start_server()
    client = raw(server)
    request = client.request(member_key=member_key, backend=party_backend)
    # A server-certificate digest of the wrong size: the server cannot even form the
    # statement the proofs are over. Sent raw, so it reaches the server.
    request.server_certificate_sha256 = request.server_certificate_sha256[:31]
    with pytest.raises(grpc.RpcError) as caught:
        client.stub.Enroll(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # What the client makes of that reply.
    assert isinstance(_refusal(caught.value), MalformedInputError)


# --- refused at the application port -----------------------------------------------------------


def application_channel(server, live_pki, identity=None) -> AttestedChannel:
    endpoints = server.endpoints
    pin = ServerPin(
        endpoints.host, endpoints.enrollment_port, verification(live_pki, AGGREGATOR_MRENCLAVE)
    )
    return AttestedChannel(
        endpoints.host, endpoints.application_port, pin, client_identity=identity
    )


def test_refuses_a_client_without_a_certificate(start_server, live_pki):
    server, echo = start_server()
    with application_channel(server, live_pki) as channel:
        expect_unavailable(lambda: who_am_i(channel.channel))
    assert echo.calls == 0


def test_refuses_a_certificate_from_another_ca(
    start_server, live_pki, both_required, member_key, party_backend
):
    # A well-formed certificate with every field right, issued by a CA that is not the
    # server's (a rogue enclave running the same code, for instance).
    server, echo = start_server()
    digest = server.identity.certificate_sha256
    rogue_ca = AttestedCA(
        generate_p256_key(),
        both_required,
        server_certificates=lambda: {digest},
        evidence_verification=verification(live_pki, PARTY_MRENCLAVE),
    )
    key = generate_p256_key()
    nonce = rogue_ca.challenge().nonce
    statement = enrollment_statement(
        "p0", nonce, digest, hashlib.sha256(public_key_der(key.public_key())).digest()
    )
    issued = rogue_ca.enroll(
        EnrollmentRequest(
            party_id="p0",
            nonce=nonce,
            csr_der=build_csr(key, "p0"),
            server_certificate_sha256=digest,
            membership_signature=sign_statement(member_key, statement),
            evidence_certificate_der=RATLSCert.create(
                party_backend, key, nonce=statement_digest(statement)
            ).der,
        )
    )
    identity = ClientIdentity("p0", key, issued.certificate)
    with application_channel(server, live_pki, identity) as channel:
        expect_unavailable(lambda: who_am_i(channel.channel))
    assert echo.calls == 0


def test_refuses_an_expired_client_certificate(start_server, live_pki, member_key, party_backend):
    # The CA's clock runs two hours late: it issues a one-hour certificate that has already
    # expired by the real clock that TLS uses.
    late = FakeClock()
    late.offset = -dt.timedelta(hours=2)
    server, echo = start_server(ca_clock=late)
    endpoints = server.endpoints
    enrollment = AttestedChannel.connect(
        endpoints.host, endpoints.enrollment_port, verification(live_pki, AGGREGATOR_MRENCLAVE)
    )
    credentials = EnrollmentCredentials("p0", membership_key=member_key, backend=party_backend)
    with enrollment:
        identity = enroll(enrollment.channel, enrollment.pin.certificate_sha256, credentials)
    assert identity.not_after < dt.datetime.now(dt.UTC)
    with application_channel(server, live_pki, identity) as channel:
        expect_unavailable(lambda: who_am_i(channel.channel))
    assert echo.calls == 0


def test_peer_identity_refuses_a_call_without_a_certificate_even_if_misconfigured(
    tmp_path, aggregator_backend, both_required, live_pki
):
    # Defence in depth: an application service wrongly exposed on a plaintext port still
    # refuses every call, because peer_identity finds no verified certificate.
    identity = ServerIdentity(aggregator_backend, ServerIdentityConfig(tmp_path / "state"))
    server = AttestedServer.create(
        identity,
        both_required,
        ListenConfig(),
        evidence_verification=verification(live_pki, PARTY_MRENCLAVE),
    )
    echo = attach(server)
    port = server.application_server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as caught:
                who_am_i(channel)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "no verified client certificate" in caught.value.details()
        assert echo.calls == 1  # reached the servicer, which refused it
    finally:
        server.stop(None)


def test_a_plaintext_client_cannot_reach_either_port(start_server):
    server, echo = start_server()
    for target in (server.endpoints.application_target, server.endpoints.enrollment_target):
        with grpc.insecure_channel(target) as channel:
            expect_unavailable(lambda channel=channel: who_am_i(channel))
    assert echo.calls == 0


def test_enrolling_needs_a_proof():
    with pytest.raises(UsageError):
        EnrollmentCredentials("p0")


def test_enroll_by_hand_then_mutual_tls(start_server, live_pki, member_key, party_backend):
    # The positive control of the refusals above: the same helpers, a valid certificate.
    server, echo = start_server()
    endpoints = server.endpoints
    credentials = EnrollmentCredentials("p0", membership_key=member_key, backend=party_backend)
    with AttestedChannel.connect(
        endpoints.host, endpoints.enrollment_port, verification(live_pki, AGGREGATOR_MRENCLAVE)
    ) as enrollment:
        identity = enroll(enrollment.channel, enrollment.pin.certificate_sha256, credentials)
    with application_channel(server, live_pki, identity) as channel:
        assert who_am_i(channel.channel)["party_id"] == "p0"
    assert echo.calls == 1


def test_a_restarted_server_with_another_measurement_is_refused(
    start_server, open_session, rogue_backend
):
    server, _ = start_server()
    session = open_session(server.endpoints)
    assert session.call(who_am_i)["party_id"] == "p0"
    endpoints = server.endpoints
    server.stop(None)
    # Another enclave build takes over the same ports (its own sealed state).
    rogue, echo = start_server(server_backend=rogue_backend, listen_on=endpoints)
    with pytest.raises(MrEnclaveError):
        session.call(who_am_i)
    assert echo.calls == 0
    assert session.server.identity.mr_enclave == AGGREGATOR_MRENCLAVE  # pin kept


def test_server_and_party_on_the_gramine_backend(
    tmp_path, start_server, open_session, member_key, aggregator_backend, party_backend
):
    # The Gramine backend's whole file path, through SIMULATED /dev/attestation folders:
    # the server's keys are sealed with Gramine's sealing key, its certificate and the
    # party's evidence carry quotes read from the device.
    with (
        SimulatedAttestationDevice(tmp_path / "server-dev", aggregator_backend) as server_dev,
        SimulatedAttestationDevice(tmp_path / "party-dev", party_backend) as party_dev,
    ):
        server, echo = start_server(server_backend=GramineBackend(server_dev.folder))
        credentials = EnrollmentCredentials(
            "p0", membership_key=member_key, backend=GramineBackend(party_dev.folder)
        )
        seen = open_session(server.endpoints, credentials).call(who_am_i)
        server.stop(None)
    assert seen["mrenclave"] == PARTY_MRENCLAVE.hex()
    assert sorted(p.name for p in (tmp_path / "state0").iterdir()) == ["ca.sealed", "tls.sealed"]
    assert echo.calls == 1


def test_after_a_restart_the_session_repins_and_renews_against_the_new_certificate(
    tmp_path, start_server, open_session
):
    server, _ = start_server(state=tmp_path / "kept")
    clock = FakeClock()
    session = open_session(server.endpoints, clock=clock)
    first = session.call(who_am_i)
    endpoints = server.endpoints
    server.stop(None)
    restarted, echo = start_server(state=tmp_path / "kept", listen_on=endpoints)
    # Re-pinned after verifying the new certificate; the old client certificate still works.
    assert session.call(who_am_i)["certificate_sha256"] == first["certificate_sha256"]
    assert session.server.certificate_der == restarted.identity.certificate.der
    # A renewal now names the new server certificate in its statement, and is accepted.
    clock.offset = dt.timedelta(minutes=50)
    renewed = session.call(who_am_i)
    assert renewed["certificate_sha256"] != first["certificate_sha256"]
    assert echo.calls == 2


def test_the_client_refuses_a_certificate_issued_for_another_key(member_key):
    """A CA that answers with a certificate for some other key (a man in the middle that
    got hold of a valid CA, or a bug) is refused by the joiner, who would otherwise present
    a certificate whose key it does not hold."""
    import datetime as dt
    from concurrent import futures

    from enclaverec.crypto import certs
    from enclaverec.errors import CertificateError
    from enclaverec.transport.proto import enrollment_pb2, enrollment_pb2_grpc

    other = generate_p256_key()
    name = certs.make_name("p0")
    now = dt.datetime.now(dt.UTC)
    foreign = certs.build_certificate(
        subject=name,
        public_key=other.public_key(),
        issuer=name,
        issuer_key=other,
        not_before=now,
        not_after=now + dt.timedelta(hours=1),
        is_ca=False,
    )

    class WrongKeyCA(enrollment_pb2_grpc.EnrollmentServicer):
        def Challenge(self, request, context):  # noqa: N802
            return enrollment_pb2.ChallengeReply(nonce=bytes(32))

        def Enroll(self, request, context):  # noqa: N802
            return enrollment_pb2.EnrollReply(certificate=certs.certificate_der(foreign))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    enrollment_pb2_grpc.add_EnrollmentServicer_to_server(WrongKeyCA(), server)
    port = server.add_insecure_port("127.0.0.1:0")  # test-only: the check is the client's
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            credentials = EnrollmentCredentials("p0", membership_key=member_key)
            with pytest.raises(CertificateError, match="issued certificate is for another key"):
                enroll(channel, bytes(32), credentials)
    finally:
        server.stop(0)


def test_enrollments_past_the_bound_are_refused_as_busy_then_served(start_server, open_session):
    """One enrollment in progress (held inside the CA by its audit hook) fills a port bound
    to one: the next joiner is refused with ServerBusyError before any work, the refusal
    is reported, and once the first is done the port serves again."""
    inside, release = threading.Event(), threading.Event()
    overloads: list[tuple[str, int]] = []

    def slow_audit(record) -> None:
        inside.set()
        release.wait(30)

    server, _ = start_server(
        audit=slow_audit,
        listen=ListenConfig(max_enrollments=1),
        on_overload=lambda method, peer, limit: overloads.append((method, limit)),
    )
    first = open_session(server.endpoints)
    opened: list[BaseException | None] = []

    def open_first() -> None:
        try:
            first.open()
            opened.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            opened.append(exc)

    thread = threading.Thread(target=open_first)
    thread.start()
    assert inside.wait(30)
    second = open_session(server.endpoints)
    with pytest.raises(ServerBusyError, match="busy"):
        second.open()
    assert overloads == [("/enclaverec.enrollment.Enrollment/Challenge", 1)]
    release.set()
    thread.join(30)
    assert opened == [None]
    assert second.call(who_am_i)["party_id"] == "p0"
