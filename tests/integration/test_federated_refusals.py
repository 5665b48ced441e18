"""Who may join a federation, and whom a party trusts: enrollments refused for a key outside
the membership and for party enclaves that fail the plan's policy (DEBUG, another
product), and parties that refuse an aggregator their policy does not allow, or whose
measured configuration was changed after ``init``. Each refusal leaves the aggregator
untouched: no certificate issued, no peer recorded, nothing in its audit log but the
refusal itself.

The module shares one aggregator (run in a thread of this process, simulated TEE, parties
attest); the last test lets the real members run the federation to its end.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
import tomli_w
from federation_helpers import (
    AggregatorThread,
    Federation,
    PartyThread,
    RoleProcess,
    audit_events,
    is_event,
    logreg_plan,
    new_federation,
    normalised,
    wait_for_event,
)

from enclaverec.crypto import keys
from enclaverec.data.prepared import load_prepared
from enclaverec.errors import EnrollmentRefusedError, MrEnclaveError
from enclaverec.federated.config import PartyConfig
from enclaverec.federated.party import PartyOptions
from enclaverec.roles.party import (
    PartySetup,
    default_trainer_factory,
    make_party_session,
    run_party,
)
from enclaverec.tee.measurement import ROLE_ISV_PROD_IDS, measured_inputs
from enclaverec.tee.role_setup import verifier_context
from enclaverec.tee.simulated_backend import SimulatedBackend
from enclaverec.tee.simulation_pki import SimulationPKI
from enclaverec.transport.endpoints import ServerEndpoints
from enclaverec.transport.enrollment import EnrollmentCredentials
from enclaverec.transport.session import ClientSession

PARTIES = 2
# A refusal is final: the party must not keep retrying for minutes.
FAIL_FAST = PartyOptions(reconnect_seconds=5.0, poll_seconds=2.0)


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> Federation:
    root = tmp_path_factory.mktemp("refusals") / "federation"
    return new_federation(root, plan=logreg_plan(rounds=1, parties=PARTIES), parties=PARTIES)


@pytest.fixture(scope="module")
def aggregator(federation):
    runner = AggregatorThread(federation).start()
    yield runner
    if runner.running:
        # A test failed before the members finished the federation: finish it, so that
        # the aggregator's thread and ports are released.
        members = [PartyThread(federation.party(i)).start() for i in range(PARTIES)]
        for member in members:
            try:
                member.join()
            except Exception:  # noqa: BLE001 - best effort; the failing test reported
                pass
        runner.join()


def party_document(federation: Federation, index: int) -> dict:
    return tomllib.loads(federation.party(index).read_text())


def write_party(federation: Federation, name: str, document: dict) -> Path:
    """A party folder beside the real ones (same relative paths to simulation and data)."""
    folder = federation.files.root / name
    folder.mkdir(mode=0o700)
    path = folder / "party.toml"
    path.write_bytes(tomli_w.dumps(document).encode())
    return path


def own_identity(folder: Path) -> None:
    """A fresh membership key pair in ``folder``, listed nowhere."""
    passphrase = b"not-a-member-passphrase"
    fd = os.open(folder / "identity.pass", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(passphrase + b"\n")
    keys.save_key_pair(keys.generate_private_key(), folder / "identity.key", passphrase)


class Untouched:
    """Snapshot of what the aggregator has recorded; ``check`` asserts nothing changed."""

    def __init__(self, federation: Federation, runner: AggregatorThread) -> None:
        self.federation, self.runner = federation, runner
        self.audit = audit_events(federation.audit)
        self.summary = self._recorded()

    def _recorded(self) -> dict:
        summary = self.runner.aggregator.summary()
        return {key: summary[key] for key in ("attested_peers", "contributions", "history")}

    def refusals(self) -> list[dict]:
        """The enrollment refusals recorded since the snapshot (the audit log's only
        change a refused joiner may cause)."""
        return [
            event
            for event in audit_events(self.federation.audit)[len(self.audit) :]
            if event["event"] == "enrollment_refused"
        ]

    def check(self) -> None:
        assert self.runner.running
        events = audit_events(self.federation.audit)
        assert events[: len(self.audit)] == self.audit
        assert all(event["event"] == "enrollment_refused" for event in events[len(self.audit) :])
        assert self._recorded() == self.summary


@pytest.mark.parametrize(
    "claimed_id", ["party-0", "party-7"], ids=["a-member-s-id", "an-unlisted-id"]
)
def test_a_party_whose_key_is_not_in_the_membership_is_refused_enrollment(
    federation, aggregator, claimed_id
):
    document = party_document(federation, 0)
    document["party"]["id"] = claimed_id
    document["party"]["data"] = "../party-0/data"
    config = write_party(federation, f"outsider-{claimed_id}", document)
    own_identity(config.parent)
    untouched = Untouched(federation, aggregator)

    with pytest.raises(EnrollmentRefusedError) as refused:
        run_party(make_party_session(config), default_trainer_factory(), FAIL_FAST)

    assert refused.value.check == "membership"
    # One answer whether the id is listed or not; the detail only in the audit log.
    assert "this party id and signature are not a member" in str(refused.value)
    assert [event["claimed_party_id"] for event in untouched.refusals()] == [claimed_id]
    untouched.check()


def member_in_enclave(federation: Federation, index: int, **enclave) -> PartySetup:
    """A real member (its listed key, its data) whose enclave is not what the plan allows."""
    config = PartyConfig.load(federation.party(index))
    passphrase = keys.read_passphrase(config.passphrase_file, confirm=False)
    pki = SimulationPKI.load(config.simulation_dir)
    backend = SimulatedBackend(pki, measured_inputs("party", config.raw).mrenclave(), **enclave)
    session = ClientSession(
        ServerEndpoints(
            config.aggregator_host, config.aggregator_port, config.aggregator_enrollment_port
        ),
        verifier_context(config.tee, config.aggregator_policy, config.simulation_dir, None),
        EnrollmentCredentials(
            config.party_id,
            membership_key=keys.load_private_key(config.identity_key, passphrase),
            backend=backend,
        ),
    )
    return PartySetup(config, session, load_prepared(config.data))


@pytest.mark.parametrize(
    ("enclave", "check"),
    [
        ({"isv_prod_id": ROLE_ISV_PROD_IDS["party"], "debug": True}, "debug"),
        ({"isv_prod_id": ROLE_ISV_PROD_IDS["aggregator"]}, "isv_prod_id"),
    ],
    ids=["debug-enclave", "another-product"],
)
def test_a_member_whose_enclave_fails_the_party_policy_is_refused_enrollment(
    federation, aggregator, enclave, check
):
    setup = member_in_enclave(federation, 1, **enclave)
    untouched = Untouched(federation, aggregator)

    with pytest.raises(EnrollmentRefusedError) as refused:
        run_party(setup, default_trainer_factory(), FAIL_FAST)

    assert refused.value.check == check
    untouched.check()


def test_a_party_refuses_an_aggregator_its_policy_does_not_allow(federation, aggregator):
    document = party_document(federation, 0)
    allowed = bytes.fromhex("5a" * 32)
    assert allowed != federation.files.aggregator_mrenclave
    document["aggregator_policy"]["mrenclave"] = [allowed.hex()]
    document["party"]["data"] = "../party-0/data"
    document["party"]["identity_key"] = "../party-0/identity.key"
    document["party"]["passphrase_file"] = "../party-0/identity.pass"
    config = write_party(federation, "pinned-elsewhere", document)
    untouched = Untouched(federation, aggregator)

    with pytest.raises(MrEnclaveError) as refused:
        run_party(make_party_session(config), default_trainer_factory(), FAIL_FAST)

    assert refused.value.got == federation.files.aggregator_mrenclave.hex()
    # Refused before enrolling: the aggregator holds no trace of the party.
    untouched.check()


def test_the_members_run_the_federation_that_refused_the_others(federation, aggregator):
    members = [PartyThread(federation.party(i)).start() for i in range(PARTIES)]
    results = [member.join() for member in members]
    summary = aggregator.join()

    assert [result.rounds_trained for result in results] == [[1], [1]]
    assert summary["rounds_completed"] == 1
    assert summary["contributions"] == {"party-0": [1], "party-1": [1]}
    assert [peer["party_id"] for peer in summary["attested_peers"]] == ["party-0", "party-1"]
    enrolled = [e["party_id"] for e in audit_events(federation.audit) if e["event"] == "enrolled"]
    assert sorted(enrolled) == ["party-0", "party-1"]


@pytest.mark.multiprocess
def test_a_party_refuses_an_aggregator_whose_membership_was_changed_after_init(tmp_path):
    federation = new_federation(
        tmp_path / "federation", plan=logreg_plan(rounds=1, parties=PARTIES), parties=PARTIES
    )
    # The aggregator's host lists a member of its own, to receive the global model.
    document = tomllib.loads(federation.config.read_text())
    intruder = keys.generate_private_key()
    document["membership"]["party-2"] = {
        "public_key": keys.public_key_pem(intruder.public_key()).decode(),
        "max_rows": 1000,
    }
    federation.config.write_bytes(tomli_w.dumps(document).encode())

    aggregator = RoleProcess(
        "aggregator", tmp_path / "aggregator.log", *federation.aggregator_args()
    )
    try:
        started = wait_for_event(
            federation.audit, is_event("started"), "started", alive=[aggregator]
        )
        pinned = federation.files.aggregator_mrenclave.hex()
        assert started["mrenclave"] != pinned  # the membership is measured
        party = RoleProcess("party-0", tmp_path / "party-0.log", *federation.party_args(0))
        assert party.wait() == 3, party.output()
        assert aggregator.poll() is None  # refused by the party, not unreachable
    finally:
        aggregator.stop()

    output = normalised(party.output())
    assert f"got {started['mrenclave']}" in output and pinned in output
    # The aggregator received nothing from the party: it only started.
    assert [event["event"] for event in audit_events(federation.audit)] == ["started"]
