"""The key broker with real attested gRPC on loopback (simulated TEE): the owner's
submission, key release to verified workers only, every refusal with its typed error, the
audit log, and sealed state across a restart."""

from __future__ import annotations

import json

import numpy as np
import pytest
from distributed_helpers import make_job, member_session, owner, running_keybroker

from enclaverec.distributed.config import WorkerConfig
from enclaverec.distributed.keybroker import AUDIT_FILE, STATE_FILE
from enclaverec.distributed.worker import join_job, release_key
from enclaverec.errors import EnrollmentRefusedError, IntegrityError, RequestRefusedError
from enclaverec.roles.keybroker import make_keybroker


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return make_job(tmp_path_factory.mktemp("job"))


def test_workers_get_the_key_only_after_the_owner_submitted(job):
    with running_keybroker(job) as broker, owner(job) as client:
        assert client.status()["submitted"] is False
        assert client.submit() is False
        assert client.submit() is True  # a retry with the same key is accepted
        setups = [join_job(path) for path in job.files.worker_configs]
        try:
            train_ids = np.concatenate([s.shard.train.row_ids for s in setups])
            assert sorted(train_ids.tolist()) == job.data.train.row_ids.tolist()
            status = client.status()
        finally:
            for setup in setups:
                setup.session.close()
        assert status["keys_released"] == ["worker-0", "worker-1"]
        key, _ = client.data_key()
    audit = (broker.state_dir / AUDIT_FILE).read_text()
    releases = [json.loads(line) for line in audit.splitlines() if '"key_released"' in line]
    assert {entry["worker"] for entry in releases} == {"worker-0", "worker-1"}
    assert all(entry["simulated_evidence"] is True and entry["mrenclave"] for entry in releases)
    # The audit log and the sealed state never hold the key in the clear.
    state = (broker.state_dir / STATE_FILE).read_bytes()
    for form in (key, key.hex().encode(), key.hex().upper().encode()):
        assert form not in audit.encode() and form not in state


def _session(config: WorkerConfig, member: str, **backend_options):
    from enclaverec.tee.backend import open_backend
    from enclaverec.tee.measurement import ROLE_ISV_PROD_IDS, measured_inputs
    from enclaverec.tee.role_setup import verifier_context
    from enclaverec.transport.endpoints import ServerEndpoints
    from enclaverec.transport.enrollment import EnrollmentCredentials
    from enclaverec.transport.session import ClientSession

    backend = open_backend(
        "simulated",
        simulation_folder=config.simulation_dir,
        measured_inputs=measured_inputs("worker", config.raw),
        isv_prod_id=ROLE_ISV_PROD_IDS["worker"],
    )
    if backend_options.get("debug"):
        from enclaverec.tee.simulated_backend import SimulatedBackend

        backend = SimulatedBackend(
            backend.pki, backend.measurement(), isv_prod_id=ROLE_ISV_PROD_IDS["worker"], debug=True
        )
    address = config.keybroker
    return ClientSession(
        ServerEndpoints(address.host, address.port, address.enrollment_port),
        verifier_context(config.tee, config.keybroker_policy, config.simulation_dir, None),
        EnrollmentCredentials(member, backend=backend),
    )


def test_refuses_a_worker_whose_mrenclave_is_outside_the_owners_policy(job, tmp_path):
    # The same worker with one measured value changed is another enclave.
    changed = tmp_path / "worker.toml"
    original = job.files.worker_configs[0]
    changed.write_text(
        original.read_text()
        .replace('data = "', f'data = "{original.parent}/')
        .replace('simulation = "../', f'simulation = "{original.parent.parent}/')
    )
    with running_keybroker(job):
        with pytest.raises(EnrollmentRefusedError) as refused:
            join_job(changed)
    # Enrollment takes a worker's or a server's policy; both refused it.
    assert refused.value.check == "any_of" and "mrenclave" in str(refused.value)
    assert refused.value.exit_code == 3


def test_refuses_debug_evidence(job):
    config = WorkerConfig.load(job.files.worker_configs[0])
    session = _session(config, "worker-0", debug=True)
    with running_keybroker(job):
        with pytest.raises(EnrollmentRefusedError) as refused:
            session.open()
    session.close()
    assert refused.value.check == "debug"  # refused before any policy (decisions.md)


