"""The parameter service over gRPC: pull (whole, then only changes), push with checks, and
a server that runs in a process where TensorFlow cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent import futures

import grpc
import numpy as np
import pytest

from enclaverec.arrays import ModelLayout, ModelUpdate, SparseRows
from enclaverec.errors import AggregationRefusedError, MalformedInputError
from enclaverec.paramservice import service as service_module
from enclaverec.paramservice.codec import apply_model, encode_update
from enclaverec.paramservice.combine import weighted_mean
from enclaverec.paramservice.service import (
    ParameterClient,
    ParameterService,
    ParameterServicer,
    PushedUpdate,
)
from enclaverec.paramservice.store import NEVER, ParameterStore
from enclaverec.transport import tensors
from enclaverec.transport.proto import paramservice_pb2, paramservice_pb2_grpc

ROWS = 1000


def initial() -> dict[str, np.ndarray]:
    return {"w": np.zeros((4,), np.float32), "embedding/C1": np.zeros((ROWS, 8), np.float32)}


def layout() -> ModelLayout:
    return ModelLayout.of(initial(), tables=["embedding/C1"])


def row_update(rows: list[int], value: float, samples: int = 10) -> ModelUpdate:
    ids = np.array(rows, np.int64)
    return ModelUpdate(
        dense={"w": np.full(4, value, np.float32)},
        sparse={"embedding/C1": SparseRows(ids, np.full((len(ids), 8), value, np.float32))},
        num_samples=samples,
    )


class Combiner:
    """A sink that combines every two pushes with the weighted mean (a synchronous step)."""

    def __init__(self, store: ParameterStore) -> None:
        self.store = store
        self.pending: list[PushedUpdate] = []

    def __call__(self, pushed: PushedUpdate) -> None:
        if any(p.contributor == pushed.contributor for p in self.pending):
            raise AggregationRefusedError(f"{pushed.contributor} already pushed for this step")
        self.pending.append(pushed)
        if len(self.pending) == 2:
            self.store.apply(weighted_mean([p.update for p in self.pending], self.store.layout))
            self.pending.clear()


@pytest.fixture
def served():
    store = ParameterStore(initial(), layout())
    service = ParameterService(store, Combiner(store))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

    def identify(context):
        # Test-only: callers name themselves in metadata. Real servers identify callers
        # from their mutual-TLS certificate (transport.server.AttestedServer.peer_identity).
        return dict(context.invocation_metadata()).get("caller", "anonymous")

    paramservice_pb2_grpc.add_ParameterServiceServicer_to_server(
        ParameterServicer(service, identify), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    def client(name: str) -> ParameterClient:
        metadata = (("caller", name),)
        return ParameterClient(lambda fn: fn(_NamedChannel(channel, metadata)), layout())

    yield service, client
    channel.close()
    server.stop(0)


class _NamedChannel:
    """A channel whose stubs send the caller's name as metadata."""

    def __init__(self, channel: grpc.Channel, metadata) -> None:
        self._channel = channel
        self._metadata = metadata

    def _wrap(self, factory):
        def method(path, **kwargs):
            call = factory(path, **kwargs)
            return lambda request, **kw: call(request, metadata=self._metadata, **kw)

        return method

    def unary_stream(self, path, **kwargs):
        return self._wrap(self._channel.unary_stream)(path, **kwargs)

    def stream_unary(self, path, **kwargs):
        return self._wrap(self._channel.stream_unary)(path, **kwargs)

    def unary_unary(self, path, **kwargs):
        return self._wrap(self._channel.unary_unary)(path, **kwargs)


def test_pull_whole_then_only_changed_rows(served):
    service, client = served
    a, b = client("a"), client("b")
    first = a.pull()
    assert a.version == 0 and np.array_equal(first["embedding/C1"], initial()["embedding/C1"])
    b.pull()
    a.push(
        encode_update(
            row_update([1, 5], 1.0), layout(), step=1, base_version=0, incarnation=a.incarnation
        )
    )
    b.push(
        encode_update(
            row_update([5, 9], 3.0, samples=30),
            layout(),
            step=1,
            base_version=0,
            incarnation=b.incarnation,
        )
    )
    assert service.store.version == 1
    changes, complete = service.changes(0, service.incarnation)
    assert not complete and changes.sparse["embedding/C1"].row_ids.tolist() == [1, 5, 9]
    model = a.pull()
    assert a.version == 1
    np.testing.assert_allclose(model["embedding/C1"][[1, 5, 9], 0], [0.25, 2.5, 2.25])
    np.testing.assert_allclose(model["w"], 2.5)
    assert np.array_equal(model["embedding/C1"], service.store.snapshot()["embedding/C1"])


