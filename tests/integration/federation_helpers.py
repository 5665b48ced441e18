"""Helpers of the federated integration tests: federations written by ``init``, roles run in
threads of the test process or as ``enclaverec federated`` processes, the aggregator's
audit log, a TCP proxy that records what crosses it, and the forms a secret can leak in.

Waits are on events (audit lines, files, process exits), each with a generous deadline:
the machine is shared, so a deadline only bounds a hung test, it never paces one.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enclaverec.data.partition import partition_dataset
from enclaverec.data.schema import DataSet
from enclaverec.data.sources import DataSelection, load_dataset
from enclaverec.federated.aggregator import AUDIT_FILE, SUMMARY_FILE, FederatedAggregator
from enclaverec.federated.config import FederatedPlan, ModelKind
from enclaverec.federated.party import PartyOptions, PartyResult
from enclaverec.federated.rounds import SelectionConfig
from enclaverec.federated.setup import FederationFiles, init_federation
from enclaverec.federated.simulate import free_ports
from enclaverec.federated.strategies import LocalTraining, StrategyConfig
from enclaverec.federated.strategies.base import Clipping
from enclaverec.roles.aggregator import make_aggregator
from enclaverec.roles.party import (
    PartySetup,
    default_trainer_factory,
    make_party_session,
    run_party,
)
from enclaverec.tee.kinds import TEEKind
from enclaverec.transport.server import ListenConfig

DATASET = "movielens-100k"
SEED = 0
WAIT_SECONDS = 90.0
POLL_SECONDS = 0.02


# --- data and plans ------------------------------------------------------------------------


@functools.cache
def movielens() -> DataSet:
    """MovieLens-100K split by ``SEED`` (loaded once per test process)."""
    return load_dataset(DataSelection(dataset=DATASET), seed=SEED)


@functools.cache
def party_shares(parties: int) -> tuple[DataSet, ...]:
    return tuple(partition_dataset(movielens(), parties=parties, mode="iid", seed=SEED))


def logreg_plan(
    *,
    rounds: int,
    parties: int,
    quorum: float = 1.0,
    deadline: float = 120.0,
    min_parties: int | None = None,
    local_epochs: int = 1,
) -> FederatedPlan:
    """A plan that trains the numpy logistic regression (real SGD, no TensorFlow)."""
    data = movielens()
    return FederatedPlan(
        model=ModelKind.LOGREG,
        preset="logreg",
        optimizer="sgd",
        dataset=data.name,
        features=data.spec,
        hashing=data.info.get("hashing"),
        seed=SEED,
        rounds=rounds,
        local=LocalTraining(epochs=local_epochs, batch_size=256, learning_rate=0.5, seed=SEED),
        # Plain FedAvg without clipping: protocol tests recompute the expected model by hand.
        strategy=StrategyConfig(name="fedavg", clipping=Clipping.NONE),
        selection=SelectionConfig(
            min_parties=min_parties or parties, quorum=quorum, deadline_seconds=deadline
        ),
    )


# --- a federation on disk ------------------------------------------------------------------


@dataclass(frozen=True)
class Federation:
    """The files ``init`` wrote, and the loopback ports it wrote into them."""

    files: FederationFiles
    port: int
    enrollment_port: int

    @property
    def config(self) -> Path:
        return self.files.federation_toml

    @property
    def state_dir(self) -> Path:
        return self.files.aggregator_dir

    @property
    def audit(self) -> Path:
        return self.files.aggregator_dir / AUDIT_FILE

    @property
    def summary_file(self) -> Path:
        return self.files.aggregator_dir / SUMMARY_FILE

    def party(self, index: int) -> Path:
        return self.files.party_configs[index]

    def listen(self) -> ListenConfig:
        return ListenConfig(application_port=self.port, enrollment_port=self.enrollment_port)

    def aggregator_args(self) -> list[str]:
        """``enclaverec federated aggregator`` arguments (only unmeasured flags)."""
        return [
            "aggregator",
            "--config", str(self.config),
            "--state-dir", str(self.state_dir),
            "--port", str(self.port),
            "--enrollment-port", str(self.enrollment_port),
            "--log-level", "info",
        ]  # fmt: skip

    def party_args(self, index: int) -> list[str]:
        """``enclaverec federated party`` arguments for party ``index``."""
        return ["party", "--config", str(self.party(index)), "--log-level", "info"]


def new_federation(
    root: Path,
    *,
    plan: FederatedPlan,
    parties: int,
    tee: TEEKind = TEEKind.SIMULATED,
    parties_attest: bool = True,
) -> Federation:
    port, enrollment_port = free_ports(2)
    files = init_federation(
        root,
        parties=parties,
        plan=plan,
        tee=tee,
        parties_attest=parties_attest,
        party_data=party_shares(parties),
        port=port,
        enrollment_port=enrollment_port,
    )
    return Federation(files, port, enrollment_port)


# --- the audit log -------------------------------------------------------------------------


def audit_events(path: Path) -> list[dict[str, Any]]:
    """The complete lines of the aggregator's audit log (a line being written is skipped)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def wait_until(
    condition: Callable[[], Any],
    what: str,
    *,
    timeout: float = WAIT_SECONDS,
    alive: Iterable[RoleProcess] = (),
) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); fail if a process
    in ``alive`` exits first or the timeout passes."""
    give_up = time.monotonic() + timeout
    watched = list(alive)
    while True:
        value = condition()
        if value:
            return value
        for process in watched:
            if process.poll() is not None:
                raise AssertionError(
                    f"{process.name} exited with {process.returncode} while waiting for "
                    f"{what}:\n{process.output()[-3000:]}"
                )
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_SECONDS)


def wait_for_event(
    path: Path,
    match: Callable[[dict[str, Any]], bool],
    what: str,
    *,
    timeout: float = WAIT_SECONDS,
    alive: Iterable[RoleProcess] = (),
) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((event for event in audit_events(path) if match(event)), None)

    return wait_until(find, f"the audit event {what}", timeout=timeout, alive=alive)


def is_event(name: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda event: (
        event.get("event") == name and all(event.get(key) == value for key, value in fields.items())
    )


# --- roles in this process -------------------------------------------------------------------


class AggregatorThread:
    """A federation's aggregator run in a thread of the test process, so that tests can
    look at its state; ``join`` returns its summary or raises what it raised."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.aggregator: FederatedAggregator = make_aggregator(
            federation.config, state_dir=federation.state_dir, listen=federation.listen()
        )
        self.summary: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="aggregator", daemon=True)

    def _run(self) -> None:
        try:
            self.summary = self.aggregator.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test by join()
            self.error = exc

    def start(self) -> AggregatorThread:
        self._thread.start()
        wait_for_event(self.federation.audit, is_event("started"), "started")
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float = WAIT_SECONDS) -> dict[str, Any]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the aggregator did not finish within {timeout:.0f} s")
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


