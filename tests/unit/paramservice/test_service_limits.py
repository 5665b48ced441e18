"""What an enrolled caller may push, bounded: weights capped by the measured max_rows,
finite reported numbers, the exact largest update streamed in and no more, and a status
plus a refusal event for every refusal (never gRPC's UNKNOWN)."""

from __future__ import annotations

from concurrent import futures

import grpc
import numpy as np
import pytest

from enclaverec.arrays import ModelLayout, ModelUpdate, SparseRows
from enclaverec.errors import MalformedInputError, MessageTooLargeError, NonFiniteError
from enclaverec.paramservice.codec import encode_update, max_update_bytes
from enclaverec.paramservice.service import ParameterService, ParameterServicer, PushedUpdate
from enclaverec.paramservice.store import ParameterStore
from enclaverec.transport import tensors
from enclaverec.transport.proto import paramservice_pb2, paramservice_pb2_grpc, tensors_pb2

ROWS = 1000
MAX_ROWS = {"honest": 100, "liar": 100}


def initial() -> dict[str, np.ndarray]:
    return {"w": np.zeros((4,), np.float32), "embedding/C1": np.zeros((ROWS, 8), np.float32)}


def layout() -> ModelLayout:
    return ModelLayout.of(initial(), tables=["embedding/C1"])


def update(value: float = 1.0, samples: int = 10, rows=(1, 5)) -> ModelUpdate:
    ids = np.array(rows, np.int64)
    return ModelUpdate(
        dense={"w": np.full(4, value, np.float32)},
        sparse={"embedding/C1": SparseRows(ids, np.full((len(ids), 8), value, np.float32))},
        num_samples=samples,
    )


