"""``federated simulate``: a whole federation on one machine, each role its own process.

It partitions the data set, writes the federation's files (``init``), starts the
aggregator and the parties as separate ``enclaverec federated ...`` processes over
loopback, follows the aggregator's audit log to print one line per round, and builds
``metrics.json`` and the curves from the aggregator's summary. Nothing here trains or
aggregates: it only orchestrates the real roles.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclaverec.data.schema import DataSet, split_sha256
from enclaverec.errors import EnclaveRecError, TrainingError
from enclaverec.federated.aggregator import AUDIT_FILE, SUMMARY_FILE
from enclaverec.federated.config import FederatedPlan
from enclaverec.federated.setup import FederationFiles, init_federation
from enclaverec.processes import AuditFollower as _AuditFollower
from enclaverec.processes import failure as _failure
from enclaverec.processes import last_error_line as last_error_line
from enclaverec.processes import role_command as _role_command
from enclaverec.processes import wait_for_port as _wait_for_port
from enclaverec.tee.kinds import TEEKind
from enclaverec.transport.endpoints import free_ports as free_ports  # shared home

log = logging.getLogger(__name__)

FEDERATION_DIR = "federation"
LOGS_DIR = "logs"


@dataclass(frozen=True)
class SimulationOptions:
    parties: int
    plan: FederatedPlan
    tee: TEEKind
    parties_attest: bool
    output: Path
    threads_per_party: int = 1
    timeout_seconds: float = 3600.0
    log_level: str = "info"
    party_extra_args: Sequence[str] = ()


@dataclass
class SimulationResult:
    files: FederationFiles
    summary: dict[str, Any]
    party_exit_codes: dict[str, int]
    wall_seconds: float
    logs: Path


def run_simulation(
    options: SimulationOptions,
    party_data: Sequence[DataSet],
    *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> SimulationResult:
    """Run the federation to the end; raises if a role fails or the timeout passes."""
    root = options.output / FEDERATION_DIR
    logs = options.output / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    port, enrollment_port = free_ports(2)
    files = init_federation(
        root,
        parties=options.parties,
        plan=options.plan,
        tee=options.tee,
        parties_attest=options.parties_attest,
        party_data=party_data,
        port=port,
        enrollment_port=enrollment_port,
    )
    started = time.perf_counter()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    handles = []
    follower = _AuditFollower(files.aggregator_dir / AUDIT_FILE)

    def spawn(name: str, command: list[str]) -> None:
        handle = (logs / f"{name}.log").open("wb")
        handles.append(handle)
        processes[name] = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )

    try:
        spawn(
            "aggregator",
            _role_command(
                "federated",
                "aggregator",
                "--config",
                str(files.federation_toml),
                "--state-dir",
                str(files.aggregator_dir),
                "--port",
                str(port),
                "--enrollment-port",
                str(enrollment_port),
                "--log-level",
                options.log_level,
            ),
        )
        _wait_for_port(port, processes["aggregator"], timeout=120.0)
        for config in files.party_configs:
            spawn(
                config.parent.name,
                _role_command(
                    "federated",
                    "party",
                    "--config",
                    str(config),
                    "--threads",
                    str(options.threads_per_party),
                    "--log-level",
                    options.log_level,
                    *options.party_extra_args,
                ),
            )
        deadline = time.monotonic() + options.timeout_seconds
        last_round = 0
        while True:
            for event in follower.new_events():
                if event.get("event") == "round_completed":
                    last_round = max(last_round, int(event["round"]))
                if on_event is not None:
                    on_event(event)
            aggregator = processes["aggregator"].poll()
            if aggregator is not None:
                break
            parties_left = [
                p for n, p in processes.items() if n != "aggregator" and p.poll() is None
            ]
            if not parties_left and last_round < options.plan.rounds:
                # Every party exited while the aggregator still waits: it would only wait
                # for its deadlines. Report the parties' failures now. (After the last
                # round it is only finishing: let it write its summary.)
                failed = {n: p.returncode for n, p in processes.items() if n != "aggregator"}
                if any(code != 0 for code in failed.values()):
                    raise EnclaveRecError(
                        "every party stopped before the federation finished: "
                        + ", ".join(_failure(n, c, logs) for n, c in failed.items())
                    )
            if time.monotonic() > deadline:
                raise TrainingError(
                    f"the federation did not finish within {options.timeout_seconds:.0f} s"
                )
            time.sleep(0.2)
        for event in follower.new_events():
            if on_event is not None:
                on_event(event)
        if aggregator != 0:
            raise EnclaveRecError(
                "the aggregator failed: " + _failure("aggregator", aggregator, logs)
            )
        codes = {}
        for name, process in processes.items():
            if name == "aggregator":
                continue
            try:
                codes[name] = process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                codes[name] = -1
        summary = json.loads((files.aggregator_dir / SUMMARY_FILE).read_text())
    finally:
        for process in processes.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for process in processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for handle in handles:
            handle.close()
    return SimulationResult(
        files=files,
        summary=summary,
        party_exit_codes=codes,
        wall_seconds=time.perf_counter() - started,
        logs=logs,
    )


def union_test_sha256(party_data: Sequence[DataSet]) -> str:
    import numpy as np

    return split_sha256(np.concatenate([data.test.row_ids for data in party_data]))


def check_parties(result: SimulationResult) -> None:
    """Refuse a run in which a party failed, naming its log."""
    failed = {name: code for name, code in result.party_exit_codes.items() if code != 0}
    if failed:
        raise EnclaveRecError(
            "party(ies) failed: "
            + ", ".join(_failure(name, code, result.logs) for name, code in failed.items())
        )