def test_refuses_a_worker_asking_for_another_jobs_key(job):
    config = WorkerConfig.load(job.files.worker_configs[0])
    with running_keybroker(job) as broker, owner(job) as client:
        client.submit()
        session = _session(config, "worker-0").open()
        try:
            with pytest.raises(RequestRefusedError) as refused:
                release_key(session, "another-job", wait_seconds=0)
        finally:
            session.close()
    assert refused.value.check == "job" and refused.value.exit_code == 3
    audit = (broker.state_dir / AUDIT_FILE).read_text()
    assert '"check": "job"' in audit


def test_an_id_enrolled_before_its_pin_arrived_is_checked_at_every_call(job, tmp_path):
    # Enrollment refuses an enclave claiming another member's id or another role's id (see
    # test_distributed_member_binding.py); a server's pin arrives only with the owner's
    # submission, so a parameter-server enclave that is not ps-0's (another job's, meeting
    # the role's policy) can enroll as ps-0 before it, and is refused at its calls.
    from enclaverec.distributed.config import ParamServerConfig
    from enclaverec.distributed.worker import next_directive

    here = WorkerConfig.load(job.files.worker_configs[0])
    other_server = ParamServerConfig.load(
        make_job(tmp_path, name="other").files.paramserver_configs[0]
    )
    with running_keybroker(job, tmp_path / "state") as broker, owner(job) as client:
        session = member_session(
            "paramserver", other_server, "ps-0", at=here, simulation_dir=job.files.simulation_dir
        ).open()
        try:
            client.submit()
            with pytest.raises(RequestRefusedError) as refused:
                next_directive(session, 0, deadline_seconds=1)
        finally:
            session.close()
        events = broker.audit.events()
    assert refused.value.check == "mrenclave" and refused.value.exit_code == 3
    assert any(e["event"] == "refused" and e["member"] == "ps-0" for e in events)


def test_refuses_members_of_another_job(job, tmp_path):
    from enclaverec.distributed.config import ParamServerConfig
    from enclaverec.distributed.worker import next_directive
    from enclaverec.errors import MrEnclaveError

    other = make_job(tmp_path, name="other")
    here = WorkerConfig.load(job.files.worker_configs[0])
    other_worker = WorkerConfig.load(other.files.worker_configs[0])
    other_server = ParamServerConfig.load(other.files.paramserver_configs[0])
    with running_keybroker(job, tmp_path / "state"), owner(job) as client:
        client.submit()
        # Another job's genuine worker, sent to this key broker: not pinned here.
        session = member_session(
            "worker", other_worker, "worker-0", at=here, simulation_dir=job.files.simulation_dir
        )
        with pytest.raises(EnrollmentRefusedError) as worker_refused:
            session.open()
        session.close()
        # Another job's parameter server pins its own key broker: it refuses this one.
        session = member_session(
            "paramserver",
            other_server,
            "ps-0",
            at=here,
            simulation_dir=job.files.simulation_dir,
            keybroker_policy=other_server.keybroker_policy,
        )
        with pytest.raises(MrEnclaveError):
            session.open()
        session.close()
        # Even one that trusted this key broker is not the server the owner pinned.
        session = member_session(
            "paramserver", other_server, "ps-0", at=here, simulation_dir=job.files.simulation_dir
        )
        with pytest.raises(EnrollmentRefusedError) as server_refused:
            next_directive(session.open(), 0, deadline_seconds=1)
        session.close()
    assert worker_refused.value.check == "any_of" and "mrenclave" in str(worker_refused.value)
    # Refused at enrollment: ps-0's pin (the owner's submission) is another MRENCLAVE.
    assert server_refused.value.check == "mrenclave" and server_refused.value.exit_code == 3


