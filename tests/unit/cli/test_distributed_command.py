"""``enclaverec distributed init | submit | status`` in-process, with the key broker running
in this process: exit codes of refusals included."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))
from distributed_helpers import make_job, running_keybroker  # noqa: E402


def test_init_from_shards(run_cli, tmp_path):
    job = make_job(tmp_path / "made")  # owner key and shards
    code, out, err = run_cli(
        "distributed", "init", "--shards", job.shards, "--owner-key", job.owner_public_key,
        "--output", tmp_path / "job", "--model", "logreg", "--epochs", "2",
    )  # fmt: skip
    assert code == 0, err
    assert "key broker SIMULATED MRENCLAVE" in out
    for name in ("job.toml", "worker-0/worker.toml", "worker-1/worker.toml",
                 "ps-0/paramserver.toml", "owner/owner.toml"):  # fmt: skip
        assert (tmp_path / "job" / name).is_file(), name
    code, _, err = run_cli(
        "distributed", "init", "--shards", job.shards, "--owner-key", job.owner_public_key,
        "--output", tmp_path / "job2", "--mode", "sync", "--staleness", "2",
    )  # fmt: skip
    assert code == 2 and "--staleness" in err


def test_owner_submits_and_reads_status(run_cli, tmp_path):
    job = make_job(tmp_path)
    with running_keybroker(job):
        code, out, err = run_cli("distributed", "submit", "--config", job.files.owner_config)
        assert code == 0, err
        code, out, err = run_cli("distributed", "status", "--config", job.files.owner_config)
        assert code == 0, err
        status = json.loads(out)
        assert status["submitted"] is True and status["finished"] is False
        code, out, err = run_cli("distributed", "fetch-model", "--config",
                                 job.files.owner_config, "--output", tmp_path / "out")  # fmt: skip
        assert code == 1 and "not finished" in err


def test_owner_refuses_a_key_broker_outside_its_pin(run_cli, tmp_path):
    import shutil

    from enclaverec.distributed.config import JobConfig

    # The host runs another job's genuine key broker where the owner expects its own
    # (one simulation root for both, so only the pinned measurement tells them apart).
    job = make_job(tmp_path / "a")
    other = make_job(tmp_path / "b", name="other")
    shutil.rmtree(other.files.simulation_dir)
    shutil.copytree(job.files.simulation_dir, other.files.simulation_dir)
    own = JobConfig.load(job.files.job_toml).listen
    theirs = JobConfig.load(other.files.job_toml).listen
    text = job.files.owner_config.read_text()
    text = text.replace(f"port = {own.port}\n", f"port = {theirs.port}\n")
    text = text.replace(
        f"enrollment_port = {own.enrollment_port}\n",
        f"enrollment_port = {theirs.enrollment_port}\n",
    )
    job.files.owner_config.write_text(text)
    with running_keybroker(other) as broker:
        code, _, err = run_cli("distributed", "submit", "--config", job.files.owner_config)
        assert broker.state.data_key is None  # nothing was sent
    assert code == 3 and "refused (mrenclave)" in err