class PartyThread:
    """One party run in a thread of the test process (``make_party_session`` +
    ``run_party``, as ``enclaverec federated party`` does)."""

    def __init__(
        self,
        config: Path | None = None,
        *,
        setup: PartySetup | None = None,
        options: PartyOptions | None = None,
        aggregator_port: int | None = None,
    ) -> None:
        if setup is None:
            assert config is not None
            setup = make_party_session(config, aggregator_port=aggregator_port)
        self.setup = setup
        self.options = options or PartyOptions(reconnect_seconds=30.0, poll_seconds=2.0)
        self.result: PartyResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=setup.config.party_id, daemon=True)

    def _run(self) -> None:
        try:
            self.result = run_party(self.setup, default_trainer_factory(), self.options)
        except BaseException as exc:  # noqa: BLE001 - handed to the test by join()
            self.error = exc

    def start(self) -> PartyThread:
        self._thread.start()
        return self

    def join(self, timeout: float = WAIT_SECONDS) -> PartyResult:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"{self.setup.config.party_id} did not finish in {timeout} s")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


# --- roles as processes ----------------------------------------------------------------------


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "enclaverec.cli.main", *args]


class RoleProcess:
    """One ``enclaverec federated ...`` process (its own session), output in ``log``."""

    def __init__(self, name: str, log: Path, *args: str) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as handle:
            self.process = subprocess.Popen(
                cli_command("federated", *args),
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        return self.process.poll()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = WAIT_SECONDS) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"{self.name} did not exit within {timeout:.0f} s:\n{self.output()[-3000:]}"
            ) from exc

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or cleaned up (a crash)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def child_processes(parent: int) -> dict[int, list[str]]:
    """The processes whose parent is ``parent``, with their argv (from /proc)."""
    children: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = (Path("/proc") / entry / "stat").read_text()
            # The command name may hold spaces and parentheses: fields follow the last ")".
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == parent:
                argv = (Path("/proc") / entry / "cmdline").read_bytes().split(b"\0")
                children[int(entry)] = [arg.decode(errors="replace") for arg in argv if arg]
        except (OSError, ValueError, IndexError):
            continue  # it exited meanwhile
    return children