def test_refuses_an_old_nonce(job):
    import hashlib

    from enclaverec.crypto.keys import public_key_der
    from enclaverec.crypto.signing import generate_p256_key
    from enclaverec.tee.attested_ca import build_csr, enrollment_statement, statement_digest
    from enclaverec.tee.ratls import RATLSCert
    from enclaverec.transport.channel import AttestedChannel
    from enclaverec.transport.proto import enrollment_pb2, enrollment_pb2_grpc

    config = WorkerConfig.load(job.files.worker_configs[0])
    session = _session(config, "worker-0")
    backend = session._credentials.backend  # the genuine worker enclave
    with running_keybroker(job):
        channel = AttestedChannel.connect(
            config.keybroker.host, config.keybroker.enrollment_port, session._pin.verification
        )
        stub = enrollment_pb2_grpc.EnrollmentStub(channel.channel)
        nonce = stub.Challenge(enrollment_pb2.ChallengeRequest()).nonce

        def request():
            key = generate_p256_key()
            key_sha = hashlib.sha256(public_key_der(key.public_key())).digest()
            statement = enrollment_statement(
                "worker-0", nonce, channel.pin.certificate_sha256, key_sha
            )
            evidence = RATLSCert.create(
                backend, key, nonce=statement_digest(statement), common_name="worker-0"
            ).der
            return enrollment_pb2.EnrollRequest(
                party_id="worker-0",
                nonce=nonce,
                csr=build_csr(key, "worker-0"),
                server_certificate_sha256=channel.pin.certificate_sha256,
                evidence_certificate=evidence,
            )

        assert stub.Enroll(request()).certificate  # the first use is accepted
        import grpc

        with pytest.raises(grpc.RpcError) as replayed:
            stub.Enroll(request())  # the same nonce again: refused
        channel.close()
    assert replayed.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert dict(replayed.value.trailing_metadata())["enclaverec-check"] == "nonce"


def test_refuses_a_submission_not_signed_by_the_owner(job, tmp_path):
    from enclaverec.crypto import keys
    from enclaverec.distributed.config import OwnerConfig
    from enclaverec.distributed.owner import OwnerClient

    config = OwnerConfig.load(job.files.owner_config)
    impostor = keys.generate_private_key()
    with running_keybroker(job, tmp_path / "state") as broker:
        client = OwnerClient(config, impostor)
        # The impostor cannot unwrap the data key; it sends a key of its own.
        client.data_key = lambda: (b"\x01" * 32, broker.config.dataset_id)  # type: ignore[method-assign]
        with pytest.raises(RequestRefusedError) as refused:
            client.submit()
        client.close()
        assert broker.state.data_key is None
    assert refused.value.check == "owner_signature"


def test_a_tampered_or_swapped_shard_is_refused(job):
    # The host modifies the file the worker's measured configuration names.
    shard = job.shards / "shard-0.enc"
    original = shard.read_bytes()
    with running_keybroker(job), owner(job) as client:
        client.submit()
        try:
            data = bytearray(original)
            data[-40] ^= 1
            shard.write_bytes(bytes(data))
            with pytest.raises(IntegrityError) as tampered:
                join_job(job.files.worker_configs[0])
            shard.write_bytes((job.shards / "shard-1.enc").read_bytes())
            with pytest.raises(IntegrityError) as swapped:
                join_job(job.files.worker_configs[0])
        finally:
            shard.write_bytes(original)
    assert tampered.value.exit_code == 4 and swapped.value.exit_code == 4


def test_a_restarted_key_broker_resumes_from_sealed_state(job, tmp_path):
    import shutil

    with running_keybroker(job) as broker, owner(job) as client:
        client.submit()
    state_dir = broker.state_dir
    # The host restarts the key broker: the key is still there, no new submission.
    with running_keybroker(job) as again:
        assert again.state.data_key is not None and again.state.restarts >= 1
        setup = join_job(job.files.worker_configs[1])
        setup.session.close()
    # A modified sealed state stops the start (integrity), never a silent fresh start.
    backup = tmp_path / "state"
    shutil.copy(state_dir / STATE_FILE, backup)
    try:
        blob = bytearray((state_dir / STATE_FILE).read_bytes())
        blob[-1] ^= 1
        (state_dir / STATE_FILE).write_bytes(bytes(blob))
        with pytest.raises(IntegrityError):
            make_keybroker(job.files.job_toml)
    finally:
        shutil.copy(backup, state_dir / STATE_FILE)
