"""Faults and secrets of running roles, each role its own process.

A party SIGKILLed while round 2 trains: with a quorum below 1 and a short deadline the
round completes without it, later rounds go on, and ``simulate`` still writes every round
to ``metrics.json`` (then reports the party's failure). The same run is searched for keys
and passphrases in the roles' argv and environment (read from /proc while they run) and
in everything they logged. An aggregator SIGKILLed mid-federation and started again
resumes from its sealed checkpoint, and its parties re-verify and re-pin it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from federation_helpers import (
    DATASET,
    WAIT_SECONDS,
    RoleProcess,
    audit_events,
    child_processes,
    cli_command,
    is_event,
    key_forms,
    logreg_plan,
    new_federation,
    normalised,
    secret_forms,
    wait_for_event,
)

from enclaverec.crypto import keys
from enclaverec.crypto.signing import private_key_from_pem
from enclaverec.federated.aggregator import AUDIT_FILE, SUMMARY_FILE
from enclaverec.federated.checkpoint import SEALING_LABEL as CHECKPOINT_LABEL
from enclaverec.federated.config import PartyConfig
from enclaverec.tee.sealed_keys import SEALING_LABEL as KEYS_LABEL
from enclaverec.tee.sealing import unseal_file
from enclaverec.tee.simulated_backend import SimulatedBackend
from enclaverec.tee.simulation_pki import KEYS_DIR, SEALING_KEY_FILE, SimulationPKI

pytestmark = pytest.mark.multiprocess

ROUNDS = 3
VICTIM = "party-1"
SURVIVOR = "party-0"


# --- a simulate run with a party killed in round 2 -----------------------------------------


@dataclass
class Exposed:
    """What another user of the host can read of a running role."""

    pid: int
    cmdline: bytes
    environ: bytes


@dataclass
class KilledRun:
    """A finished ``simulate`` run, and what /proc showed of its roles while they ran."""

    output: Path
    exit_code: int
    stdout: str
    stderr: str
    roles: dict[str, Exposed]


def role_name(argv: list[str]) -> str | None:
    """``aggregator`` or the party's id, once the child runs its role's entry module (``-m
    enclaverec.roles.ROLE``) or its CLI command."""
    if "-m" in argv and argv[argv.index("-m") + 1 :][:1] in (
        ["enclaverec.roles.aggregator"],
        ["enclaverec.roles.party"],
    ):
        command = [argv[argv.index("-m") + 1].rpartition(".")[2], *argv[argv.index("-m") + 2 :]]
    elif "federated" in argv:
        command = argv[argv.index("federated") + 1 :]
    else:
        return None
    if command[:1] == ["aggregator"]:
        return "aggregator"
    if command[:1] == ["party"] and "--config" in command:
        return Path(command[command.index("--config") + 1]).parent.name
    return None


def expose(pid: int) -> Exposed:
    proc = Path("/proc") / str(pid)
    return Exposed(pid, (proc / "cmdline").read_bytes(), (proc / "environ").read_bytes())


def run_simulate_killing_a_party(root: Path) -> KilledRun:
    output = root / "run"
    command = cli_command(
        "federated", "simulate",
        "--parties", "2", "--rounds", str(ROUNDS), "--dataset", DATASET, "--model", "logreg",
        # Two local epochs: training takes far longer than the test takes to react to
        # round 1's audit line, so the victim dies before it can send round 2's update.
        "--local-epochs", "2",
        # One party's update suffices once the deadline has passed; the deadline leaves
        # both parties ample time for round 1 (it runs from the first task handed out).
        "--quorum", "0.5", "--min-parties", "1", "--deadline", "4",
        "--output", str(output),
    )  # fmt: skip
    stdout, stderr = root / "simulate.out", root / "simulate.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        simulate = subprocess.Popen(command, stdout=out, stderr=err)
    audit = output / "federation" / "aggregator" / AUDIT_FILE
    roles: dict[str, Exposed] = {}
    killed = False
    give_up = time.monotonic() + 4 * WAIT_SECONDS
    try:
        while simulate.poll() is None:
            # Scan /proc until every role was seen (then only the audit log: react fast).
            children = child_processes(simulate.pid) if len(roles) < 3 else {}
            for pid, argv in children.items():
                name = role_name(argv)
                if name is not None and name not in roles:
                    try:
                        roles[name] = expose(pid)
                    except OSError:
                        continue  # it exited meanwhile; the assertions below notice
            if not killed and any(
                is_event("round_completed", round=1)(event) for event in audit_events(audit)
            ):
                assert VICTIM in roles, "the victim's process was never seen"
                os.kill(roles[VICTIM].pid, signal.SIGKILL)
                killed = True
            if time.monotonic() > give_up:
                raise AssertionError("simulate did not finish")
            time.sleep(0.02)
    finally:
        if simulate.poll() is None:
            for exposed in roles.values():  # its role processes run in their own sessions
                try:
                    os.kill(exposed.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            simulate.kill()
            simulate.wait(30)
    assert killed, "round 1 never completed"
    return KilledRun(output, simulate.returncode, stdout.read_text(), stderr.read_text(), roles)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> KilledRun:
    return run_simulate_killing_a_party(tmp_path_factory.mktemp("killed"))


def test_a_party_killed_in_round_2_leaves_the_quorum_to_finish(killed_run):
    federation = killed_run.output / "federation"
    summary = json.loads((federation / "aggregator" / SUMMARY_FILE).read_text())
    metrics = json.loads((killed_run.output / "metrics.json").read_text())
    events = audit_events(federation / "aggregator" / AUDIT_FILE)

    # simulate writes what was achieved, then reports the party it lost.
    assert killed_run.exit_code == 1, killed_run.stderr
    assert f"{VICTIM} (exit -{signal.SIGKILL.value}" in normalised(killed_run.stderr)
    assert SURVIVOR + " (exit" not in normalised(killed_run.stderr)

    assert metrics["mode"] == "federated"
    assert metrics["rounds_completed"] == ROUNDS
    assert [entry["round"] for entry in metrics["history"]] == [1, 2, 3]
    assert metrics["party_exit_codes"] == {SURVIVOR: 0, VICTIM: -signal.SIGKILL.value}
    # Rounds after the drop are scored on the survivor's test rows only, and say so.
    best_round_parties = summary["history"][metrics["best_round"] - 1]["parties_evaluated"]
    assert metrics["test_covers_all_parties"] is (len(best_round_parties) == 2)
    if not metrics["test_covers_all_parties"]:
        assert metrics["test_split_sha256"] != metrics["global_test_split_sha256"]
    # The victim contributed to round 1 only; rounds 2 and 3 went on with the quorum.
    assert summary["contributions"] == {SURVIVOR: [1, 2, 3], VICTIM: [1]}
    aggregated = [e["parties"] for e in events if e["event"] == "aggregated"]
    assert aggregated == [[SURVIVOR, VICTIM], [SURVIVOR], [SURVIVOR]]
    assert not [e for e in events if e.get("party_id") == VICTIM and e.get("round", 1) > 1]
    assert [h["parties_evaluated"] for h in summary["history"][1:]] == [[SURVIVOR]] * 2
    assert {"event": "finished", "party_id": SURVIVOR}.items() <= events[-1].items()


def aggregator_secrets(federation: Path, mrenclave: bytes) -> list[bytes]:
    """The aggregator's TLS and CA keys (recovered the only way there is: unsealing them)
    and its checkpoint sealing key."""
    backend = SimulatedBackend(SimulationPKI.load(federation / "simulation"), mrenclave)
    sealing_key = backend.sealing_key(KEYS_LABEL)
    state = federation / "aggregator"
    forms = []
    for name in ("tls", "ca"):
        pem = unseal_file(state / f"{name}.sealed", sealing_key, f"p256-key/{name}")
        forms += key_forms(private_key_from_pem(pem))
    return forms + secret_forms(backend.sealing_key(CHECKPOINT_LABEL))


def party_secrets(federation: Path) -> tuple[list[bytes], list[bytes]]:
    """Each party's identity key, and its passphrase."""
    forms, passphrases = [], []
    for config_path in sorted(federation.glob("party-*/party.toml")):
        config = PartyConfig.load(config_path)
        passphrase = keys.read_passphrase(config.passphrase_file, confirm=False)
        passphrases.append(passphrase)
        forms += key_forms(keys.load_private_key(config.identity_key, passphrase))
    return forms, passphrases


