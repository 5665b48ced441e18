"""Parameter shards served over gRPC on loopback inside one process, with the UNSAFE
``--tee none`` transport (plaintext, declared identities): for protocol tests and for
measuring the data plane's per-step costs without attestation. Real runs serve each shard
from its own enclave with attested mutual TLS (the paramserver role).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from enclaverec.arrays import ModelLayout
from enclaverec.paramservice.shard import ShardServer
from enclaverec.paramservice.shard_rpc import (
    SHARD_CHANNEL_OPTIONS,
    SHARD_SERVER_OPTIONS,
    ShardedClient,
    serve_shard,
)
from enclaverec.transport.server import AttestedServer, ListenConfig
from enclaverec.transport.session import ClientSession, PlaintextBaselineSession


class LoopbackShards:
    """Serves ``servers`` (one per shard, in shard order) on free loopback ports.

    Security: the ``--tee none`` baseline; anyone on the machine can connect and claim to
    be a worker. Never a deployment mode.
    """

    def __init__(
        self,
        servers: Sequence[ShardServer],
        *,
        on_refused: Callable[[str, int, Exception], None] | None = None,
        model_readers: frozenset[str] = frozenset(),
        other_peers: tuple[str, ...] = (),
        max_workers: int = 16,
    ) -> None:
        """``model_readers`` may pull whole shards; ``other_peers`` may connect (and be
        refused by the shards: for tests)."""
        if [s.config.shard for s in servers] != list(range(len(servers))):
            raise ValueError("one server per shard, in shard order")
        self.servers = list(servers)
        self._grpc = []
        self._sessions: list[PlaintextBaselineSession] = []
        for server in servers:
            attested = AttestedServer.unsafe_plaintext_baseline(
                ListenConfig(host="127.0.0.1", max_workers=max_workers),
                parties=(*server.config.workers, *model_readers, *other_peers),
                application_options=SHARD_SERVER_OPTIONS,
            )
            serve_shard(attested, server, on_refused=on_refused, model_readers=model_readers)
            attested.start()
            self._grpc.append(attested)

    def client(self, worker: str, layout: ModelLayout) -> ShardedClient:
        """A worker's client to every shard (closed with :meth:`close`)."""
        sessions = [
            ClientSession.unsafe_plaintext_baseline(
                server.endpoints, worker, channel_options=SHARD_CHANNEL_OPTIONS
            )
            for server in self._grpc
        ]
        self._sessions.extend(sessions)
        return ShardedClient(
            [session.call for session in sessions],
            self.servers[0].config.shard_map,
            layout,
        )

    def close(self) -> None:
        for session in self._sessions:
            session.close()
        for server in self._grpc:
            server.stop(0)

    def __enter__(self) -> LoopbackShards:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
