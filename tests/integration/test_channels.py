"""Attested channels between separate processes: a restarted server is re-verified (and
refused when its measurement changed), and the server role leaks no private key anywhere
outside its sealed state."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from enclaverec.crypto.keys import public_key_pem
from enclaverec.crypto.signing import ECPrivateKey, generate_p256_key, private_key_from_pem
from enclaverec.errors import MrEnclaveError
from enclaverec.tee.policy import PolicySpec
from enclaverec.tee.sealed_keys import SEALING_LABEL
from enclaverec.tee.sealing import unseal_file
from enclaverec.tee.simulated_backend import SimulatedBackend
from enclaverec.tee.simulation_pki import SimulationPKI
from enclaverec.tee.verifier_context import VerifierContext
from enclaverec.transport.endpoints import ServerEndpoints
from enclaverec.transport.enrollment import EnrollmentCredentials
from enclaverec.transport.session import ClientSession

pytestmark = pytest.mark.multiprocess

SERVER_SCRIPT = Path(__file__).with_name("channel_server.py")
AGGREGATOR = bytes.fromhex("a1" * 32)
PARTY = bytes.fromhex("b2" * 32)
ROGUE = bytes.fromhex("c3" * 32)
WHO_AM_I = "/enclaverec.test.Echo/WhoAmI"
START_TIMEOUT_SECONDS = 30.0


def who_am_i(channel: grpc.Channel) -> dict:
    return json.loads(channel.unary_unary(WHO_AM_I)(b"", timeout=10))


class ServerProcess:
    """One run of channel_server.py in its own working directory."""

    def __init__(
        self,
        root: Path,
        name: str,
        *,
        deployment: Path,
        state: Path,
        mrenclave: bytes,
        membership: Path,
        ports: ServerEndpoints | None = None,
    ) -> None:
        self.workdir = root / name
        self.workdir.mkdir()
        self.log = self.workdir / "server.log"
        self.ready = self.workdir / "ready.json"
        argv = [
            sys.executable,
            str(SERVER_SCRIPT),
            "--deployment", str(deployment),
            "--state", str(state),
            "--mrenclave", mrenclave.hex(),
            "--party-mrenclave", PARTY.hex(),
            "--membership", str(membership),
            "--ready", str(self.ready),
            "--log", str(self.log),
        ]  # fmt: skip
        if ports is not None:
            argv += [
                "--application-port", str(ports.application_port),
                "--enrollment-port", str(ports.enrollment_port),
            ]  # fmt: skip
        self.process = subprocess.Popen(
            argv,
            cwd=self.workdir,
            stdout=open(self.workdir / "stdout", "wb"),  # noqa: SIM115 - closed with the process
            stderr=open(self.workdir / "stderr", "wb"),  # noqa: SIM115
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(
                    f"the server did not start: {(self.workdir / 'stderr').read_text()}"
                )
            time.sleep(0.05)
        info = json.loads(self.ready.read_text())
        self.endpoints = ServerEndpoints(
            "127.0.0.1", info["application_port"], info["enrollment_port"]
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> SimulationPKI:
    return SimulationPKI.create(tmp_path_factory.mktemp("sim") / "deployment")


@pytest.fixture(scope="module")
def member_key() -> ECPrivateKey:
    return generate_p256_key()


@pytest.fixture
def run_server(tmp_path, deployment, member_key):
    membership = tmp_path / "p0.pub"
    membership.write_bytes(public_key_pem(member_key.public_key()))
    processes: list[ServerProcess] = []

    def run(name: str, *, mrenclave: bytes, state: str, ports=None) -> ServerProcess:
        process = ServerProcess(
            tmp_path,
            name,
            deployment=deployment.folder,
            state=tmp_path / state,
            mrenclave=mrenclave,
            membership=membership,
            ports=ports,
        )
        processes.append(process)
        return process

    yield run
    for process in processes:
        process.stop()


def session_to(endpoints, deployment, member_key) -> ClientSession:
    policy = PolicySpec(
        mrenclaves=frozenset({AGGREGATOR}),
        unsafe_allow_simulation=True,
        simulation_roots=frozenset({deployment.root_sha256}),
    ).build()
    return ClientSession(
        endpoints,
        VerifierContext.for_simulation(deployment.folder, policy),
        EnrollmentCredentials(
            "p0",
            membership_key=member_key,
            backend=SimulatedBackend(deployment, PARTY),
        ),
    )


def test_a_restarted_server_is_reverified_and_refused_with_another_measurement(
    run_server, deployment, member_key
):
    first = run_server("first", mrenclave=AGGREGATOR, state="aggregator-state")
    with session_to(first.endpoints, deployment, member_key) as session:
        before = session.call(who_am_i)
        pinned = session.server.certificate_der

        # The same enclave restarts on the same ports: a new certificate over the same
        # sealed key is verified and pinned, and the certificate the client got from the
        # first run is still accepted (the CA key came back from sealed state).
        first.stop()
        again = run_server(
            "again", mrenclave=AGGREGATOR, state="aggregator-state", ports=first.endpoints
        )
        after = session.call(who_am_i)
        assert session.server.certificate_der != pinned
        assert after["certificate_sha256"] == before["certificate_sha256"]

        # Another build takes the ports: its evidence fails the client's policy.
        again.stop()
        repinned = session.server.certificate_der
        rogue = run_server("rogue", mrenclave=ROGUE, state="rogue-state", ports=first.endpoints)
        with pytest.raises(MrEnclaveError):
            session.call(who_am_i)
        assert session.server.certificate_der == repinned  # never pinned unverified
    rogue.stop()
    assert "served WhoAmI" not in rogue.log.read_text()
    assert again.log.read_text().count("served WhoAmI for p0") == 1


def secret_forms(key: ECPrivateKey) -> list[bytes]:
    """Every form in which a private key could leak: PEM, DER (raw and base64), the raw
    scalar (bytes, hex either case, base64)."""
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    return [
        pem,
        der,
        base64.b64encode(der),
        scalar,
        scalar.hex().encode(),
        scalar.hex().upper().encode(),
        base64.b64encode(scalar),
    ]


def test_no_private_key_outside_sealed_state(run_server, deployment, member_key, tmp_path):
    server = run_server("keys", mrenclave=AGGREGATOR, state="keys-state")
    with session_to(server.endpoints, deployment, member_key) as session:
        assert session.call(who_am_i)["party_id"] == "p0"
        client_key = session.identity.private_key
    # What another user of the host can read while the server runs.
    proc = Path("/proc") / str(server.pid)
    exposed = {
        "cmdline": (proc / "cmdline").read_bytes(),
        "environ": (proc / "environ").read_bytes(),
    }
    server.stop()
    # The server's own keys, recovered the only way there is: unsealing them.
    sealing_key = SimulatedBackend(deployment, AGGREGATOR).sealing_key(SEALING_LABEL)
    state = tmp_path / "keys-state"
    keys = [
        private_key_from_pem(unseal_file(state / f"{name}.sealed", sealing_key, f"p256-key/{name}"))
        for name in ("tls", "ca")
    ]
    # Every file the process wrote, except the sealed ones.
    written = [
        path
        for folder in (server.workdir, state)
        for path in folder.rglob("*")
        if path.is_file() and path.suffix != ".sealed"
    ]
    assert sorted(path.name for path in state.iterdir()) == ["ca.sealed", "tls.sealed"]
    exposed.update({str(path.relative_to(tmp_path)): path.read_bytes() for path in written})
    assert b"enrolled p0" in exposed["keys/server.log"]  # the log is not empty
    forms = [form for key in (*keys, client_key) for form in secret_forms(key)]
    for where, data in exposed.items():
        assert b"PRIVATE KEY" not in data, where
        for form in forms:
            assert form not in data, where
    assert b"--passphrase" not in exposed["cmdline"]
    assert os.fsencode(str(state / "tls.sealed")) not in exposed["cmdline"]
