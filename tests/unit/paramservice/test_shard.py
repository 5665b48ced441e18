"""Row-addressed parameter shards over gRPC (loopback, --tee none transport): pull the
rows a batch needs, push sparse gradients, the step barrier (sync and bounded-staleness
async), sealed checkpoints, and a refusal for every number a worker sends."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from enclaverec.arrays import ModelLayout, SparseRows
from enclaverec.distributed.loopback import LoopbackShards
from enclaverec.errors import (
    AggregationRefusedError,
    BarrierTimeoutError,
    ConfigError,
    IntegrityError,
    MalformedInputError,
    StaleUpdateError,
)
from enclaverec.paramservice.optimizers import ServerOptimizerKind
from enclaverec.paramservice.shard import (
    Gradients,
    ShardConfig,
    ShardServer,
    SyncMode,
    resume_sealed,
    sealed_checkpoint_reader,
    sealed_checkpointer,
    shard_servers,
)
from enclaverec.paramservice.shard_rpc import encode_gradients
from enclaverec.paramservice.shards import ShardMap
from enclaverec.schedule import StepSchedule

WORKERS = ("worker-0", "worker-1")
ROWS = 40


def model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "w": rng.standard_normal(3).astype(np.float32),
        "embedding/C1": rng.standard_normal((ROWS, 2)).astype(np.float32),
        "embedding/C2": rng.standard_normal((ROWS // 2, 2)).astype(np.float32),
    }


def layout() -> ModelLayout:
    return ModelLayout.of(model(), tables=["embedding/C1", "embedding/C2"])


SCHEDULE = StepSchedule(train_rows=20, batch_size=8, seed=0, epochs=1)  # batches 8, 8, 4


def configs(shards: int, mode: SyncMode = SyncMode.SYNC, **kwargs) -> list[ShardConfig]:
    shard_map = ShardMap(shards=shards, dense_shard=shards - 1)
    return [
        ShardConfig(
            shard=s,
            shard_map=shard_map,
            workers=WORKERS,
            optimizer=kwargs.pop("optimizer", ServerOptimizerKind.SGD)
            if s == shards - 1
            else kwargs.get("optimizer", ServerOptimizerKind.SGD),
            learning_rate=0.5,
            schedule=SCHEDULE,
            mode=mode,
            **kwargs,
        )
        for s in range(shards)
    ]


def grads(rows: list[int], value: float, table: str = "embedding/C1") -> SparseRows:
    ids = np.array(rows, np.int64)
    return SparseRows(ids, np.full((len(ids), 2), value, np.float32))


@pytest.fixture(params=[1, 2], ids=["P=1", "P=2"])
def cluster(request):
    servers = shard_servers(configs(request.param), layout(), model())
    with LoopbackShards(servers) as shards:
        clients = [shards.client(w, layout()) for w in WORKERS]
        yield servers, clients
        for client in clients:
            client.close()


def test_a_synchronous_step_weights_by_rows_and_applies_once(cluster):
    servers, (a, b) = cluster
    start = model()
    pulled = a.pull(1, {"embedding/C1": np.array([1, 2, 7], np.int64)})
    assert pulled.applied_step == 0
    np.testing.assert_array_equal(pulled.rows["embedding/C1"], start["embedding/C1"][[1, 2, 7]])
    np.testing.assert_array_equal(pulled.dense["w"], start["w"])
    a.push(
        1,
        rows=6,
        loss_sum=3.0,
        pulled_step=0,
        dense={"w": np.ones(3, np.float32)},
        tables={"embedding/C1": grads([1, 7], 1.0)},
    )
    with pytest.raises(BarrierTimeoutError):
        a.await_step(1, 0.2)  # b has not pushed
    b.push(
        1,
        rows=2,
        loss_sum=1.0,
        pulled_step=0,
        dense={"w": np.full(3, 5.0, np.float32)},
        tables={"embedding/C1": grads([7], 3.0), "embedding/C2": grads([4], 2.0)},
    )
    a.await_step(1, 5)
    model_after, step = a.pull_model()
    assert step == 1
    # (6 * 1 + 2 * 5) / 8 = 2; lr 0.5
    np.testing.assert_allclose(model_after["w"], start["w"] - 1.0, rtol=1e-6)
    table = model_after["embedding/C1"]
    np.testing.assert_allclose(table[1], start["embedding/C1"][1] - 0.5 * 6 / 8, rtol=1e-6)
    np.testing.assert_allclose(table[7], start["embedding/C1"][7] - 0.5 * 12 / 8, rtol=1e-6)
    untouched = [r for r in range(ROWS) if r not in (1, 7)]
    np.testing.assert_array_equal(table[untouched], start["embedding/C1"][untouched])
    np.testing.assert_allclose(
        model_after["embedding/C2"][4], start["embedding/C2"][4] - 0.5 * 4 / 8, rtol=1e-6
    )
    assert sum(s.loss_sum for s in servers) == 4.0 and servers[-1].rows_done == 8
    assert a.traffic.pulled > 0 and a.traffic.pushed > 0


def test_a_pull_can_wait_for_the_barrier_on_the_shards(cluster):
    # One round trip per step instead of AwaitStep then PullRows: the shards hold the
    # pull until the step before passed, and say how long they waited.
    servers, (a, b) = cluster
    for client in (a, b):
        pulled = client.pull(1, {}, barrier_deadline_seconds=5)
        assert pulled.applied_step == 0 and pulled.waited_seconds < 1
    a.push(1, rows=6, loss_sum=1.0, pulled_step=0, dense={"w": np.ones(3, np.float32)}, tables={})
    ids = {"embedding/C1": np.array([3], np.int64)}
    with pytest.raises(BarrierTimeoutError, match="step 1 not reached"):
        a.pull(2, ids, barrier_deadline_seconds=0.2)  # b has not pushed step 1
    late = threading.Timer(
        0.3,
        lambda: b.push(
            1, rows=2, loss_sum=1.0, pulled_step=0, dense={"w": np.ones(3, np.float32)}, tables={}
        ),
    )
    late.start()
    pulled = a.pull(2, ids, barrier_deadline_seconds=10)
    late.join()
    assert pulled.applied_step == 1 and 0.1 < pulled.waited_seconds < 10
    whole, _ = a.pull_model()
    np.testing.assert_array_equal(pulled.rows["embedding/C1"], whole["embedding/C1"][[3]])
    # Without a wait the shard refuses a pull before the barrier, as before.
    with pytest.raises(StaleUpdateError):
        a.pull(3, ids)


def test_a_push_carries_the_pull_of_the_next_step(cluster):
    # Synchronous mode's one round trip per step: a's push of step 1 returns the rows of
    # its step 2 once b's push passed the barrier, the same rows a pull would give.
    servers, (a, b) = cluster
    ids = {"embedding/C1": np.array([1, 3], np.int64), "embedding/C2": np.array([4], np.int64)}
    done: list[object] = []
    exchange = threading.Thread(
        target=lambda: done.append(
            a.push_and_pull(
                1,
                rows=6,
                loss_sum=1.0,
                pulled_step=0,
                dense={"w": np.ones(3, np.float32)},
                tables={"embedding/C1": grads([3], 1.0)},
                next_rows=ids,
                barrier_deadline_seconds=10,
            )
        )
    )
    exchange.start()
    time.sleep(0.3)
    assert not done and all(s.applied_step == 0 for s in servers)  # held at the barrier
    b.push(1, rows=2, loss_sum=1.0, pulled_step=0, dense={"w": np.ones(3, np.float32)}, tables={})
    exchange.join(10)
    pushed, pulled = done[0]
    assert pushed > 0 and pulled.applied_step == 1 and 0.1 < pulled.waited_seconds < 10
    whole, _ = b.pull_model()
    np.testing.assert_array_equal(pulled.dense["w"], whole["w"])
    for name, rows in ids.items():
        np.testing.assert_array_equal(pulled.rows[name], whole[name][rows])
    assert not np.array_equal(whole["embedding/C1"][3], model()["embedding/C1"][3])  # applied


def test_a_push_with_a_pull_is_checked_as_each_alone():
    from enclaverec.transport.proto import shard_pb2, shard_pb2_grpc

    servers = shard_servers(configs(1), layout(), model())
    refusals = []
    with LoopbackShards(servers, on_refused=lambda c, s, e: refusals.append((c, s, e))) as shards:
        client = shards.client("worker-0", layout())

        def exchange(push: Gradients, pull_step: int, rows: list[int]):
            request = shard_pb2.PushPullRequest(
                push=encode_gradients(push, servers[0].layout),
                pull=shard_pb2.RowRequest(step=pull_step, dense=True, wait_seconds=0.2),
            )
            request.pull.tables.append(
                shard_pb2.TableRows(name="embedding/C1", row_ids=np.array(rows, "<i8").tobytes())
            )
            return client._rpc(
                0,
                lambda channel: shard_pb2_grpc.ParameterShardStub(channel).PushAndPull(request),
            )

        ok = Gradients(1, rows=6, loss_sum=1.0, pulled_step=0, dense={"w": np.ones(3, np.float32)})
        # A pull for a step other than the push's next: refused before the push is taken.
        with pytest.raises(MalformedInputError, match="a pull for step 3 with the gradients"):
            exchange(ok, 3, [1])
        # A bad number in the push: refused as PushGradients refuses it; nothing served.
        too_many = Gradients(1, rows=9, loss_sum=1.0, pulled_step=0, dense=ok.dense)
        with pytest.raises(AggregationRefusedError, match="9 rows for step 1"):
            exchange(too_many, 2, [1])
        assert servers[0].pending == {} and servers[0].pushed["worker-0"] == 0
        # A bad pull after a good push: the push counts (as alone), the pull is refused.
        with pytest.raises(MalformedInputError, match="outside"):
            exchange(ok, 2, [ROWS + 5])
        assert servers[0].pushed["worker-0"] == 1
        client.close()
    assert [(c, s) for c, s, _ in refusals] == [("worker-0", 1), ("worker-0", 1), ("worker-0", 2)]


def test_a_worker_without_rows_in_a_step_still_counts_at_the_barrier(cluster):
    servers, (a, b) = cluster
    a.push(
        1,
        rows=8,
        loss_sum=1.0,
        pulled_step=0,
        dense={"w": np.ones(3, np.float32)},
        tables={"embedding/C1": grads([3], 1.0)},
    )
    b.push(1, rows=0, loss_sum=0.0, pulled_step=0, dense={}, tables={})
    b.await_step(1, 5)
    assert all(s.applied_step == 1 for s in servers)


def _refused_without_change(servers, action, error, match):
    before = [s.snapshot() for s in servers]
    with pytest.raises(error, match=match):
        action()
    for server, old in zip(servers, before, strict=True):
        for name, value in server.snapshot().items():
            np.testing.assert_array_equal(value, old[name])
        assert server.applied_step == 0


def test_refuses_every_bad_number(cluster):
    servers, (a, b) = cluster
    ok = {"w": np.ones(3, np.float32)}

    def push(**kwargs):
        args = dict(
            rows=4, loss_sum=1.0, pulled_step=0, dense=ok, tables={"embedding/C1": grads([1], 1.0)}
        )
        args.update(kwargs)
        step = args.pop("step", 1)
        a.push(step, **args)

    nan = {"w": np.array([np.nan, 0, 0], np.float32)}
    _refused_without_change(servers, lambda: push(dense=nan), AggregationRefusedError, "non-finite")
    _refused_without_change(
        servers,
        lambda: push(rows=9),
        AggregationRefusedError,
        "9 rows for step 1, whose batch has 8",
    )
    _refused_without_change(
        servers, lambda: push(loss_sum=float("inf")), AggregationRefusedError, "loss must be finite"
    )
    _refused_without_change(servers, lambda: push(step=2), StaleUpdateError, "expects step 1")
    _refused_without_change(
        servers, lambda: push(pulled_step=3), StaleUpdateError, "from the model after step 3"
    )
    _refused_without_change(
        servers,
        lambda: push(tables={"embedding/C1": grads([ROWS * 5], 1.0)}),
        AggregationRefusedError,
        "outside",
    )
    _refused_without_change(
        servers,
        lambda: push(
            tables={"embedding/C1": SparseRows(np.array([3, 1]), np.ones((2, 2), np.float32))}
        ),
        AggregationRefusedError,
        "unique and ascending",
    )
    _refused_without_change(
        servers,
        lambda: push(rows=1, tables={"embedding/C1": grads([1, 2, 3], 1.0)}),
        AggregationRefusedError,
        "rows of embedding/C1 from a batch of 1",
    )
    _refused_without_change(servers, lambda: a.pull(2, {}), StaleUpdateError, "wait at the barrier")
    _refused_without_change(servers, lambda: a.pull(99, {}), AggregationRefusedError, "outside")
    _refused_without_change(
        servers,
        lambda: a.pull(1, {"embedding/C1": np.arange(ROWS, dtype=np.int64)}),
        AggregationRefusedError,
        "at most 8",
    )


def test_rows_that_do_not_add_up_to_the_batch_fail_the_step(cluster):
    servers, (a, b) = cluster
    a.push(1, rows=3, loss_sum=1.0, pulled_step=0, dense={"w": np.ones(3, np.float32)}, tables={})
    with pytest.raises(AggregationRefusedError, match="add up to 6, the batch has 8"):
        b.push(
            1, rows=3, loss_sum=1.0, pulled_step=0, dense={"w": np.ones(3, np.float32)}, tables={}
        )
    with pytest.raises(AggregationRefusedError, match="add up to 6"):
        a.await_step(1, 1)
    np.testing.assert_array_equal(servers[-1].snapshot()["w"], model()["w"])


def test_refuses_a_caller_that_is_not_a_worker():
    servers = shard_servers(configs(1), layout(), model())
    with pytest.raises(AggregationRefusedError, match="mallory is not a worker"):
        servers[0].pull("mallory", 1, {}, True)
    with pytest.raises(AggregationRefusedError, match="mallory is not a worker"):
        servers[0].push("mallory", Gradients(step=1, rows=0, loss_sum=0, pulled_step=0))
    with pytest.raises(AggregationRefusedError, match="holds no dense arrays"):
        shard_servers(configs(2), layout(), model())[0].pull("worker-0", 1, {}, True)
    with pytest.raises(MalformedInputError, match="not a table"):
        servers[0].pull("worker-0", 1, {"w": np.array([0])}, False)


def test_config_refusals():
    with pytest.raises(ConfigError, match="staleness"):
        configs(1, staleness=2)
    with pytest.raises(ConfigError, match="each named once"):
        ShardConfig(0, ShardMap(), ("a", "a"), ServerOptimizerKind.SGD, 0.1, SCHEDULE)
    with pytest.raises(ConfigError, match="learning rate"):
        ShardConfig(0, ShardMap(), WORKERS, ServerOptimizerKind.SGD, float("nan"), SCHEDULE)


def test_async_lets_a_worker_run_ahead_only_by_the_staleness_bound():
    servers = shard_servers(configs(1, SyncMode.ASYNC, staleness=1), layout(), model())
    server = servers[0]
    start = model()["w"]

    def push(worker, step, pulled, rows=4):
        server.push(
            worker,
            Gradients(
                step=step,
                rows=rows,
                loss_sum=0.5,
                pulled_step=pulled,
                dense={"w": np.ones(3, np.float32)},
            ),
        )

    push("worker-0", 1, 0)
    # applied on arrival, weighted by its share of the batch: 0.5 * 4/8
    np.testing.assert_allclose(server.snapshot()["w"], start - 0.25, rtol=1e-6)
    assert server.await_step(1, 0)  # step 1 may start: 1 - 1 <= 0 pushed by the slowest
    assert server.await_step(2, 0) is False
    push("worker-0", 2, 0)
    assert server.await_step(3, 0) is False
    with pytest.raises(StaleUpdateError, match="staler than 1"):
        push("worker-0", 3, 0)
    waiter_result = []
    waiter = threading.Thread(target=lambda: waiter_result.append(server.await_step(2, 5)))
    waiter.start()
    push("worker-1", 1, 0)
    waiter.join()
    assert waiter_result == [True] and server.applied_step == 1


def test_checkpoints_are_sealed_and_resume_bit_for_bit(tmp_path):
    key = os.urandom(32)
    path = tmp_path / "shard-0.sealed"
    config = configs(1, optimizer=ServerOptimizerKind.ADAGRAD, checkpoint_every=1)[0]
    server = ShardServer(config, layout(), model(), checkpointer=sealed_checkpointer(path, key))
    for worker, rows in zip(WORKERS, (5, 3), strict=True):
        server.push(
            worker,
            Gradients(
                step=1,
                rows=rows,
                loss_sum=1.0,
                pulled_step=0,
                dense={"w": np.ones(3, np.float32)},
                tables={"embedding/C2": grads([2, 3], 0.5)},
            ),
        )
    assert server.checkpoints == 1
    assert b"embedding" not in path.read_bytes()  # sealed, not an npz in the clear
    fresh = ShardServer(config, layout(), model())
    assert resume_sealed(fresh, path, key)
    assert fresh.applied_step == 1
    for name, value in server.snapshot().items():
        np.testing.assert_array_equal(fresh.snapshot()[name], value)
    for name, value in server.optimizer.state().items():
        np.testing.assert_array_equal(fresh.optimizer.state()[name], value)
    other_shard = configs(2)[0]
    stranger = ShardServer(other_shard, layout(), ShardMap(2, 1).split_model(model(), layout())[0])
    with pytest.raises(IntegrityError, match="checkpoint shard is 0|shards is 1"):
        resume_sealed(stranger, path, key)
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        resume_sealed(fresh, path, key)
    assert not resume_sealed(fresh, tmp_path / "none.sealed", key)


def _apply_step(server: ShardServer, step: int) -> None:
    rows = SCHEDULE.batch_rows(step)
    for worker, share in zip(WORKERS, (rows - 2, 2), strict=True):
        server.push(
            worker,
            Gradients(
                step=step,
                rows=share,
                loss_sum=1.0,
                pulled_step=step - 1,
                dense={"w": np.full(3, step, np.float32)},
                tables={"embedding/C2": grads([step, 7], 0.5 * step)},
            ),
        )


def test_a_shard_rolls_back_to_a_kept_checkpoint_and_replays_to_the_same_state(tmp_path):
    # Another shard restarted from its checkpoint of step 2: this one, at step 3, goes
    # back to its own of step 2 (the previous one kept) and replays step 3 identically.
    key = os.urandom(32)
    path = tmp_path / "shard.sealed"
    config = configs(1, optimizer=ServerOptimizerKind.ADAGRAD, checkpoint_every=1)[0]
    server = ShardServer(
        config,
        layout(),
        model(),
        checkpointer=sealed_checkpointer(path, key),
        checkpoint_reader=sealed_checkpoint_reader(path, key),
    )
    for step in (1, 2):
        _apply_step(server, step)
    after_2 = server.snapshot()
    _apply_step(server, 3)
    after_3 = server.snapshot()
    assert server.roll_back("worker-0", 3) == 3  # already there: nothing to do
    # Calls waiting for a later barrier learn of the roll back at once (they replay).
    outcomes: list[BaseException] = []

    def wait_for(fn) -> threading.Thread:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - checked below
                outcomes.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    # (Step 4 is past this schedule's end: await_step takes any step, pull would refuse.)
    waiters = [wait_for(lambda: server.await_step(4, 20)) for _ in range(2)]
    time.sleep(0.2)
    assert server.roll_back("worker-1", 2) == 2 and server.applied_step == 2
    for thread in waiters:
        thread.join(5)
    assert len(outcomes) == 2 and all(isinstance(e, StaleUpdateError) for e in outcomes)
    for name, value in after_2.items():
        np.testing.assert_array_equal(server.snapshot()[name], value)
    _apply_step(server, 3)
    for name, value in after_3.items():
        np.testing.assert_array_equal(server.snapshot()[name], value)
    assert server.rollbacks == 1
    # Refused: a step with no kept checkpoint (only the last two are), a step ahead, a
    # caller that is not a worker; nothing changes.
    with pytest.raises(AggregationRefusedError, match="no checkpoint of step 1"):
        server.roll_back("worker-0", 1)
    with pytest.raises(AggregationRefusedError, match="roll back to step 5"):
        server.roll_back("worker-0", 5)
    with pytest.raises(AggregationRefusedError, match="not a worker"):
        server.roll_back("ps-1", 2)
    assert server.applied_step == 3
    # A server killed between moving its last checkpoint aside and writing the next one
    # resumes from the previous one (here step 3's, sealed before the roll back).
    path.unlink()
    fresh = ShardServer(config, layout(), model())
    assert resume_sealed(fresh, path, key) and fresh.applied_step == 3
    for name, value in after_3.items():
        np.testing.assert_array_equal(fresh.snapshot()[name], value)


def test_an_asynchronous_shard_does_not_roll_back():
    server = ShardServer(configs(1, SyncMode.ASYNC, staleness=1)[0], layout(), model())
    with pytest.raises(AggregationRefusedError, match="only a synchronous shard"):
        server.roll_back("worker-0", 0)


def test_the_client_aligns_shards_by_rolling_back_the_ones_ahead(tmp_path):
    key = os.urandom(32)
    parts = ShardMap(2, 1).split_model(model(), layout())
    servers = []
    for config in configs(2, checkpoint_every=1):
        path = tmp_path / f"shard-{config.shard}.sealed"
        servers.append(
            ShardServer(
                config,
                layout(),
                parts[config.shard],
                checkpointer=sealed_checkpointer(path, key),
                checkpoint_reader=sealed_checkpoint_reader(path, key),
            )
        )
    with LoopbackShards(servers) as shards:
        client = shards.client("worker-0", layout())
        assert client.align(1) == 0  # together: nothing to do
        for server in servers:
            for step in (1, 2):
                _apply_step_sharded(server, step)
        # Shard 0 restarted from its checkpoint of step 1: a step behind shard 1.
        servers[0].restore(sealed_checkpoint_reader(tmp_path / "shard-0.sealed", key)(1))
        assert client.applied_steps() == [1, 2]
        assert client.align(1) == 1
        assert [s.applied_step for s in servers] == [1, 1] and servers[1].rollbacks == 1
        client.close()


def _apply_step_sharded(server: ShardServer, step: int) -> None:
    rows = SCHEDULE.batch_rows(step)
    for worker, share in zip(WORKERS, (rows - 2, 2), strict=True):
        dense = {"w": np.full(3, step, np.float32)} if server.config.dense else {}
        server.push(
            worker,
            Gradients(step=step, rows=share, loss_sum=0.0, pulled_step=step - 1, dense=dense),
        )


def test_only_workers_and_named_readers_pull_the_whole_model_or_wait():
    servers = shard_servers(configs(2), layout(), model())
    refusals = []
    with LoopbackShards(
        servers,
        model_readers=frozenset({"keybroker"}),
        other_peers=("mallory",),
        on_refused=lambda caller, step, exc: refusals.append(caller),
    ) as shards:
        reader = shards.client("keybroker", layout())
        whole, step = reader.pull_model()
        assert step == 0
        for name, value in model().items():
            np.testing.assert_array_equal(whole[name], value)
        mallory = shards.client("mallory", layout())
        with pytest.raises(AggregationRefusedError, match="mallory may not read the model"):
            mallory.pull_model()
        with pytest.raises(AggregationRefusedError, match="mallory is not a worker"):
            mallory.await_step(1, 1)
        with pytest.raises(AggregationRefusedError, match="keybroker is not a worker"):
            reader.pull(1, {})
        reader.close()
        mallory.close()
    assert "mallory" in refusals and "keybroker" in refusals


def test_an_undecodable_push_is_refused_as_malformed():
    from enclaverec.transport.proto import shard_pb2, shard_pb2_grpc, tensors_pb2

    servers = shard_servers(configs(1), layout(), model())
    refusals = []
    with LoopbackShards(servers, on_refused=lambda c, s, e: refusals.append((c, s, e))) as shards:
        client = shards.client("worker-0", layout())
        forged = shard_pb2.GradientPayload(step=1, rows=4, loss_sum=1.0, pulled_step=0)
        forged.gradients.dense.append(
            tensors_pb2.Tensor(name="w", dtype="float32", shape=[3], data=b"\0" * 11)
        )
        with pytest.raises(MalformedInputError, match="11 bytes, expected 12"):
            client._rpc(
                0, lambda channel: shard_pb2_grpc.ParameterShardStub(channel).PushGradients(forged)
            )
        client.close()
    assert refusals and refusals[0][:2] == ("worker-0", 1)
    assert servers[0].pending == {}


@pytest.mark.parametrize("mode", [SyncMode.SYNC, SyncMode.ASYNC])
def test_an_epochs_model_is_kept_as_its_last_step_left_it(tmp_path, mode):
    """The server's thread may ask for epoch 1's model only after the workers pushed
    steps of epoch 2: it gets the model of step 3, not the shard as it is by then."""
    schedule = StepSchedule(train_rows=20, batch_size=8, seed=0, epochs=2)  # 3 steps/epoch
    key, path = os.urandom(32), tmp_path / "shard.sealed"
    config = ShardConfig(
        shard=0,
        shard_map=ShardMap(shards=1, dense_shard=0),
        workers=WORKERS,
        optimizer=ServerOptimizerKind.SGD,
        learning_rate=0.5,
        schedule=schedule,
        mode=mode,
        staleness=1 if mode is SyncMode.ASYNC else 0,
        checkpoint_every=3,
    )
    server = ShardServer(config, layout(), model(), checkpointer=sealed_checkpointer(path, key))

    def step(t: int) -> None:
        rows = schedule.batch_rows(t)
        for worker, share in zip(WORKERS, (rows - rows // 2, rows // 2), strict=True):
            server.push(
                worker,
                Gradients(
                    step=t,
                    rows=share,
                    loss_sum=1.0,
                    pulled_step=t - 1,
                    dense={"w": np.full(3, t, np.float32)},
                    tables={"embedding/C1": grads([t, t + 1], 0.25 * t)},
                ),
            )

    for t in (1, 2, 3):
        step(t)
    at_epoch_end = server.snapshot()
    step(4)
    assert not np.array_equal(server.snapshot()["w"], at_epoch_end["w"])
    kept = server.epoch_model(1)
    for name, value in at_epoch_end.items():
        np.testing.assert_array_equal(kept[name], value, err_msg=name)
    with pytest.raises(AggregationRefusedError, match="model of epoch 2 was not kept"):
        server.epoch_model(2)  # step 6 has not passed
    # A server restarted from the checkpoint sealed at epoch 1's end has that model.
    resumed = ShardServer(config, layout(), model())
    assert resume_sealed(resumed, path, key) and resumed.applied_step == 3
    kept = resumed.epoch_model(1)
    for name, value in at_epoch_end.items():
        np.testing.assert_array_equal(kept[name], value, err_msg=name)
