"""Each enclave role, run as its own process, loads no ``enclaverec`` module outside its
closure (the files its simulated MRENCLAVE measures and its Gramine manifest trusts)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
from distributed_helpers import make_job, owner, running_keybroker
from federation_helpers import WAIT_SECONDS, logreg_plan, new_federation

from enclaverec.tee.bytecode import source_only_command
from enclaverec.tee.closure import closure
from enclaverec.tee.measurement import package_root
from enclaverec.tee.roles import ROLE_SPECS

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def _dumping_role(entry: str, dump: Path, args: list[str]) -> list[str]:
    """The role's source-only command, writing the ``enclaverec`` modules it loaded to
    ``dump`` when it exits."""
    prelude = (
        "import atexit, json, sys\n"
        "def dump():\n"
        f"    with open({str(dump)!r}, 'w') as f:\n"
        "        json.dump(sorted(n for n in sys.modules if n.split('.')[0] == 'enclaverec'), f)\n"
        "atexit.register(dump)\n"
    )
    command = source_only_command(entry, args)
    assert command[2] == "-c"  # python3 -B -c BOOTSTRAP ENTRY ARGS
    return [*command[:3], prelude + command[3], *command[4:]]


def _check_within_closure(role: str, dump: Path) -> set[str]:
    loaded = set(json.loads(dump.read_text()))
    allowed = set(closure(ROLE_SPECS[role].entry, package_root()))
    assert loaded - allowed == set(), f"{role} loaded modules outside its closure"
    return loaded


def _wait_listening(port: int, process: subprocess.Popen) -> None:
    give_up = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < give_up and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port} (exit {process.poll()})")


def test_aggregator_and_parties_load_only_their_closures(tmp_path):
    federation = new_federation(
        tmp_path / "federation", plan=logreg_plan(rounds=1, parties=2), parties=2
    )
    aggregator_args = federation.aggregator_args()[1:]
    processes = {
        "aggregator": subprocess.Popen(
            _dumping_role(
                ROLE_SPECS["aggregator"].entry,
                tmp_path / "aggregator.json",
                aggregator_args,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    }
    _wait_listening(federation.enrollment_port, processes["aggregator"])
    for index in range(2):
        processes[f"party-{index}"] = subprocess.Popen(
            _dumping_role(
                ROLE_SPECS["party"].entry,
                tmp_path / f"party-{index}.json",
                federation.party_args(index)[1:],
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    for name, process in processes.items():
        output, _ = process.communicate(timeout=WAIT_SECONDS * 2)
        assert process.returncode == 0, f"{name}: {output.decode(errors='replace')[-3000:]}"

    aggregator = _check_within_closure("aggregator", tmp_path / "aggregator.json")
    assert {"enclaverec.federated.aggregator", "enclaverec.paramservice.service"} <= aggregator
    assert not any(name.startswith(("enclaverec.model", "enclaverec.cli")) for name in aggregator)
    for index in range(2):
        party = _check_within_closure("party", tmp_path / f"party-{index}.json")
        assert "enclaverec.federated.party" in party
    assert federation.summary_file.exists()


def test_keybroker_loads_only_its_closure(tmp_path):
    job = make_job(tmp_path)
    port = tomllib.loads(job.files.job_toml.read_text())["keybroker"]["port"]
    process = subprocess.Popen(
        _dumping_role(
            ROLE_SPECS["keybroker"].entry,
            tmp_path / "keybroker.json",
            ["--config", str(job.files.job_toml), "--state-dir", str(tmp_path / "kb")],
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_listening(port, process)
        with owner(job) as client:
            assert client.submit() is False  # the first submission
            assert client.status()["submitted"] is True
    finally:
        process.send_signal(signal.SIGINT)  # the role stops cleanly (exit 130)
        output, _ = process.communicate(timeout=WAIT_SECONDS)
    assert process.returncode == 130, output.decode(errors="replace")[-3000:]
    loaded = _check_within_closure("keybroker", tmp_path / "keybroker.json")
    assert "enclaverec.distributed.keybroker" in loaded


def test_parameter_server_and_workers_load_only_their_closures(tmp_path):
    job = make_job(tmp_path, epochs=1)
    with running_keybroker(job), owner(job) as client:
        client.submit()
        processes = {}
        for role, paths in (
            ("paramserver", job.files.paramserver_configs),
            ("worker", job.files.worker_configs),
        ):
            for path in paths:
                processes[path.parent.name] = (
                    role,
                    subprocess.Popen(
                        _dumping_role(
                            ROLE_SPECS[role].entry,
                            tmp_path / f"{path.parent.name}.json",
                            ["--config", str(path)],
                        ),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                    ),
                )
        for name, (_, process) in processes.items():
            output, _ = process.communicate(timeout=WAIT_SECONDS * 2)
            assert process.returncode == 0, f"{name}: {output.decode(errors='replace')[-3000:]}"
        client.wait_finished(30)
    for name, (role, _) in processes.items():
        loaded = _check_within_closure(role, tmp_path / f"{name}.json")
        assert f"enclaverec.distributed.{role}" in loaded
        assert not any(module.startswith("enclaverec.cli") for module in loaded)
