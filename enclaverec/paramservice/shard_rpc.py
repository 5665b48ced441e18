"""The parameter shards over gRPC: the servicer in front of a :class:`ShardServer`, and
the worker's client that fans a step's pull, push and barrier out to every shard in
parallel, translating global row ids to each shard's local ones (``shards.ShardMap``).

Credentials are passed in: the servicer asks ``identify`` who called (the mutual-TLS
certificate from the job's attested CA in real runs), the client runs each RPC through a
``call`` per shard (e.g. ``ClientSession.call``). The servicer's methods are plain
blocking functions that hold the shard's lock only briefly (``AwaitStep`` waits on a
condition), so they run under a thread-pool server; the wait is bounded per call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import numpy as np

from enclaverec.arrays import ROW_ID_DTYPE, Arrays, ModelLayout, SparseRows
from enclaverec.errors import (
    AggregationRefusedError,
    BarrierTimeoutError,
    MalformedInputError,
    MessageTooLargeError,
    StaleUpdateError,
)
from enclaverec.paramservice.service import Identify, abort_refused, as_refusal
from enclaverec.paramservice.shard import Gradients, PulledRows, ShardServer
from enclaverec.paramservice.shards import ShardMap
from enclaverec.transport import tensors
from enclaverec.transport.proto import shard_pb2, shard_pb2_grpc
from enclaverec.transport.server import AttestedServer
from enclaverec.transport.serving import long_poll_seconds

log = logging.getLogger(__name__)

# A step's pull or push is one message: a batch's rows plus the dense arrays (about
# 2 MB at the kaggle shape). gRPC's default receive limit is 4 MiB; the shard's server and
# its workers' channels take these options (SHARD_SERVER_OPTIONS, SHARD_CHANNEL_OPTIONS).
MAX_STEP_MESSAGE_BYTES = 64 << 20
SHARD_SERVER_OPTIONS = (("grpc.max_receive_message_length", MAX_STEP_MESSAGE_BYTES),)
SHARD_CHANNEL_OPTIONS = (("grpc.max_receive_message_length", MAX_STEP_MESSAGE_BYTES),)
MAX_WAIT_SECONDS = 30.0  # one AwaitStep call; the client loops up to its own deadline
RPC_TIMEOUT_SECONDS = 120.0

Call = Callable[[Callable[[grpc.Channel], object]], object]
"""Runs an RPC on a caller's authenticated channel to one shard (``Session.call``)."""


# --- payloads -----------------------------------------------------------------------------


def _shapes(layout: ModelLayout) -> dict[str, tuple[int, ...]]:
    return {name: spec.shape for name, spec in layout.specs.items()}


def encode_rows(pulled: PulledRows, layout: ModelLayout) -> shard_pb2.RowsPayload:
    return shard_pb2.RowsPayload(
        applied_step=pulled.applied_step,
        incarnation=pulled.incarnation,
        arrays=tensors.encode_bundle(pulled.dense, pulled.tables, _shapes(layout)),
        waiting=pulled.waiting,
        waited_seconds=pulled.waited_seconds,
    )


def decode_rows(payload: shard_pb2.RowsPayload) -> PulledRows:
    dense, tables = tensors.decode_bundle(payload.arrays)
    waited = float(payload.waited_seconds)
    return PulledRows(
        int(payload.applied_step),
        payload.incarnation,
        dense,
        tables,
        bool(payload.waiting),
        # A number from the server, for timings only: bounded like the wait itself.
        waited if 0 <= waited <= MAX_WAIT_SECONDS else 0.0,
    )


def encode_gradients(gradients: Gradients, layout: ModelLayout) -> shard_pb2.GradientPayload:
    return shard_pb2.GradientPayload(
        step=gradients.step,
        rows=gradients.rows,
        loss_sum=gradients.loss_sum,
        pulled_step=gradients.pulled_step,
        gradients=tensors.encode_bundle(gradients.dense, gradients.tables, _shapes(layout)),
    )


def decode_gradients(payload: shard_pb2.GradientPayload) -> Gradients:
    dense, tables = tensors.decode_bundle(payload.gradients)
    return Gradients(
        step=int(payload.step),
        rows=int(payload.rows),
        loss_sum=float(payload.loss_sum),
        pulled_step=int(payload.pulled_step),
        dense=dense,
        tables=tables,
    )