@pytest.fixture
def served():
    store = ParameterStore(initial(), layout())
    accepted: list[PushedUpdate] = []
    refused: list[tuple[str, int, Exception]] = []
    service = ParameterService(store, accepted.append, weight_bounds=MAX_ROWS)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

    def identify(context):
        # Test-only: callers name themselves in metadata (real servers use mutual TLS).
        return dict(context.invocation_metadata()).get("caller", "anonymous")

    paramservice_pb2_grpc.add_ParameterServiceServicer_to_server(
        ParameterServicer(service, identify, on_refused=lambda *r: refused.append(r)), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = paramservice_pb2_grpc.ParameterServiceStub(channel)

    def push(caller: str, frames):
        return stub.Push(iter(frames), metadata=(("caller", caller),), timeout=60)

    push.channel = channel  # type: ignore[attr-defined] - for the unary tests
    yield service, push, accepted, refused
    channel.close()
    server.stop(0)


def payload(service: ParameterService, change: ModelUpdate, **fields):
    message = encode_update(
        change, layout(), step=1, base_version=0, incarnation=service.incarnation
    )
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def refusal(push, caller, frames) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        push(caller, frames)
    return raised.value


def test_a_claimed_weight_is_capped_at_the_members_max_rows(served):
    service, push, accepted, _ = served
    push("liar", tensors.to_chunks(payload(service, update(samples=2**62))))
    push("honest", tensors.to_chunks(payload(service, update(samples=40))))
    assert [(p.contributor, p.update.num_samples) for p in accepted] == [
        ("liar", 100),
        ("honest", 40),
    ]


def test_a_caller_without_a_bound_is_refused(served):
    service, push, accepted, refused = served
    error = refusal(push, "stranger", tensors.to_chunks(payload(service, update())))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no weight bound" in error.details()
    assert not accepted and refused[0][0] == "stranger"


@pytest.mark.parametrize(
    "field, value", [("train_seconds", float("inf")), ("train_loss", float("nan"))]
)
def test_non_finite_reported_numbers_are_refused(served, field, value):
    service, push, accepted, refused = served
    error = refusal(push, "honest", tensors.to_chunks(payload(service, update(), **{field: value})))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert field in error.details()
    assert not accepted
    assert isinstance(refused[0][2], NonFiniteError)


def test_an_empty_array_of_a_huge_shape_is_invalid_argument_with_a_refusal(served):
    service, push, accepted, refused = served
    message = payload(service, update())
    message.delta.dense[0].shape[:] = [0, 2**62]
    message.delta.dense[0].data = b""
    error = refusal(push, "honest", tensors.to_chunks(message))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot be shaped" in error.details()
    assert not accepted and isinstance(refused[0][2], MalformedInputError)


def test_undecodable_bytes_are_invalid_argument(served):
    _, push, accepted, refused = served
    junk = [tensors_pb2.Chunk(index=0, last=True, data=b"\xff" * 64)]
    error = refusal(push, "honest", junk)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not accepted and refused[0][1] == -1


def test_a_stream_beyond_the_largest_update_is_refused_as_it_arrives(served):
    service, push, accepted, refused = served
    limit = service.max_update_bytes
    sent: list[int] = []

    def junk():
        # Far more than the limit; the server must stop reading long before the end.
        for index in range(limit // 4096 + 1000):
            sent.append(index)
            yield tensors_pb2.Chunk(index=index, last=False, data=b"\0" * 4096)

    error = refusal(push, "honest", junk())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert isinstance(refused[0][2], MessageTooLargeError)
    assert len(sent) < limit // 4096 + 1000
    assert service.in_flight.held("honest") == 0  # the bytes were given back


def test_the_largest_update_is_exactly_bounded():
    """Every table sent as all of its rows, integers at their largest: the biggest
    legitimate push is exactly the bound."""
    every_row = update(samples=2**64 - 1, rows=range(ROWS))
    message = encode_update(
        every_row,
        layout(),
        step=2**32 - 1,
        base_version=2**64 - 1,
        incarnation="f" * tensors.MAX_INCARNATION_BYTES,
        train_loss=1.5,
        train_seconds=2.5,
    )
    limit = max_update_bytes(layout())
    assert message.ByteSize() <= limit
    assert message.ByteSize() == limit


def test_one_callers_concurrent_streams_share_its_allowance():
    budget = tensors.InFlightBudget()
    first = tensors.ChunkAssembler(max_bytes=10, budget=budget, caller="p")
    second = tensors.ChunkAssembler(max_bytes=10, budget=budget, caller="p")
    other = tensors.ChunkAssembler(max_bytes=10, budget=budget, caller="q")
    first.add(tensors_pb2.Chunk(index=0, data=b"x" * 6))
    with pytest.raises(MessageTooLargeError, match="in flight"):
        second.add(tensors_pb2.Chunk(index=0, data=b"x" * 6))
    other.add(tensors_pb2.Chunk(index=0, data=b"x" * 6))  # another caller: its own share
    first.close()
    second.add(tensors_pb2.Chunk(index=0, data=b"x" * 6))
    assert budget.held("p") == 6


def test_a_caller_counts_as_done_only_after_the_last_frame_of_the_best_model():
    store = ParameterStore(initial(), layout())
    service = ParameterService(store, lambda pushed: None, weight_bounds=MAX_ROWS)
    service.best = lambda: (store.snapshot(), 3)
    done: list[str] = []
    servicer = ParameterServicer(service, lambda context: "honest", on_pull_best=done.append)
    request = paramservice_pb2.PullRequest(which=paramservice_pb2.BEST)

    frames = servicer.Pull(request, None)
    next(frames)
    assert done == []  # the download started: not done
    list(frames)
    assert done == ["honest"]  # every frame taken: done

    cancelled = servicer.Pull(request, None)
    next(cancelled)
    cancelled.close()  # a broken or cancelled stream ends at a yield
    assert done == ["honest"]


def test_a_unary_push_meets_the_same_checks_and_bounds(served):
    service, push, accepted, refused = served
    stub = paramservice_pb2_grpc.ParameterServiceStub(push.channel)

    def send(caller, message):
        return stub.PushUnary(message, metadata=(("caller", caller),), timeout=60)

    send("honest", payload(service, update(samples=40)))
    assert [(p.contributor, p.update.num_samples) for p in accepted] == [("honest", 40)]
    # Beyond the largest legitimate update: refused before any decoding, bytes given back.
    every_row = update(rows=range(ROWS))
    too_big = payload(service, every_row, incarnation="f" * 10_000)
    assert too_big.ByteSize() > service.max_update_bytes
    with pytest.raises(grpc.RpcError) as raised:
        send("honest", too_big)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert isinstance(refused[-1][2], MessageTooLargeError)
    assert service.in_flight.held("honest") == 0
    # Non-finite numbers and a caller without a bound: the same refusals as a stream.
    with pytest.raises(grpc.RpcError) as raised:
        send("honest", payload(service, update(), train_loss=float("nan")))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert isinstance(refused[-1][2], NonFiniteError)
    with pytest.raises(grpc.RpcError) as raised:
        send("stranger", payload(service, update()))
    assert "no weight bound" in raised.value.details()
    assert len(accepted) == 1 and [r[0] for r in refused] == ["honest", "honest", "stranger"]
