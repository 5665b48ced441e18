"""The distributed roles run whole (in threads of the test process, simulated TEE, the
numpy logistic regression): key broker, parameter servers and workers train the job to
its end, the key broker assembles the best model and the owner decrypts it."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from distributed_helpers import make_job, owner, running_keybroker

from enclaverec.data.schema import split_sha256
from enclaverec.distributed.paramserver import ParamServer
from enclaverec.distributed.worker import run_worker


def _run_job(job, *, paramservers):
    results: dict[str, object] = {}
    errors: list[BaseException] = []

    def guarded(name, fn):
        def run():
            try:
                results[name] = fn()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    with running_keybroker(job) as broker, owner(job) as client:
        servers = [ParamServer(path) for path in job.files.paramserver_configs]
        for server in servers:
            server.start()
        try:
            client.submit()
            threads = [guarded(server.config.paramserver_id, server.run) for server in servers] + [
                guarded(path.parent.name, lambda path=path: run_worker(path))
                for path in job.files.worker_configs
            ]
            for thread in threads:
                thread.join(120)
            assert not errors, errors
            client.wait_finished(30)
            result = client.fetch_result()
        finally:
            for server in servers:
                server.stop(0)
    return broker, servers, results, result


@pytest.mark.slow
@pytest.mark.parametrize("paramservers", [1, 2])
def test_a_job_runs_to_its_end_and_the_owner_gets_the_best_model(tmp_path, paramservers):
    job = make_job(tmp_path, paramservers=paramservers, epochs=3)
    broker, servers, results, result = _run_job(job, paramservers=paramservers)
    metrics = result.metrics
    assert metrics["mode"] == "distributed"
    assert metrics["workers"] == 2 and metrics["paramservers"] == paramservers
    assert metrics["attested_peers"] == 2 + paramservers
    assert metrics["test_split_sha256"] == split_sha256(job.data.test.row_ids)
    per_epoch = -(-len(job.data.train) // 64)
    assert metrics["steps_completed"] == per_epoch * metrics["epochs_completed"]
    assert metrics["test_auc"] > 0.6
    # Every worker ran every step; the model is the best epoch's, whole and finite.
    workers = [results[f"worker-{i}"] for i in range(2)]
    assert all(w.steps == metrics["steps_completed"] for w in workers)
    assert sum(w.rows for w in workers) == len(job.data.train) * metrics["epochs_completed"]
    for name, value in result.model.items():
        assert np.isfinite(value).all(), name
    assert all(s.shard.checkpoints >= 1 for s in servers)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A job whose first parameter server is up (no key broker needed to serve)."""
    job = make_job(tmp_path_factory.mktemp("served"))
    server = ParamServer(job.files.paramserver_configs[0])
    server.start()
    yield job, server
    server.stop(0)


def test_a_parameter_server_refuses_a_worker_enclave_outside_the_job(served, tmp_path):
    from enclaverec.distributed.config import WorkerConfig
    from enclaverec.errors import EnrollmentRefusedError
    from enclaverec.tee.kinds import TEEKind
    from enclaverec.tee.role_setup import role_backend, verifier_context
    from enclaverec.transport.endpoints import ServerEndpoints
    from enclaverec.transport.enrollment import EnrollmentCredentials
    from enclaverec.transport.session import ClientSession

    job, server = served
    # worker-0's configuration with one measured value changed: another enclave.
    original = job.files.worker_configs[0]
    changed = tmp_path / "worker.toml"
    changed.write_text(
        original.read_text()
        .replace('data = "', f'data = "{original.parent}/')
        .replace('simulation = "../', f'simulation = "{original.parent.parent}/')
    )
    config = WorkerConfig.load(changed)
    address = server.server.endpoints
    session = ClientSession(
        ServerEndpoints("127.0.0.1", address.application_port, address.enrollment_port),
        verifier_context(
            TEEKind.SIMULATED, config.paramserver_signer_policy, config.simulation_dir, None
        ),
        EnrollmentCredentials(
            "worker-0",
            backend=role_backend("worker", config.tee, config.raw, config.simulation_dir),
        ),
    )
    try:
        with pytest.raises(EnrollmentRefusedError) as refused:
            session.open()
    finally:
        session.close()
    assert refused.value.exit_code == 3 and "mrenclave" in str(refused.value).lower()
    events = server.audit.events()
    assert any(event["event"] == "enrollment_refused" for event in events)


def test_a_worker_refuses_a_parameter_server_outside_the_submitted_pin(served):
    from enclaverec.distributed.config import WorkerConfig
    from enclaverec.distributed.worker import WorkerSetup, paramserver_sessions
    from enclaverec.errors import VerificationError

    job, _ = served
    config = WorkerConfig.load(job.files.worker_configs[0])
    # The key broker handed another measurement for ps-0 than the server proves.
    setup = WorkerSetup(config, None, None, {"ps-0": bytes(range(32))})  # type: ignore[arg-type]
    sessions = paramserver_sessions(setup)
    try:
        with pytest.raises(VerificationError) as refused:
            sessions[0].open()
    finally:
        for session in sessions:
            session.close()
    assert refused.value.exit_code == 3 and refused.value.check == "mrenclave"
    # And without any measurement for it, the worker does not even connect.
    with pytest.raises(VerificationError):
        paramserver_sessions(WorkerSetup(config, None, None, {}))  # type: ignore[arg-type]