def _decode_ids(message: shard_pb2.TableRows) -> np.ndarray:
    count, remainder = divmod(len(message.row_ids), ROW_ID_DTYPE.itemsize)
    if remainder:
        raise MalformedInputError(f"{message.name}: row id bytes not a multiple of 8")
    return np.frombuffer(message.row_ids, dtype="<i8").astype(ROW_ID_DTYPE)


# --- server ---------------------------------------------------------------------------------


class ShardServicer(shard_pb2_grpc.ParameterShardServicer):
    """The gRPC face of a :class:`ShardServer`. ``on_refused`` hears who sent what was
    refused, for which step (-1 when unreadable), and why (the role's audit log).
    ``model_readers``: peers other than the job's workers that may pull the whole shard
    (e.g. the key broker, for validation and the final model)."""

    def __init__(
        self,
        server: ShardServer,
        identify: Identify,
        *,
        on_refused: Callable[[str, int, Exception], None] | None = None,
        model_readers: frozenset[str] = frozenset(),
    ) -> None:
        self.server = server
        self.identify = identify
        self.on_refused = on_refused
        self.model_readers = model_readers

    def _refuse(self, context: grpc.ServicerContext, caller: str, step: int, exc: Exception):
        log.warning("%s", exc)
        if self.on_refused is not None:
            self.on_refused(caller, step, exc)
        if isinstance(exc, StaleUpdateError):
            # Not the caller's fault: it should wait at the barrier or pull again.
            context.abort(grpc.StatusCode.ABORTED, str(exc))
        abort_refused(context, exc)

    def PullRows(self, request, context):  # noqa: N802 - gRPC's naming
        return self._pull(self.identify(context), request, context)

    def _pull(self, caller: str, request: shard_pb2.RowRequest, context) -> shard_pb2.RowsPayload:
        try:
            tables: dict[str, np.ndarray] = {}
            for message in request.tables:
                if message.name in tables:
                    raise MalformedInputError(f"{message.name}: asked twice")
                tables[message.name] = _decode_ids(message)
            wait = long_poll_seconds(request.wait_seconds, MAX_WAIT_SECONDS)
            pulled = self.server.pull(caller, int(request.step), tables, bool(request.dense), wait)
        except Exception as exc:  # noqa: BLE001 - every refusal gets a status and an audit event
            self._refuse(context, caller, int(request.step), as_refusal(exc, f"a pull by {caller}"))
        return encode_rows(pulled, self.server.layout)

    def PushGradients(self, request, context):  # noqa: N802
        caller = self.identify(context)
        step = int(request.step)
        try:
            self.server.push(caller, decode_gradients(request))
        except Exception as exc:  # noqa: BLE001 - every refusal gets a status and an audit event
            self._refuse(context, caller, step, as_refusal(exc, f"the gradients from {caller}"))
        return shard_pb2.PushGradientsReply(accepted=True)

    def PushAndPull(self, request, context):  # noqa: N802
        # Both halves checked as PushGradients and PullRows check them; the pull is
        # served only once the push was accepted.
        caller = self.identify(context)
        step = int(request.push.step)
        try:
            if int(request.pull.step) != step + 1:
                raise MalformedInputError(
                    f"a pull for step {int(request.pull.step)} with the gradients of step {step}"
                )
            self.server.push(caller, decode_gradients(request.push))
        except Exception as exc:  # noqa: BLE001 - every refusal gets a status and an audit event
            self._refuse(context, caller, step, as_refusal(exc, f"the gradients from {caller}"))
        return self._pull(caller, request.pull, context)

    def AwaitStep(self, request, context):  # noqa: N802
        caller = self.identify(context)
        wait = long_poll_seconds(request.wait_seconds, MAX_WAIT_SECONDS)
        try:
            self.server.check_worker(caller)
            reached = self.server.await_step(int(request.step), wait)
        except AggregationRefusedError as exc:
            self._refuse(context, caller, int(request.step), exc)
        return shard_pb2.StepReply(reached=reached, applied_step=self.server.applied_step)

    def RollBack(self, request, context):  # noqa: N802
        caller = self.identify(context)
        step = int(request.step)
        before = self.server.rollbacks
        try:
            applied = self.server.roll_back(caller, step)
        except Exception as exc:  # noqa: BLE001 - every refusal gets a status and an audit event
            self._refuse(context, caller, step, as_refusal(exc, f"a roll back by {caller}"))
        if self.server.rollbacks != before:
            log.warning("rolled back to step %d at %s's request", applied, caller)
        return shard_pb2.StepReply(reached=True, applied_step=applied)

    def PullShard(self, request, context):  # noqa: N802
        caller = self.identify(context)
        if caller not in self.server.pushed and caller not in self.model_readers:
            refusal = AggregationRefusedError(f"{caller} may not read the model")
            self._refuse(context, caller, -1, refusal)
        pulled = PulledRows(self.server.applied_step, self.server.incarnation, {}, {})
        arrays = self.server.snapshot()
        payload = shard_pb2.RowsPayload(
            applied_step=pulled.applied_step,
            incarnation=pulled.incarnation,
            arrays=tensors.encode_bundle(arrays),
        )
        yield from tensors.to_chunks(payload)


