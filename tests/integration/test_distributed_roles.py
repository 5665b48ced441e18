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