def _decoded(frames) -> tuple[paramservice_pb2.ModelPayload, dict[str, np.ndarray]]:
    payload = tensors.from_chunks(iter(frames), paramservice_pb2.ModelPayload)
    return payload, apply_model(payload, initial(), layout())


def test_pull_answers_are_encoded_once_per_version_and_never_served_stale(monkeypatch):
    store = ParameterStore(initial(), layout())
    service = ParameterService(store, Combiner(store))
    first = service.changes_frames(NEVER, "")
    # Every caller at the same version gets the same (shared, never modified) frames.
    assert service.changes_frames(NEVER, "another incarnation") is first
    assert service.changes_frames(0, service.incarnation) is not first  # another question
    store.apply(row_update([3], 2.0))
    whole = service.changes_frames(NEVER, "")
    assert whole is not first
    payload, model = _decoded(whole)
    assert payload.version == 1 and payload.complete
    assert model["embedding/C1"][3, 0] == 2.0 and np.all(model["w"] == 2.0)
    payload, model = _decoded(service.changes_frames(0, service.incarnation))
    assert not payload.complete and model["embedding/C1"][3, 0] == 2.0
    # An answer larger than the cache is encoded per caller, never kept.
    monkeypatch.setattr(service_module, "FRAME_CACHE_BYTES", 16)
    store.apply(row_update([4], 1.0))
    big = service.changes_frames(NEVER, "")
    assert service.changes_frames(NEVER, "") is not big
    assert _decoded(big)[0].version == 2


def test_a_client_holding_the_named_version_does_not_call(served):
    service, client = served
    calls = []
    inner = client("a")
    counted = ParameterClient(lambda fn: calls.append(1) or inner._call(fn), layout())
    held = counted.pull()
    assert len(calls) == 1
    same = counted.pull_unless_held(0, service.incarnation)
    assert len(calls) == 1  # no call: it holds version 0 of this incarnation
    assert same is not held and all(np.array_equal(same[n], held[n]) for n in held)
    same["w"][:] = 7.0  # the caller's copy: what is held does not change
    assert np.all(counted.held["w"] == 0.0)
    # Another version, or another incarnation (a restarted server), is pulled.
    counted.pull_unless_held(1, service.incarnation)
    counted.pull_unless_held(0, "restarted")
    assert len(calls) == 3


def test_refuses_a_stale_or_malformed_push(served):
    service, client = served
    a = client("a")
    a.pull()
    with pytest.raises(grpc.RpcError) as stale:
        a.push(
            encode_update(
                row_update([1], 1.0), layout(), step=1, base_version=7, incarnation=a.incarnation
            )
        )
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "computed from version 7" in stale.value.details()
    bad = row_update([1], 1.0)
    bad.dense["w"][0] = np.nan
    with pytest.raises(grpc.RpcError) as nan:
        a.push(encode_update(bad, layout(), step=1, base_version=0, incarnation=a.incarnation))
    assert "non-finite" in nan.value.details()
    wrong = ModelUpdate(
        dense={"w": np.zeros(5, np.float32)}, sparse=row_update([1], 1.0).sparse, num_samples=1
    )
    with pytest.raises(grpc.RpcError) as shape:
        a.push(encode_update(wrong, layout(), step=1, base_version=0, incarnation=a.incarnation))
    assert "w: got float32[5], expected float32[4]" in shape.value.details()
    assert service.store.version == 0


def test_a_caller_of_another_incarnation_gets_the_whole_model(served):
    service, client = served
    a = client("a")
    a.pull()
    a.incarnation = "an-earlier-process"
    a.version = 0
    _, complete = service.changes(a.version, a.incarnation)
    assert complete