def add_shard_servicer(server: grpc.Server, servicer: ShardServicer) -> None:
    shard_pb2_grpc.add_ParameterShardServicer_to_server(servicer, server)


def serve_shard(
    attested: AttestedServer,
    shard: ShardServer,
    *,
    on_refused: Callable[[str, int, Exception], None] | None = None,
    model_readers: frozenset[str] = frozenset(),
) -> ShardServicer:
    """Add ``shard``'s servicer to ``attested``'s application port (before its start):
    callers are who their mutual-TLS certificate from the job's CA says (or, in the
    ``--tee none`` baseline, who they declare)."""
    servicer = ShardServicer(
        shard,
        lambda context: attested.peer_identity(context).party_id,
        on_refused=on_refused,
        model_readers=model_readers,
    )
    add_shard_servicer(attested.application_server, servicer)
    return servicer


# --- client ---------------------------------------------------------------------------------


def _refusal(exc: grpc.RpcError) -> Exception:
    """A refused RPC as the typed error the server raised (by status code)."""
    code = exc.code()
    details = exc.details() or str(code)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return MessageTooLargeError(details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return MalformedInputError(details)
    if code == grpc.StatusCode.ABORTED:
        return StaleUpdateError(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return AggregationRefusedError(details)
    return exc


@dataclass(frozen=True)
class PulledModel:
    """What a worker pulled for one step: the dense arrays, the rows of each table in the
    order of the global ids asked for, and the barrier step they reflect (the smallest
    over the shards)."""

    applied_step: int
    dense: Arrays
    rows: dict[str, np.ndarray]
    wire_bytes: int
    waited_seconds: float = 0.0
    """With a barrier wait: the longest any shard waited for the step before."""


@dataclass
class TrafficCounter:
    """Payload bytes a client moved (protobuf sizes, the same under every TEE mode)."""

    pulled: int = 0
    pushed: int = 0
    calls: int = 0
    per_shard_pulled: dict[int, int] = field(default_factory=dict)


class ShardedClient:
    """A worker's view of every shard: one ``call`` per shard, in shard order."""

    def __init__(
        self,
        calls: Sequence[Call],
        shard_map: ShardMap,
        layout: ModelLayout,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(calls) != shard_map.shards:
            raise ValueError(f"{len(calls)} shard connections, the map has {shard_map.shards}")
        self.calls = list(calls)
        self.shard_map = shard_map
        self.layout = layout
        self.clock = clock
        self.shard_layouts = [shard_map.shard_layout(layout, s) for s in range(shard_map.shards)]
        self.traffic = TrafficCounter()
        # One thread per shard: gRPC calls release the GIL while they wait.
        self._pool = (
            futures.ThreadPoolExecutor(max_workers=shard_map.shards, thread_name_prefix="shard")
            if shard_map.shards > 1
            else None
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> ShardedClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _fan_out(self, work: Callable[[int], object], shards: Sequence[int]) -> list[object]:
        if self._pool is None or len(shards) <= 1:
            return [work(s) for s in shards]
        jobs = [self._pool.submit(work, s) for s in shards]
        return [job.result() for job in jobs]

    def _rpc(self, shard: int, fn: Callable[[grpc.Channel], object]) -> object:
        try:
            return self.calls[shard](fn)
        except grpc.RpcError as exc:
            raise _refusal(exc) from exc

    # --- pull -------------------------------------------------------------------------------

    def pull(
        self,
        step: int,
        rows: Mapping[str, np.ndarray],
        *,
        barrier_deadline_seconds: float | None = None,
    ) -> PulledModel:
        """The dense arrays and the rows ``rows`` names (per table: global ids, unique and
        ascending) for computing ``step``. With ``barrier_deadline_seconds`` (synchronous
        mode), every shard first waits for step ``step - 1``'s barrier, as
        :meth:`await_step` would, without its extra round trip; ``BarrierTimeoutError``
        after the deadline."""
        requests, placement = self._row_requests(step, rows)
        targets = [s for s, r in requests.items() if r.dense or len(r.tables)]
        if barrier_deadline_seconds is not None:
            targets = list(requests)  # every shard's barrier, even where no row is asked
        barrier = self._barrier(step, requests, barrier_deadline_seconds)
        results = dict(
            zip(targets, self._fan_out(lambda s: barrier(s, None), targets), strict=True)
        )
        return self._gathered(rows, placement, results)

    def _row_requests(
        self, step: int, rows: Mapping[str, np.ndarray]
    ) -> tuple[dict[int, shard_pb2.RowRequest], dict[str, dict[int, np.ndarray]]]:
        """Each shard's request for ``rows`` (global ids) and where its rows go."""
        requests: dict[int, shard_pb2.RowRequest] = {
            s: shard_pb2.RowRequest(step=step, dense=s == self.shard_map.dense_shard)
            for s in range(self.shard_map.shards)
        }
        placement: dict[str, dict[int, np.ndarray]] = {}
        for name, ids in rows.items():
            groups = self.shard_map.split_rows(self.layout, name, np.asarray(ids, ROW_ID_DTYPE))
            placement[name] = {}
            for shard, (positions, local) in groups.items():
                placement[name][shard] = positions
                requests[shard].tables.append(
                    shard_pb2.TableRows(name=name, row_ids=local.astype("<i8").tobytes())
                )
        return requests, placement

    def _barrier(
        self,
        step: int,
        requests: Mapping[int, shard_pb2.RowRequest],
        barrier_deadline_seconds: float | None,
    ) -> Callable[[int, Callable[[grpc.Channel], object] | None], tuple[PulledRows, int, float]]:
        """``pull_one(shard, first)``: (rows, payload bytes, seconds waited at the barrier)
        from one shard; ``first`` (if given) makes the first call (e.g. a push with the
        pull), then ``PullRows`` again while the shard still waits for step ``step - 1``
        (with a deadline)."""
        deadline = None
        if barrier_deadline_seconds is not None:
            deadline = self.clock() + barrier_deadline_seconds

        def pull_one(
            shard: int, first: Callable[[grpc.Channel], object] | None
        ) -> tuple[PulledRows, int, float]:
            request = requests[shard]

            def rpc(channel: grpc.Channel) -> tuple[PulledRows, int]:
                stub = shard_pb2_grpc.ParameterShardStub(channel)
                payload = stub.PullRows(request, timeout=RPC_TIMEOUT_SECONDS)
                return decode_rows(payload), payload.ByteSize() + request.ByteSize()

            waited = 0.0
            while True:
                if deadline is not None:
                    remaining = deadline - self.clock()
                    if remaining <= 0:
                        raise BarrierTimeoutError(
                            f"shard {shard}: step {step - 1} not reached within "
                            f"{barrier_deadline_seconds:g} s"
                        )
                    request.wait_seconds = min(remaining, MAX_WAIT_SECONDS)
                pulled, size = self._rpc(shard, first or rpc)  # type: ignore[misc]
                first = None
                waited += pulled.waited_seconds
                if deadline is None or not pulled.waiting:
                    return pulled, size, waited

        return pull_one

    def _gathered(
        self,
        rows: Mapping[str, np.ndarray],
        placement: Mapping[str, Mapping[int, np.ndarray]],
        results: Mapping[int, tuple[PulledRows, int, float]],
    ) -> PulledModel:
        """The shards' replies joined: every dense array, each table's rows in the order
        of ``rows``' global ids (refused if a shard sent other rows)."""
        dense: Arrays = {}
        wire = 0
        applied = None
        for pulled, size, _ in results.values():
            wire += size
            applied = pulled.applied_step if applied is None else min(applied, pulled.applied_step)
            dense.update(pulled.dense)
        if set(dense) != set(self.layout.dense_names):
            raise MalformedInputError("the dense shard did not send every dense array")
        gathered: dict[str, np.ndarray] = {}
        for name, ids in rows.items():
            spec = self.layout.specs[name]
            out = np.empty((len(ids), *spec.shape[1:]), spec.dtype)
            for shard, positions in placement[name].items():
                part = results[shard][0].tables.get(name)
                expected = self.shard_map.local_rows(np.asarray(ids)[positions])
                if part is None or not np.array_equal(part.row_ids, expected):
                    raise MalformedInputError(f"{name}: shard {shard} sent other rows")
                out[positions] = part.values
            gathered[name] = out
        self.traffic.pulled += wire
        self.traffic.calls += len(results)
        waited = max((w for _, _, w in results.values()), default=0.0)
        return PulledModel(applied or 0, dense, gathered, wire, waited)

    # --- push -------------------------------------------------------------------------------

    def push(
        self,
        step: int,
        *,
        rows: int,
        loss_sum: float,
        pulled_step: int,
        dense: Mapping[str, np.ndarray],
        tables: Mapping[str, SparseRows],
    ) -> int:
        """Send this worker's gradients of ``step`` (tables in global row ids, unique,
        ascending) to every shard (an empty contribution where it touched nothing, so
        the barrier counts it). Returns the payload bytes sent."""
        payloads = self._gradient_payloads(step, rows, loss_sum, pulled_step, dense, tables)

        def push_one(shard: int) -> int:
            payload = payloads[shard]
            self._rpc(
                shard,
                lambda channel: shard_pb2_grpc.ParameterShardStub(channel).PushGradients(
                    payload, timeout=RPC_TIMEOUT_SECONDS
                ),
            )
            return payload.ByteSize()

        shards = list(range(self.shard_map.shards))
        sent = sum(self._fan_out(push_one, shards))  # type: ignore[arg-type]
        self.traffic.pushed += sent
        self.traffic.calls += len(shards)
        return sent

    def push_and_pull(
        self,
        step: int,
        *,
        rows: int,
        loss_sum: float,
        pulled_step: int,
        dense: Mapping[str, np.ndarray],
        tables: Mapping[str, SparseRows],
        next_rows: Mapping[str, np.ndarray],
        barrier_deadline_seconds: float,
    ) -> tuple[int, PulledModel]:
        """Synchronous mode: :meth:`push` for ``step`` and :meth:`pull` of ``next_rows``
        for step ``step + 1`` (with the barrier of ``step``) in one round trip per shard
        (``PushAndPull``). Returns (payload bytes pushed, the pulled model)."""
        payloads = self._gradient_payloads(step, rows, loss_sum, pulled_step, dense, tables)
        requests, placement = self._row_requests(step + 1, next_rows)
        barrier = self._barrier(step + 1, requests, barrier_deadline_seconds)

        def exchange_one(shard: int) -> tuple[PulledRows, int, float]:
            def rpc(channel: grpc.Channel) -> tuple[PulledRows, int]:
                # Built at call time: the barrier loop has set the pull's wait (a
                # message given to a constructor is copied).
                request = shard_pb2.PushPullRequest(push=payloads[shard], pull=requests[shard])
                stub = shard_pb2_grpc.ParameterShardStub(channel)
                payload = stub.PushAndPull(request, timeout=RPC_TIMEOUT_SECONDS)
                return decode_rows(payload), payload.ByteSize() + request.pull.ByteSize()

            return barrier(shard, rpc)

        shards = list(range(self.shard_map.shards))
        results = dict(zip(shards, self._fan_out(exchange_one, shards), strict=True))
        sent = sum(payloads[s].ByteSize() for s in shards)
        self.traffic.pushed += sent
        return sent, self._gathered(next_rows, placement, results)

    def _gradient_payloads(
        self,
        step: int,
        rows: int,
        loss_sum: float,
        pulled_step: int,
        dense: Mapping[str, np.ndarray],
        tables: Mapping[str, SparseRows],
    ) -> dict[int, shard_pb2.GradientPayload]:
        """Each shard's part of a worker's gradients of ``step`` (local row ids)."""
        per_shard: dict[int, dict[str, SparseRows]] = {s: {} for s in range(self.shard_map.shards)}
        for name, part in tables.items():
            for shard, local in self.shard_map.split_sparse(self.layout, name, part).items():
                per_shard[shard][name] = local
        payloads: dict[int, shard_pb2.GradientPayload] = {}
        for shard in range(self.shard_map.shards):
            is_dense = shard == self.shard_map.dense_shard
            contribution = Gradients(
                step=step,
                rows=rows,
                # The loss travels once (with the dense shard's contribution).
                loss_sum=loss_sum if is_dense and rows else 0.0,
                pulled_step=pulled_step,
                dense=dict(dense) if is_dense and rows else {},
                tables=per_shard[shard] if rows else {},
            )
            payloads[shard] = encode_gradients(contribution, self.shard_layouts[shard])
        return payloads

    # --- barrier ----------------------------------------------------------------------------

    def await_step(self, step: int, deadline_seconds: float) -> None:
        """Return once every shard passed the barrier of ``step``; ``BarrierTimeoutError``
        after ``deadline_seconds``."""
        if step <= 0:
            return
        deadline = self.clock() + deadline_seconds

        def wait_one(shard: int) -> None:
            while True:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    raise BarrierTimeoutError(
                        f"shard {shard}: step {step} not reached within {deadline_seconds:g} s"
                    )
                request = shard_pb2.StepRequest(
                    step=step, wait_seconds=min(remaining, MAX_WAIT_SECONDS)
                )
                reply = self._rpc(
                    shard,
                    lambda channel, request=request: shard_pb2_grpc.ParameterShardStub(
                        channel
                    ).AwaitStep(request, timeout=MAX_WAIT_SECONDS + 10),
                )
                if reply.reached:  # type: ignore[attr-defined]
                    return

        self._fan_out(wait_one, list(range(self.shard_map.shards)))  # type: ignore[arg-type]
        self.traffic.calls += self.shard_map.shards

    def applied_steps(self) -> list[int]:
        """Each shard's last applied step (its barrier), in shard order."""
        request = shard_pb2.StepRequest(step=0, wait_seconds=0.0)

        def ask(shard: int) -> int:
            reply = self._rpc(
                shard,
                lambda channel: shard_pb2_grpc.ParameterShardStub(channel).AwaitStep(
                    request, timeout=RPC_TIMEOUT_SECONDS
                ),
            )
            return int(reply.applied_step)  # type: ignore[attr-defined]

        return self._fan_out(ask, list(range(self.shard_map.shards)))  # type: ignore[return-value]

    def applied_step(self) -> int:
        """The last step whose barrier every shard passed (where a restarted worker
        resumes: the step after it)."""
        return min(self.applied_steps())

    def align(self, checkpoint_every: int) -> int:
        """Bring every shard to one step and return it: where the workers replay from
        after a shard restarted from its checkpoint (synchronous mode). Shards ahead of
        the slowest roll back to its step; if one cannot (no checkpoint kept there: a
        worker died between its pushes to two shards), every shard rolls back to the
        last checkpoint step at or before it."""
        steps = self.applied_steps()
        low = min(steps)
        if low == max(steps):
            return low

        def roll_back(target: int) -> None:
            def one(shard: int) -> None:
                request = shard_pb2.StepRequest(step=target, wait_seconds=0.0)
                self._rpc(
                    shard,
                    lambda channel: shard_pb2_grpc.ParameterShardStub(channel).RollBack(
                        request, timeout=RPC_TIMEOUT_SECONDS
                    ),
                )

            self._fan_out(one, [s for s, step in enumerate(steps) if step > target])

        try:
            roll_back(low)
            return low
        except AggregationRefusedError:
            if checkpoint_every <= 0 or low % checkpoint_every == 0:
                raise
        point = low - low % checkpoint_every
        steps = self.applied_steps()
        roll_back(point)
        return point

    # --- whole model ------------------------------------------------------------------------

    def pull_model(self) -> tuple[Arrays, int]:
        """The whole model, joined from every shard, and the smallest barrier step among
        them (validation, the final model)."""

        def pull_one(shard: int) -> tuple[Arrays, int]:
            def rpc(channel: grpc.Channel) -> tuple[Arrays, int]:
                payload = tensors.from_chunks(
                    shard_pb2_grpc.ParameterShardStub(channel).PullShard(
                        shard_pb2.ShardRequest(), timeout=RPC_TIMEOUT_SECONDS
                    ),
                    shard_pb2.RowsPayload,
                )
                dense, _ = tensors.decode_bundle(payload.arrays)
                return dense, int(payload.applied_step)

            return self._rpc(shard, rpc)  # type: ignore[return-value]

        parts = self._fan_out(pull_one, list(range(self.shard_map.shards)))
        for shard, (arrays, _) in enumerate(parts):  # type: ignore[misc]
            expected = self.shard_layouts[shard]
            if set(arrays) != set(expected.names):
                raise MalformedInputError(f"shard {shard} sent other arrays")
        whole = self.shard_map.join_model([p[0] for p in parts], self.layout)  # type: ignore[index]
        return whole, min(p[1] for p in parts)  # type: ignore[index]