def normalised(text: str) -> str:
    """Log text with rich's line wrapping undone (every run of whitespace one space)."""
    return " ".join(text.split())


# --- a recording proxy -------------------------------------------------------------------------


class RecordingProxy:
    """A loopback TCP proxy to ``target_port`` that records the bytes of every connection,
    each direction apart: what a man in the middle (or the host's network stack) sees."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self.client_to_server: list[bytearray] = []
        self.server_to_client: list[bytearray] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._lock = threading.Lock()
        accept = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        accept.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            upstream, downstream = bytearray(), bytearray()
            with self._lock:
                self.client_to_server.append(upstream)
                self.server_to_client.append(downstream)
            for source, sink, record in ((client, server, upstream), (server, client, downstream)):
                thread = threading.Thread(
                    target=self._pump, args=(source, sink, record), daemon=True
                )
                thread.start()
                self._threads.append(thread)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, record: bytearray) -> None:
        try:
            while data := source.recv(65536):
                record.extend(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
                try:
                    sock.shutdown(how)
                except OSError:
                    pass

    def sent(self) -> list[bytes]:
        """What clients sent, one entry per connection."""
        with self._lock:
            return [bytes(record) for record in self.client_to_server]

    def received(self) -> list[bytes]:
        with self._lock:
            return [bytes(record) for record in self.server_to_client]

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 §3.4
HTTP2_FRAME_HEADER = 9  # RFC 9113 §4.1: length (24 bits), type, flags, stream id (32 bits)
HTTP2_DATA = 0x0  # RFC 9113 §6.1
HTTP2_PADDED = 0x8


def http2_data(connection: bytes) -> bytes:
    """The DATA frames' payloads of one plaintext HTTP/2 connection, joined stream by
    stream; empty if the bytes are not plaintext HTTP/2 (e.g. TLS).

    gRPC cuts a message into frames of at most 16 KiB, so a 32-byte slice of a tensor can
    straddle a frame header on the wire; joined, every slice is contiguous again.
    """
    if not connection.startswith(HTTP2_PREFACE):
        return b""
    streams: dict[int, bytearray] = {}
    offset = len(HTTP2_PREFACE)
    while offset + HTTP2_FRAME_HEADER <= len(connection):
        length = int.from_bytes(connection[offset : offset + 3], "big")
        kind, flags = connection[offset + 3], connection[offset + 4]
        stream = int.from_bytes(connection[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
        payload = connection[offset + HTTP2_FRAME_HEADER : offset + HTTP2_FRAME_HEADER + length]
        offset += HTTP2_FRAME_HEADER + length
        if kind == HTTP2_DATA:
            if flags & HTTP2_PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            streams.setdefault(stream, bytearray()).extend(payload)
    return b"".join(bytes(data) for data in streams.values())


# --- secrets ------------------------------------------------------------------------------------


def key_forms(key: ec.EllipticCurvePrivateKey) -> list[bytes]:
    """Every form in which a private key could leak: PEM, DER (raw and base64), the raw
    scalar (bytes, hex in either case, base64)."""
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
    return [*secret_forms(scalar), pem, der, base64.b64encode(der)]


def secret_forms(secret: bytes) -> list[bytes]:
    """Raw bytes, hex in either case, base64 (standard and URL-safe)."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]
