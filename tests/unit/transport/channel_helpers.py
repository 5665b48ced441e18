"""Helpers of the attested-channel tests: live simulation deployments, servers, a test service.

gRPC checks certificate validity against the real clock, so these deployments are made at
the current time (their collateral is valid for 30 days from now), unlike the fixed-time
deployments of the TEE unit tests.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from enclaverec.tee.policy import Policy, PolicySpec
from enclaverec.tee.simulated_backend import SimulatedBackend
from enclaverec.tee.simulation_pki import SimulationPKI
from enclaverec.tee.verifier_context import VerifierContext
from enclaverec.transport.server import AttestedServer

AGGREGATOR_MRENCLAVE = bytes.fromhex("a1" * 32)
PARTY_MRENCLAVE = bytes.fromhex("b2" * 32)
ROGUE_MRENCLAVE = bytes.fromhex("c3" * 32)

SERVICE = "enclaverec.test.Echo"
WHO_AM_I = f"/{SERVICE}/WhoAmI"
RPC_TIMEOUT = 5.0


def allow(pki: SimulationPKI, *mrenclaves: bytes) -> Policy:
    """A policy allowing these measurements on this simulation deployment only."""
    return PolicySpec(
        mrenclaves=frozenset(mrenclaves),
        unsafe_allow_simulation=True,
        simulation_roots=frozenset({pki.root_sha256}),
    ).build()


def verification(pki: SimulationPKI, *mrenclaves: bytes, clock=None) -> VerifierContext:
    kwargs = {"clock": clock} if clock is not None else {}
    return VerifierContext.for_simulation(pki.folder, allow(pki, *mrenclaves), **kwargs)


def backend(pki: SimulationPKI, mrenclave: bytes) -> SimulatedBackend:
    return SimulatedBackend(pki, mrenclave)


@dataclass
class Echo:
    """The application service of the tests: ``WhoAmI`` answers with the caller's identity
    as the server established it (JSON), and counts the calls that reached it."""

    server: AttestedServer | None = None
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def who_am_i(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.calls += 1
        if self.server is None:
            return b"{}"
        return json.dumps(self.server.peer_identity(context).to_dict()).encode()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "WhoAmI": grpc.unary_unary_rpc_method_handler(self.who_am_i),
            },
        )


def who_am_i(channel: grpc.Channel, *, wait_for_ready: bool = False) -> dict:
    """Call WhoAmI. ``wait_for_ready`` waits out gRPC's reconnect backoff (a channel whose
    last connection attempt failed otherwise fails at once with the old error)."""
    call = channel.unary_unary(WHO_AM_I)
    return json.loads(call(b"", timeout=RPC_TIMEOUT, wait_for_ready=wait_for_ready))


def attach(server: AttestedServer) -> Echo:
    echo = Echo(server)
    server.application_server.add_generic_rpc_handlers([echo.handler()])
    return echo


class FakeClock:
    """The real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SwitchingProxy:
    """A TCP forwarder on loopback whose destination the test switches: the network a man
    in the middle controls."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def switch(self, target_port: int) -> None:
        """Send new connections to ``target_port`` and cut the existing ones."""
        self.target_port = target_port
        for connection in self._connections:
            _close(connection)
        self._connections = []

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _close(client)
                continue
            self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self._stopped.set()
        _close(self._listener)
        for connection in self._connections:
            _close(connection)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def expect_unavailable(fn: Callable[[], object]) -> grpc.RpcError:
    """Run ``fn`` and return the UNAVAILABLE error it must raise."""
    try:
        fn()
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
        return exc
    raise AssertionError("the call succeeded")


def state_dir(tmp_path: Path, name: str = "state") -> Path:
    return tmp_path / name