def simulation_secrets(federation: Path) -> list[bytes]:
    """The simulation deployment's private keys and sealing key material."""
    folder = federation / "simulation" / KEYS_DIR
    forms = secret_forms((folder / SEALING_KEY_FILE).read_bytes())
    for path in sorted(folder.glob("*.key")):
        if path.name == SEALING_KEY_FILE:
            continue
        forms += key_forms(private_key_from_pem(path.read_bytes()))
    return forms


def test_no_key_or_passphrase_in_the_roles_argv_environment_or_logs(killed_run):
    output = killed_run.output
    federation = output / "federation"
    metrics = json.loads((output / "metrics.json").read_text())
    assert sorted(killed_run.roles) == ["aggregator", SURVIVOR, VICTIM]

    exposed: dict[str, bytes] = {}
    for name, role in killed_run.roles.items():
        exposed[f"{name} cmdline"] = role.cmdline
        exposed[f"{name} environ"] = role.environ
    for path in [
        *sorted((output / "logs").iterdir()),
        federation / "aggregator" / AUDIT_FILE,
        federation / "aggregator" / SUMMARY_FILE,
        output / "metrics.json",
    ]:
        exposed[str(path.relative_to(output))] = path.read_bytes()
    exposed["simulate stdout"] = killed_run.stdout.encode()
    exposed["simulate stderr"] = killed_run.stderr.encode()
    # The search is not vacuous: the logs say what happened.
    assert "round 3/3" in normalised(exposed["logs/aggregator.log"].decode())
    assert "round 3 trained" in normalised(exposed[f"logs/{SURVIVOR}.log"].decode())

    party_forms, passphrases = party_secrets(federation)
    forms = [
        *aggregator_secrets(federation, bytes.fromhex(metrics["aggregator_mrenclave"])),
        *party_forms,
        *simulation_secrets(federation),
        *(form for passphrase in passphrases for form in secret_forms(passphrase)),
    ]
    for where, data in exposed.items():
        assert b"PRIVATE KEY" not in data, where
        leaked = [index for index, form in enumerate(forms) if form in data]
        assert not leaked, f"{where} holds secret form(s) {leaked}"
        assert b"--passphrase" not in data, where