SERVER = textwrap.dedent(
    """
    import sys
    sys.modules["tensorflow"] = None  # importing TensorFlow now fails
    sys.modules["keras"] = None
    from concurrent import futures
    import grpc, numpy as np
    from enclaverec.arrays import ModelLayout
    from enclaverec.paramservice.service import ParameterService, ParameterServicer
    from enclaverec.paramservice.store import ParameterStore
    from enclaverec.transport.proto import paramservice_pb2_grpc
    arrays = {"w": np.arange(4, dtype=np.float32), "embedding/C1": np.ones((50, 2), np.float32)}
    store = ParameterStore(arrays, ModelLayout.of(arrays, tables=["embedding/C1"]))
    service = ParameterService(store, lambda pushed: store.apply(pushed.update))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    paramservice_pb2_grpc.add_ParameterServiceServicer_to_server(
        ParameterServicer(service, lambda context: "client"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.readline()
    assert "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None
    print(store.version, flush=True)
    """
)


def test_the_service_runs_where_tensorflow_cannot_be_imported():
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(process.stdout.readline())
        arrays = {"w": np.arange(4, dtype=np.float32), "embedding/C1": np.ones((50, 2), np.float32)}
        shape_only = ModelLayout.of(arrays, tables=["embedding/C1"])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = ParameterClient(lambda fn: fn(channel), shape_only)
            model = client.pull()
            assert np.array_equal(model["w"], arrays["w"])
            update = ModelUpdate(
                {"w": np.ones(4, np.float32)},
                {"embedding/C1": SparseRows(np.array([3]), np.ones((1, 2), np.float32))},
                num_samples=1,
            )
            client.push(
                encode_update(
                    update, shape_only, step=1, base_version=0, incarnation=client.incarnation
                )
            )
            again = client.pull()
            assert again["embedding/C1"][3].tolist() == [2.0, 2.0]
        process.stdin.write("done\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "1"
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()


def test_a_model_message_brings_a_holder_to_the_named_version_or_nothing():
    """What rides in a federated task: the answer a pull would get, at exactly the
    version the task names, encoded once and shared; None once the model moved on."""
    store = ParameterStore(initial(), layout())
    service = ParameterService(store, Combiner(store))
    holder = ParameterClient(lambda fn: pytest.fail("no call: the model rides along"), layout())
    # Not encoded yet: the loop's lookup finds nothing and never encodes.
    assert service.cached_model_message(-1, "", 0) is None
    whole = service.model_message(-1, "", 0)
    assert service.cached_model_message(-1, "", 0) is whole
    holder.accept(whole)
    assert (holder.version, holder.incarnation) == (0, service.incarnation)
    store.apply(row_update([3, 7], 2.0))
    assert service.model_message(0, service.incarnation, 0) is None  # it names a past version
    changes = service.model_message(0, service.incarnation, 1)
    assert len(changes) < len(whole)  # only the changed rows
    model = holder.accept(changes)
    assert holder.version == 1
    assert all(np.array_equal(model[n], store.snapshot()[n]) for n in model)


def test_a_model_too_large_for_one_frame_does_not_ride_along():
    big = {"w": np.zeros((4,), np.float32), "embedding/C1": np.zeros((40_000, 8), np.float32)}
    store = ParameterStore(big, ModelLayout.of(big, tables=["embedding/C1"]))
    service = ParameterService(store, Combiner(store))
    assert len(service.changes_frames(NEVER, "")) > 1
    assert service.model_message(-1, "", 0) is None
    assert service.cached_model_message(-1, "", 0) is None


def test_a_model_message_is_checked_as_a_pull_is():
    store = ParameterStore(initial(), layout())
    service = ParameterService(store, Combiner(store))
    holder = ParameterClient(lambda fn: pytest.fail("no call"), layout())
    with pytest.raises(MalformedInputError, match="not a ModelPayload"):
        holder.accept(b"\xff" * 32)
    store.apply(row_update([3], 2.0))
    # Changes for a model the caller does not hold: refused, nothing held.
    with pytest.raises(MalformedInputError, match="does not hold"):
        holder.accept(service.model_message(0, service.incarnation, 1))
    # A model of another layout: refused.
    other = ParameterClient(
        lambda fn: None, ModelLayout.of({"w": np.zeros((5,), np.float32)}, tables=[])
    )
    with pytest.raises(MalformedInputError):
        other.accept(service.model_message(-1, "", 1))
    assert holder.held is None and holder.version == -1
