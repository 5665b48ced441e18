"""Faults of a distributed job whose roles are separate processes (simulated TEE, the
numpy logistic regression): a killed worker comes back (attesting again) and the job
ends as planned; a worker that does not come back fails the job clearly after the
plan's deadline; a killed parameter server resumes from its sealed checkpoint and the
job replays to the model of an uninterrupted run; a killed key broker resumes from its
sealed state."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from distributed_helpers import make_job, tiny_dataset

from enclaverec.distributed.config import JobConfig, ParamServerConfig
from enclaverec.distributed.keybroker import AUDIT_FILE
from enclaverec.distributed.owner import OwnerClient
from enclaverec.processes import RoleProcesses, role_command, wait_for_port

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


class Cluster:
    """Every enclave role of ``job`` as a process; the owner in this process."""

    def __init__(self, job, logs: Path) -> None:
        self.job = job
        self.roles = RoleProcesses(logs)
        self.audit = job.files.keybroker_dir / AUDIT_FILE
        self.owner: OwnerClient | None = None

    def spawn(self, name: str) -> None:
        files = self.job.files
        if name == "keybroker":
            command = ("keybroker", files.job_toml)
            port = JobConfig.load(files.job_toml).listen.port
        elif name.startswith("ps-"):
            path = files.job_toml.parent / name / "paramserver.toml"
            command = ("paramserver", path)
            port = ParamServerConfig.load(path).listen.port
        else:
            command, port = ("worker", files.job_toml.parent / name / "worker.toml"), None
        process = self.roles.spawn(
            name, role_command("distributed", command[0], "--config", str(command[1]))
        )
        if port is not None:
            wait_for_port(port, process, timeout=60)

    def start(self) -> None:
        self.spawn("keybroker")
        self.owner = OwnerClient.load(self.job.files.owner_config)
        self.owner.submit()
        for path in self.job.files.paramserver_configs:
            self.spawn(path.parent.name)
        for path in self.job.files.worker_configs:
            self.spawn(path.parent.name)

    def events(self, kind: str) -> list[dict]:
        if not self.audit.exists():
            return []
        lines = self.audit.read_text().splitlines()
        return [e for e in map(json.loads, lines) if e["event"] == kind]

    def wait_for(self, condition, timeout: float = 60.0) -> None:
        give_up = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < give_up, "timed out"
            failed = self.roles.failed()
            assert not failed, [self.roles.describe(name) for name in failed]
            time.sleep(0.02)

    def result(self):
        assert self.owner is not None
        self.owner.wait_finished(120)
        return self.owner.fetch_result()

    def close(self) -> None:
        if self.owner is not None:
            self.owner.close()
        self.roles.stop_all()


def run_cluster(job, logs: Path, fault=None):
    cluster = Cluster(job, logs)
    try:
        cluster.start()
        if fault is not None:
            fault(cluster)
        return cluster, cluster.result()
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def data():
    return tiny_dataset(rows=2400)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """The uninterrupted job's result."""
    folder = tmp_path_factory.mktemp("reference")
    job = make_job(folder, data=data, epochs=3, patience=None)
    return run_cluster(job, folder / "logs")[1]


def test_a_killed_worker_restarts_attests_again_and_the_job_ends_as_planned(
    tmp_path, data, reference
):
    job = make_job(tmp_path, data=data, epochs=3, patience=None)

    def kill_and_restart(cluster: Cluster) -> None:
        cluster.wait_for(lambda: cluster.events("epoch_closed"))
        cluster.roles.kill("worker-1")
        cluster.spawn("worker-1")

    cluster, result = run_cluster(job, tmp_path / "logs", kill_and_restart)
    releases = [e["worker"] for e in cluster.events("key_released")]
    assert releases.count("worker-1") == 2  # the new process attested and asked again
    assert result.metrics["steps_completed"] == reference.metrics["steps_completed"]
    for name, value in reference.model.items():
        np.testing.assert_allclose(result.model[name], value, atol=1e-5, err_msg=name)