# --- an aggregator killed and restarted ------------------------------------------------------

CERTIFICATE_LINE = re.compile(r"RA-TLS certificate sha256 ([0-9a-f]{64})")
RESTART_ROUNDS = 4


def test_a_restarted_aggregator_resumes_from_its_sealed_checkpoint(tmp_path):
    federation = new_federation(
        tmp_path / "federation",
        plan=logreg_plan(rounds=RESTART_ROUNDS, parties=2, local_epochs=2),
        parties=2,
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    first = RoleProcess("aggregator", logs / "aggregator-1.log", *federation.aggregator_args())
    processes = [first]
    try:
        wait_for_event(federation.audit, is_event("started"), "started", alive=[first])
        parties = [
            RoleProcess(f"party-{i}", logs / f"party-{i}.log", *federation.party_args(i))
            for i in range(2)
        ]
        processes += parties
        wait_for_event(
            federation.audit,
            is_event("round_completed", round=2),
            "round 2 completed",
            alive=processes,
        )
        first.kill()
        before = audit_events(federation.audit)
        second = RoleProcess(
            "restarted aggregator", logs / "aggregator-2.log", *federation.aggregator_args()
        )
        processes.append(second)
        assert second.wait() == 0, second.output()
        assert [party.wait() for party in parties] == [0, 0]
    finally:
        for process in processes:
            process.stop()

    events = audit_events(federation.audit)
    after = events[len(before) :]
    announced = {e["round"]: e for e in before if e["event"] == "round_completed"}
    last_aggregated = max(e["round"] for e in before if e["event"] == "aggregated")
    assert max(announced) < RESTART_ROUNDS, "the crash came after the last round"

    # No completed round was lost: the checkpoint holds at least every round announced.
    (resumed,) = [e for e in after if e["event"] == "resumed"]
    assert resumed["completed_round"] >= max(announced)
    assert resumed["aggregated_round"] >= last_aggregated
    # The rounds after the restart continue from the checkpoint: the model's version goes
    # on from the checkpointed one, and no round is aggregated twice.
    aggregated_after = [
        (e["round"], e["model_version"]) for e in after if e["event"] == "aggregated"
    ]
    expected_rounds = range(resumed["aggregated_round"] + 1, RESTART_ROUNDS + 1)
    assert aggregated_after == [(r, r) for r in expected_rounds]

    summary = json.loads(federation.summary_file.read_text())
    assert summary["restarts"] == 1
    assert summary["rounds_completed"] == RESTART_ROUNDS
    assert [h["round"] for h in summary["history"]] == list(range(1, RESTART_ROUNDS + 1))
    for entry in summary["history"]:
        if entry["round"] in announced:  # the records from before the crash, kept as they were
            assert entry["val_auc"] == announced[entry["round"]]["val_auc"]
    every_round = list(range(1, RESTART_ROUNDS + 1))
    assert summary["contributions"] == {"party-0": every_round, "party-1": every_round}

    # The restarted enclave presents a new certificate; each party re-verified it (same
    # measurement) before re-pinning, and then trained with it.
    certificates = [
        CERTIFICATE_LINE.findall(normalised((logs / f"aggregator-{i}.log").read_text()))
        for i in (1, 2)
    ]
    assert certificates[0] and certificates[1] and not set(certificates[0]) & set(certificates[1])
    mrenclave = federation.files.aggregator_mrenclave.hex()
    for index in range(2):
        log = normalised((logs / f"party-{index}.log").read_text())
        assert "presents a new, verified certificate" in log
        assert log.count(f"MRENCLAVE {mrenclave}") >= 2
        trained_after = [
            e for e in after if e["event"] == "update" and e["party_id"] == f"party-{index}"
        ]
        assert trained_after
