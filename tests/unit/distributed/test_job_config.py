"""``distributed init`` and the job's configurations: who pins whom, strict reading, and
nothing half-written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from enclaverec.distributed.config import (
    DistributedPlan,
    JobConfig,
    OwnerConfig,
    ParamServerConfig,
    WorkerConfig,
)
from enclaverec.errors import ConfigError, UsageError
from enclaverec.tee.measurement import ROLE_ISV_PROD_IDS, measured_inputs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))
from distributed_helpers import logreg_plan, make_job, tiny_dataset  # noqa: E402


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return make_job(tmp_path_factory.mktemp("job"), workers=2, paramservers=2)


def test_every_pin_names_the_measurement_of_the_file_it_pins(job):
    files = job.files
    config = JobConfig.load(files.job_toml)
    keybroker = measured_inputs("keybroker", config.raw).mrenclave()
    assert keybroker == files.keybroker_mrenclave
    for path in files.worker_configs:
        worker = WorkerConfig.load(path)
        # The key broker pins each worker's exact measurement, under its own id.
        assert (
            config.members[worker.worker_id].mrenclave
            == measured_inputs("worker", worker.raw).mrenclave()
        )
        assert worker.keybroker_policy.isv_prod_id == ROLE_ISV_PROD_IDS["keybroker"]
        assert worker.keybroker_policy.mrsigners and not worker.keybroker_policy.mrenclaves
    owner = OwnerConfig.load(files.owner_config)
    assert owner.keybroker_policy.mrenclaves == {keybroker}
    for path in files.paramserver_configs:
        server = ParamServerConfig.load(path)
        assert server.keybroker_policy.mrenclaves == {keybroker}
        assert server.worker_policy.mrenclaves == {
            config.members[w].mrenclave for w in config.workers
        }
        # ... and binds each worker id to its own measurement, as the key broker does.
        assert server.worker_mrenclaves == {
            w: config.members[w].mrenclave for w in config.plan.workers
        }
        assert (
            owner.paramserver_mrenclaves[server.paramserver_id]
            == measured_inputs("paramserver", server.raw).mrenclave()
        )
    assert config.worker_policy.unsafe_allow_simulation  # said, not hidden


def test_the_plan_round_trips_and_refuses_unknown_keys():
    plan = logreg_plan(tiny_dataset())
    assert DistributedPlan.from_toml(plan.to_toml()) == plan
    with pytest.raises(ConfigError, match="unknown key"):
        DistributedPlan.from_toml({**plan.to_toml(), "learning_rat": 0.1})
    with pytest.raises(ConfigError, match="batch_size"):
        DistributedPlan.from_toml({**plan.to_toml(), "batch_size": 0})


def test_a_job_file_with_an_unknown_table_is_refused(job, tmp_path):
    text = job.files.job_toml.read_text() + "\n[extra]\nx = 1\n"
    path = tmp_path / "job.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="unknown key"):
        JobConfig.load(path)


def test_a_worker_without_a_pinned_key_broker_is_refused(job, tmp_path):
    lines = job.files.worker_configs[0].read_text().split("\n[keybroker_policy]")[0]
    path = tmp_path / "worker.toml"
    path.write_text(lines)
    with pytest.raises(ConfigError, match="keybroker_policy"):
        WorkerConfig.load(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("[workers.worker-1]", "[workers.worker-9]", "a worker the plan does not have"),
        ('[workers.worker-1]\nmrenclave = "', '[workers.worker-1]\nmrenclave = "77', "not in"),
    ],
)
def test_a_servers_worker_pins_must_name_the_plans_workers_and_policy(
    job, tmp_path, old, new, message
):
    text = job.files.paramserver_configs[0].read_text()
    assert old in text
    changed = text.replace(old, new)
    if new.endswith("77"):  # keep 64 hex digits: the pin is well-formed but another enclave
        start = changed.index(new) + len(new)
        changed = changed[:start] + changed[start + 2 :]
    path = tmp_path / "paramserver.toml"
    path.write_text(changed)
    with pytest.raises(ConfigError, match=message):
        ParamServerConfig.load(path)


def test_init_refuses_mismatched_shards_and_leaves_nothing(job, tmp_path):
    from enclaverec.distributed.setup import default_ports, init_job
    from enclaverec.tee.kinds import TEEKind

    plan = logreg_plan(tiny_dataset(), workers=3)
    with pytest.raises(UsageError, match="3 worker"):
        init_job(
            tmp_path / "new",
            plan=plan,
            shards=job.shards,
            tee=TEEKind.SIMULATED,
            ports=default_ports("127.0.0.1", 1),
            owner_public_key=job.owner_public_key,
        )
    assert not (tmp_path / "new").exists()
    with pytest.raises(UsageError, match="non-empty"):
        init_job(
            job.root,
            plan=logreg_plan(tiny_dataset()),
            shards=job.shards,
            tee=TEEKind.SIMULATED,
            ports=default_ports("127.0.0.1", 1),
            owner_public_key=job.owner_public_key,
        )
