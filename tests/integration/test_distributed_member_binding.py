"""Per-member identity binding (simulated TEE, real attested gRPC on loopback): each
worker's and parameter server's enclave enrolls only under the id the owner pinned its
MRENCLAVE to. The job's policies allow the *set* of its workers' enclaves; without the
binding, worker-0's enclave could enroll as worker-1 at a parameter server and push
gradients in its name."""

from __future__ import annotations

import pytest
from distributed_helpers import make_job, member_session, owner, running_keybroker

from enclaverec.distributed.config import ParamServerConfig, WorkerConfig
from enclaverec.distributed.keybroker import AUDIT_FILE
from enclaverec.distributed.paramserver import ParamServer
from enclaverec.errors import EnrollmentRefusedError
from enclaverec.tee.role_setup import role_backend, verifier_context
from enclaverec.transport.endpoints import ServerEndpoints
from enclaverec.transport.enrollment import EnrollmentCredentials
from enclaverec.transport.session import ClientSession


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return make_job(tmp_path_factory.mktemp("binding"), paramservers=2)


def _refused_events(events, party):
    return [e for e in events if e["event"] == "enrollment_refused" and e["party"] == party]


def test_a_parameter_server_refuses_worker_0s_enclave_claiming_worker_1(job):
    worker_0 = WorkerConfig.load(job.files.worker_configs[0])
    server = ParamServer(job.files.paramserver_configs[0])
    server.start()
    address = server.server.endpoints

    def session(member: str) -> ClientSession:
        return ClientSession(
            ServerEndpoints("127.0.0.1", address.application_port, address.enrollment_port),
            verifier_context(
                worker_0.tee, worker_0.paramserver_signer_policy, worker_0.simulation_dir, None
            ),
            EnrollmentCredentials(
                member,
                backend=role_backend("worker", worker_0.tee, worker_0.raw, worker_0.simulation_dir),
            ),
        )

    try:
        genuine = session("worker-0")
        genuine.open()  # worker-0's enclave as itself: enrolled
        genuine.close()
        posing = session("worker-1")
        try:
            with pytest.raises(EnrollmentRefusedError) as refused:
                posing.open()
        finally:
            posing.close()
        events = server.audit.events()
    finally:
        server.stop(0)
    assert refused.value.check == "mrenclave" and refused.value.exit_code == 3
    assert "pinned for worker-1" in str(refused.value)
    [event] = _refused_events(events, "worker-1")
    assert event["check"] == "mrenclave"
    assert [e["party_id"] for e in events if e["event"] == "enrolled"] == ["worker-0"]


def test_the_key_broker_refuses_a_member_enclave_claiming_another_members_id(job, tmp_path):
    worker_0 = WorkerConfig.load(job.files.worker_configs[0])
    server_0 = ParamServerConfig.load(job.files.paramserver_configs[0])

    refusals = {}
    with running_keybroker(job, tmp_path / "state") as broker, owner(job) as client:
        client.submit()  # the servers' pins arrive with the owner's submission
        for role, config, genuine, posing in (
            ("worker", worker_0, "worker-0", "worker-1"),
            ("paramserver", server_0, "ps-0", "ps-1"),
        ):
            ok = member_session(role, config, genuine)
            ok.open()  # the enclave as its own id: enrolled
            ok.close()
            bad = member_session(role, config, posing)
            try:
                with pytest.raises(EnrollmentRefusedError) as refused:
                    bad.open()
            finally:
                bad.close()
            refusals[posing] = refused.value
        events = broker.audit.events()
    for posing, error in refusals.items():
        assert error.check == "mrenclave" and error.exit_code == 3, posing
        assert f"pinned for {posing}" in str(error)
        [event] = _refused_events(events, posing)
        assert event["check"] == "mrenclave"
    enrolled = {e["party_id"] for e in events if e["event"] == "enrolled"}
    assert enrolled == {"worker-0", "ps-0"}
    assert (broker.state_dir / AUDIT_FILE).exists()


def test_the_key_broker_refuses_a_workers_enclave_claiming_a_server_id_before_submission(
    job, tmp_path
):
    """A server's id has no MRENCLAVE pin until the owner submits; the role's own policy
    (its ISVPRODID) still keeps a worker's enclave from enrolling under it."""
    worker_0 = WorkerConfig.load(job.files.worker_configs[0])
    server_0 = ParamServerConfig.load(job.files.paramserver_configs[0])

    with running_keybroker(job, tmp_path / "state") as broker:
        posing = member_session("worker", worker_0, "ps-0")
        try:
            with pytest.raises(EnrollmentRefusedError) as refused:
                posing.open()
        finally:
            posing.close()
        genuine = member_session("paramserver", server_0, "ps-0")
        genuine.open()  # the server's own enclave, before submission too: enrolled
        genuine.close()
        events = broker.audit.events()
    assert refused.value.check == "isv_prod_id" and refused.value.exit_code == 3
    [event] = _refused_events(events, "ps-0")
    assert event["check"] == "isv_prod_id"
    assert [e["party_id"] for e in events if e["event"] == "enrolled"] == ["ps-0"]