def test_a_worker_that_does_not_come_back_fails_the_job_clearly(tmp_path, data):
    job = make_job(tmp_path, data=data, epochs=3, worker_deadline_seconds=3.0)
    cluster = Cluster(job, tmp_path / "logs")
    try:
        cluster.start()
        cluster.wait_for(lambda: cluster.events("epoch_closed"))
        cluster.roles.kill("worker-1")
        assert cluster.roles.wait("ps-0", 60) not in (None, 0)
        assert cluster.roles.wait("worker-0", 60) not in (None, 0)
    finally:
        cluster.close()
    server = cluster.roles.describe("ps-0")
    assert "worker-1" in server and "deadline" in server
    assert "not reached within" in cluster.roles.describe("worker-0")


def test_a_killed_parameter_server_resumes_from_its_sealed_checkpoint_and_the_job_replays(
    tmp_path, data, reference
):
    job = make_job(tmp_path, data=data, epochs=3, patience=None)
    checkpoint = job.root / "ps-0" / "state" / "shard.sealed"

    def kill_and_restart(cluster: Cluster) -> None:
        cluster.wait_for(lambda: cluster.events("epoch_closed") and checkpoint.exists())
        cluster.roles.kill("ps-0")
        cluster.spawn("ps-0")

    _, result = run_cluster(job, tmp_path / "logs", kill_and_restart)
    log = (tmp_path / "logs" / "ps-0.log").read_text()
    assert "resumed from the sealed checkpoint at step" in " ".join(log.split())
    assert result.metrics["steps_completed"] == reference.metrics["steps_completed"]
    for name, value in reference.model.items():
        np.testing.assert_allclose(result.model[name], value, atol=1e-5, err_msg=name)


@pytest.fixture(scope="module")
def reference_two_servers(tmp_path_factory, data):
    """The uninterrupted job's result with two parameter servers."""
    folder = tmp_path_factory.mktemp("reference-p2")
    job = make_job(folder, data=data, epochs=3, patience=None, paramservers=2)
    return run_cluster(job, folder / "logs")[1]


def test_one_of_two_killed_parameter_servers_resumes_and_the_other_rolls_back(
    tmp_path, data, reference_two_servers
):
    # ps-1 (rows only; ps-0 holds the dense arrays) resumes from its checkpoint; ps-0,
    # steps ahead, rolls back to its own checkpoint of that step; the workers replay.
    job = make_job(tmp_path, data=data, epochs=3, patience=None, paramservers=2)
    checkpoint = job.root / "ps-1" / "state" / "shard.sealed"

    def kill_and_restart(cluster: Cluster) -> None:
        # Epoch 1 closed after its last step (31), past the checkpoint of step 30, so
        # ps-0 is ahead of it; two epochs remain to replay. (A fixed sleep here once let a
        # fast job finish before the kill: nothing was left to replay.)
        cluster.wait_for(lambda: cluster.events("epoch_closed") and checkpoint.exists())
        cluster.roles.kill("ps-1")
        cluster.spawn("ps-1")

    _, result = run_cluster(job, tmp_path / "logs", kill_and_restart)
    restarted = " ".join((tmp_path / "logs" / "ps-1.log").read_text().split())
    survivor = " ".join((tmp_path / "logs" / "ps-0.log").read_text().split())
    assert "resumed from the sealed checkpoint at step" in restarted
    resumed = int(restarted.split("resumed from the sealed checkpoint at step ")[1].split()[0])
    assert resumed > 0
    if f"rolled back to step {resumed}" not in survivor:
        # Killed exactly at a checkpoint step: nothing to roll back, said so by nobody.
        assert "rolled back" not in survivor
    assert result.metrics["steps_completed"] == reference_two_servers.metrics["steps_completed"]
    for name, value in reference_two_servers.model.items():
        np.testing.assert_allclose(result.model[name], value, atol=1e-5, err_msg=name)


def test_a_killed_key_broker_resumes_from_sealed_state(tmp_path, data, reference):
    job = make_job(tmp_path, data=data, epochs=3, patience=None)

    def kill_and_restart(cluster: Cluster) -> None:
        cluster.wait_for(lambda: cluster.events("epoch_closed"))
        cluster.roles.kill("keybroker")
        cluster.spawn("keybroker")

    cluster, result = run_cluster(job, tmp_path / "logs", kill_and_restart)
    assert cluster.events("resumed") and result.metrics["keybroker_restarts"] == 1
    assert [h["epoch"] for h in result.metrics["history"]] == [1, 2, 3]
    for name, value in reference.model.items():
        np.testing.assert_allclose(result.model[name], value, atol=1e-5, err_msg=name)
