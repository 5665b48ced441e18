"""The parameter service over gRPC: pull the model (whole, or what changed since a held
version) and push weighted updates. No TensorFlow: it runs inside the aggregator's enclave
and, for distributed training, inside each parameter server's.

What happens to a pushed update is its owner's business (:class:`UpdateSink`): the
federated aggregator buffers it for the round and combines the round's updates with its
strategy; a synchronous parameter server would combine one step's updates. The service
does what is common: authenticate the caller (through the owner's ``identify``), decode,
refuse an update computed from another version, pre-check it against the layout, and
serve versions.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import NoReturn, Protocol

import grpc
from google.protobuf.message import DecodeError

from enclaverec.arrays import Arrays, ModelUpdate
from enclaverec.errors import (
    AggregationRefusedError,
    MalformedInputError,
    MessageTooLargeError,
    StaleUpdateError,
)
from enclaverec.paramservice.codec import decode_update, encode_model, max_update_bytes
from enclaverec.paramservice.combine import bounded_weight, check_reported, check_update
from enclaverec.paramservice.store import NEVER, ModelChanges, ParameterStore
from enclaverec.transport import tensors
from enclaverec.transport.proto import paramservice_pb2, paramservice_pb2_grpc, tensors_pb2

log = logging.getLogger(__name__)

FRAME_CACHE_BYTES = 64 << 20
"""Encoded pull answers kept for the current model version, in total. Every caller at
the same version gets the same bytes, so they are encoded once per version rather than
once per caller (issue 12: at 256 parties, encoding the model for each pull was a fifth
of the aggregator's handler time). An answer larger than this (a whole dense DLRM) is
encoded per caller as before, so the cache never doubles a large model's memory."""


@dataclass(frozen=True)
class PushedUpdate:
    """An update that passed the service's checks, with what came along with it."""

    contributor: str
    step: int
    update: ModelUpdate
    train_loss: float
    train_seconds: float
    wire_bytes: int


class UpdateSink(Protocol):
    """Where accepted updates go. Called with the service's lock held; raise
    ``AggregationRefusedError`` to refuse (e.g. an update for a past round)."""

    def __call__(self, pushed: PushedUpdate) -> None: ...


class ParameterService:
    """A parameter store behind a lock, with a fresh incarnation per process: versions
    made after a restart may reuse numbers, so a caller holding a version of another
    incarnation gets the whole model."""

    def __init__(
        self,
        store: ParameterStore,
        sink: UpdateSink,
        *,
        norm_bound: float | None = None,
        weight_bounds: Mapping[str, int] | None = None,
        lock: threading.Condition | None = None,
    ) -> None:
        self.store = store
        self.sink = sink
        self.norm_bound = norm_bound
        # Each contributor's largest weight (its measured max_rows); None: unbounded
        # (distributed training, where workers' weights are fixed by the job).
        self.weight_bounds = dict(weight_bounds) if weight_bounds is not None else None
        self.lock = lock or threading.Condition()
        self.incarnation = secrets.token_hex(8)
        self.best: Callable[[], tuple[Arrays, int]] | None = None
        # The exact largest legitimate push; a stream beyond it is refused as it arrives,
        # and one caller's concurrent pushes share that allowance.
        self.max_update_bytes = max_update_bytes(store.layout)
        self.in_flight = tensors.InFlightBudget()
        # (store, version, since) -> the frames of that pull's answer; current version only.
        self._frames: dict[tuple[int, int, int], list[tensors_pb2.Chunk]] = {}
        self._messages: dict[tuple[int, int, int], bytes] = {}
        self._frame_bytes = 0

    def changes(self, since: int, incarnation: str) -> tuple[ModelChanges, bool]:
        """What a caller holding ``since`` (of ``incarnation``) needs; the whole model,
        dense, when it holds nothing of this incarnation (row ids for every row would only
        add bytes)."""
        with self.lock:
            store = self.store
            if since < 0 or incarnation != self.incarnation or since > store.version:
                return ModelChanges(NEVER, store.version, store.snapshot(), {}), True
            return store.changes_since(since), False

    def changes_frames(self, since: int, incarnation: str) -> list[tensors_pb2.Chunk]:
        """The framed ``ModelPayload`` that :meth:`changes` describes, encoded once per
        model version and ``since`` and shared by every caller that asks the same (the
        frames are never modified once made)."""
        return self._answer(since, incarnation)[1]

    def _key(self, since: int, incarnation: str) -> tuple[int, int, int]:
        version = self.store.version
        whole = since < 0 or incarnation != self.incarnation or since > version
        return (id(self.store), version, NEVER if whole else since)

    def _answer(
        self, since: int, incarnation: str
    ) -> tuple[int, list[tensors_pb2.Chunk], bytes | None]:
        """The model version, the frames of the answer to a caller holding ``since``, and
        the answer whole if it is one frame."""
        with self.lock:
            store = self.store
            key = self._key(since, incarnation)
            frames = self._frames.get(key)
            if frames is not None:
                return key[1], frames, self._messages.get(key)
            changes, complete = self.changes(since, incarnation)
        payload = encode_model(
            changes.dense,
            changes.sparse,
            store.layout,
            version=changes.version,
            incarnation=self.incarnation,
            complete=complete,
        )
        data = payload.SerializeToString()
        frames = list(tensors.frames_of(data))
        # A one-frame answer is also kept whole, to ride in other messages (tasks).
        size = len(data) * (2 if len(frames) == 1 else 1)
        with self.lock:
            if self.store is store and self._key(since, incarnation) == key:
                if any(cached[:2] != key[:2] for cached in self._frames):
                    self._frames.clear()  # a new version: older answers are never asked again
                    self._messages.clear()
                    self._frame_bytes = 0
                if self._frame_bytes + size <= FRAME_CACHE_BYTES:
                    self._frames[key] = frames
                    if len(frames) == 1:
                        self._messages[key] = data
                    self._frame_bytes += size
        return key[1], frames, (data if len(frames) == 1 else None)

    def cached_model_message(self, since: int, incarnation: str, version: int) -> bytes | None:
        """Without blocking (for an event loop): the serialized one-frame ``ModelPayload``
        that brings a caller holding ``since`` to ``version``, if it is already encoded and
        the model is still at ``version``; else None (then :meth:`model_message`)."""
        if not self.lock.acquire(blocking=False):
            return None
        try:
            key = self._key(since, incarnation)
            return self._messages.get(key) if key[1] == version else None
        finally:
            self.lock.release()

    def model_message(self, since: int, incarnation: str, version: int) -> bytes | None:
        """The serialized ``ModelPayload`` that brings a caller holding ``since`` (of
        ``incarnation``) to ``version``, if the model is still at ``version`` and the answer
        fits one frame, so that it can ride in another message (a federated task); None
        otherwise, and the caller pulls. Encoded once per version like every pull."""
        answer_version, _, message = self._answer(since, incarnation)
        return message if answer_version == version else None

    def push(self, contributor: str, payload: paramservice_pb2.UpdatePayload) -> None:
        update = decode_update(payload)
        with self.lock:
            if (
                payload.incarnation != self.incarnation
                or payload.base_version != self.store.version
            ):
                raise StaleUpdateError(
                    f"update from {contributor} for step {payload.step} refused: it was "
                    f"computed from version {payload.base_version} "
                    f"({payload.incarnation or '?'}), the model is at {self.store.version} "
                    f"({self.incarnation})"
                )
            check_update(
                update, self.store.layout, contributor=contributor, norm_bound=self.norm_bound
            )
            check_reported(
                contributor, train_loss=payload.train_loss, train_seconds=payload.train_seconds
            )
            if self.weight_bounds is not None:
                update = dataclasses.replace(
                    update,
                    num_samples=bounded_weight(
                        update.num_samples, self.weight_bounds.get(contributor, 0)
                    ),
                )
                if update.num_samples <= 0:
                    raise AggregationRefusedError(
                        f"update from {contributor} refused: it has no weight bound"
                    )
            self.sink(
                PushedUpdate(
                    contributor=contributor,
                    step=payload.step,
                    update=update,
                    train_loss=payload.train_loss,
                    train_seconds=payload.train_seconds,
                    wire_bytes=payload.ByteSize(),
                )
            )
            self.lock.notify_all()


Identify = Callable[[grpc.ServicerContext], str]
"""Who the caller is; must abort the call (UNAUTHENTICATED) for an unknown caller."""


def refusal_status(exc: Exception) -> grpc.StatusCode:
    """The status of a refused request: RESOURCE_EXHAUSTED over a size limit,
    INVALID_ARGUMENT for what could not be read, FAILED_PRECONDITION for what was read and
    refused by a check (callers branch on the three)."""
    if isinstance(exc, MessageTooLargeError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, MalformedInputError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.FAILED_PRECONDITION


def abort_refused(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    """End an RPC whose request was refused, with :func:`refusal_status`."""
    context.abort(refusal_status(exc), str(exc))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def as_refusal(exc: Exception, what: str) -> Exception:
    """A refusal for anything decoding a peer's bytes raised: our typed errors as they
    are; anything else (a check we missed) as undecodable input, never gRPC's UNKNOWN."""
    if isinstance(exc, (AggregationRefusedError, MalformedInputError)):
        return exc
    return MalformedInputError(f"{what} could not be decoded ({type(exc).__name__})")


class ParameterServicer(paramservice_pb2_grpc.ParameterServiceServicer):
    """The gRPC face of a :class:`ParameterService`. ``on_pull_best`` lets the owner note
    who received the whole final model (called after its stream's last frame);
    ``on_refused`` who sent what was refused, for which step (-1 when the payload could
    not even be read), and the refusal."""

    def __init__(
        self,
        service: ParameterService,
        identify: Identify,
        *,
        on_pull_best: Callable[[str], None] | None = None,
        on_refused: Callable[[str, int, Exception], None] | None = None,
    ) -> None:
        self.service = service
        self.identify = identify
        self.on_pull_best = on_pull_best
        self.on_refused = on_refused

    def Pull(self, request, context) -> Iterator[tensors_pb2.Chunk]:  # noqa: N802 - gRPC's naming
        caller = self.identify(context)
        layout = self.service.store.layout
        if request.which == paramservice_pb2.BEST:
            if self.service.best is None:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION, "this service keeps no best model"
                )
            arrays, tag = self.service.best()
            payload = encode_model(
                arrays, {}, layout, version=0, incarnation="", complete=True, tag=tag
            )
            yield from tensors.to_chunks(payload)
            # Here only once gRPC took the last frame (a cancelled or broken stream ends at
            # a yield): the caller has the whole best model, not merely asked for it.
            if self.on_pull_best is not None:
                self.on_pull_best(caller)
            return
        yield from self.service.changes_frames(request.since_version, request.incarnation)

    def Push(self, request_iterator, context):  # noqa: N802
        caller = self.identify(context)
        return self._push(
            caller,
            context,
            lambda: tensors.from_chunks(
                request_iterator,
                paramservice_pb2.UpdatePayload,
                max_bytes=self.service.max_update_bytes,
                budget=self.service.in_flight,
                caller=caller,
            ),
        )

    def PushUnary(self, request, context):  # noqa: N802
        caller = self.identify(context)

        # The same bounds as a stream: the largest legitimate update, and the caller's
        # in-flight allowance while it is checked (released when the push ends).
        return self._push(
            caller,
            context,
            lambda: tensors.check_one_message(
                request, self.service.max_update_bytes, f"the update from {caller}"
            ),
            size=request.ByteSize(),
        )

    def _push(
        self,
        caller: str,
        context: grpc.ServicerContext,
        receive: Callable[[], paramservice_pb2.UpdatePayload],
        *,
        size: int = 0,
    ) -> paramservice_pb2.PushReply:
        step = -1
        reserved = 0
        try:
            if size:
                self.service.in_flight.reserve(caller, size, self.service.max_update_bytes)
                reserved = size
            payload = receive()
            step = payload.step
            self.service.push(caller, payload)
        except Exception as exc:  # noqa: BLE001 - every refusal gets a status and an audit event
            refusal = as_refusal(exc, f"the update from {caller}")
            if refusal is not exc:
                log.warning("undecodable update from %s", caller, exc_info=exc)
            log.warning("%s", refusal)
            if self.on_refused is not None:
                self.on_refused(caller, step, refusal)
            abort_refused(context, refusal)
        finally:
            if reserved:
                self.service.in_flight.release(caller, reserved)
        return paramservice_pb2.PushReply(accepted=True)


class ParameterClient:
    """Pull and push from a caller's side, keeping the model it holds up to date with as
    little traffic as possible. ``call`` runs an RPC on the caller's authenticated channel
    (e.g. ``Session.call``)."""

    def __init__(self, call: Callable[[Callable[[grpc.Channel], object]], object], layout) -> None:
        self._call = call
        self.layout = layout
        self.held: Arrays | None = None
        self.version = -1
        self.incarnation = ""

    def pull(self) -> Arrays:
        request = paramservice_pb2.PullRequest(
            which=paramservice_pb2.CURRENT, since_version=self.version, incarnation=self.incarnation
        )
        payload = self._call(
            lambda channel: tensors.from_chunks(
                paramservice_pb2_grpc.ParameterServiceStub(channel).Pull(request, timeout=600),
                paramservice_pb2.ModelPayload,
            )
        )
        return self._apply(payload)  # type: ignore[arg-type]

    def accept(self, message: bytes) -> Arrays:
        """Hold the model that a serialized ``ModelPayload`` from the service brings (one
        that rode in another message, e.g. a federated task), checked as a pull's is."""
        try:
            payload = paramservice_pb2.ModelPayload.FromString(message)
        except DecodeError as exc:
            raise MalformedInputError("the model in the message is not a ModelPayload") from exc
        return self._apply(payload)

    def _apply(self, payload: paramservice_pb2.ModelPayload) -> Arrays:
        from enclaverec.paramservice.codec import apply_model

        self.held = apply_model(payload, self.held, self.layout)
        self.version = payload.version
        self.incarnation = payload.incarnation
        return self.held

    def pull_unless_held(self, version: int, incarnation: str) -> Arrays:
        """The model at ``version`` of ``incarnation`` (as a task names it): a copy of the
        held model when it is that one, without a call (the answer would carry no change;
        at 256 parties that call was a sixth of the aggregator's calls), else :meth:`pull`.
        A copy: the caller may change what it gets without changing what is held."""
        if (
            self.held is not None
            and incarnation
            and self.incarnation == incarnation
            and self.version == version
        ):
            return {name: value.copy() for name, value in self.held.items()}
        return self.pull()

    def pull_best(self) -> tuple[Arrays, int]:
        from enclaverec.paramservice.codec import apply_model

        request = paramservice_pb2.PullRequest(which=paramservice_pb2.BEST, since_version=-1)
        payload = self._call(
            lambda channel: tensors.from_chunks(
                paramservice_pb2_grpc.ParameterServiceStub(channel).Pull(request, timeout=600),
                paramservice_pb2.ModelPayload,
            )
        )
        return apply_model(payload, None, self.layout), payload.tag  # type: ignore[arg-type,attr-defined]

    def push(self, payload: paramservice_pb2.UpdatePayload) -> None:
        if payload.ByteSize() <= tensors.CHUNK_BYTES:
            # One message: a unary call (a request stream costs the client a thread per call).
            self._call(
                lambda channel: paramservice_pb2_grpc.ParameterServiceStub(channel).PushUnary(
                    payload, timeout=600
                )
            )
            return
        self._call(
            lambda channel: paramservice_pb2_grpc.ParameterServiceStub(channel).Push(
                tensors.to_chunks(payload), timeout=600
            )
        )
