"""The event-loop server: waiting calls hold no worker thread, blocking handlers keep their
context semantics, and calls past the bound are refused as RESOURCE_EXHAUSTED (reported
to the owner) without leaking a slot."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from enclaverec.errors import ConfigError
from enclaverec.transport import serving
from enclaverec.transport.serving import AsyncServer, ChangeSignal, ServingLimits, long_poll_seconds

SERVICE = "test.Serving"
TIMEOUT = 30.0


def _until(condition, what: str) -> None:
    # A deadline bounds a hung test only; it never paces one.
    give_up = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Handlers:
    def __init__(self) -> None:
        self.signal = ChangeSignal()
        self.threads: set[str] = set()

    async def wait(self, request: bytes, context) -> bytes:
        await self.signal.wait(self.signal.generation, TIMEOUT)
        return b"woken"

    def echo(self, request: bytes, context) -> bytes:
        self.threads.add(threading.current_thread().name)
        return request

    async def quick(self, request: bytes, context) -> bytes:
        # Blocking-style code (it may abort) run on the loop itself.
        return await self.server.run_quick_with_context(self.check, context, request)

    def check(self, context, request: bytes) -> bytes:
        if request == b"stranger":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "not a member")
        return threading.current_thread().name.encode()

    def refuse(self, request: bytes, context) -> bytes:
        context.set_trailing_metadata((("why", "test"),))
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "refused on purpose")

    def total(self, requests: Iterator[bytes], context) -> bytes:
        return str(sum(len(r) for r in requests)).encode()

    def chunks(self, request: bytes, context) -> Iterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()

    def generic(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Wait": grpc.unary_unary_rpc_method_handler(self.wait),
                "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
                "Refuse": grpc.unary_unary_rpc_method_handler(self.refuse),
                "Quick": grpc.unary_unary_rpc_method_handler(self.quick),
                "Total": grpc.stream_unary_rpc_method_handler(self.total),
                "Chunks": grpc.unary_stream_rpc_method_handler(self.chunks),
            },
        )


@pytest.fixture
def serve():
    servers: list[AsyncServer] = []
    channels: list[grpc.Channel] = []

    def start(limits: ServingLimits, on_overload=None):
        handlers = Handlers()
        server = AsyncServer("test-serving", limits, on_overload=on_overload)
        handlers.server = server
        server.add_generic_rpc_handlers([handlers.generic()])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return server, handlers, channel

    yield start
    for channel in channels:
        channel.close()
    for server in servers:
        server.stop(0)


def call(channel: grpc.Channel, method: str):
    return channel.unary_unary(f"/{SERVICE}/{method}")


def test_waiting_calls_hold_no_worker_thread(serve):
    server, handlers, channel = serve(ServingLimits(workers=1, max_calls=8))
    waiting = [call(channel, "Wait").future(b"", timeout=TIMEOUT) for _ in range(5)]
    _until(lambda: handlers.signal.waiting == 5, "five waiting calls")
    # Five callers wait and the server's only worker still serves a blocking call.
    assert call(channel, "Echo")(b"hello", timeout=TIMEOUT) == b"hello"
    assert handlers.threads == {"test-serving_0"}
    handlers.signal.notify()
    assert [future.result() for future in waiting] == [b"woken"] * 5
    _until(lambda: server.admission.in_progress == 0, "every call to end")


def test_calls_past_the_bound_are_refused_as_busy_and_reported(serve):
    refused: list[tuple[str, int]] = []
    server, handlers, channel = serve(
        ServingLimits(workers=1, max_calls=2),
        on_overload=lambda method, peer, limit: refused.append((method, limit)),
    )
    waiting = [call(channel, "Wait").future(b"", timeout=TIMEOUT) for _ in range(2)]
    _until(lambda: handlers.signal.waiting == 2, "two waiting calls")
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "Echo")(b"one too many", timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server busy: 2 calls in progress" in caught.value.details()
    assert refused == [(f"/{SERVICE}/Echo", 2)]
    assert server.admission.refused == 1
    handlers.signal.notify()
    assert [future.result() for future in waiting] == [b"woken"] * 2
    # The refused call held no slot, and the ended ones gave theirs back.
    _until(lambda: server.admission.in_progress == 0, "every call to end")
    assert call(channel, "Echo")(b"again", timeout=TIMEOUT) == b"again"


def test_a_cancelled_waiting_call_gives_its_slot_back(serve):
    server, handlers, channel = serve(ServingLimits(workers=1, max_calls=1))
    waiting = call(channel, "Wait").future(b"", timeout=TIMEOUT)
    _until(lambda: handlers.signal.waiting == 1, "a waiting call")
    waiting.cancel()
    _until(lambda: server.admission.in_progress == 0, "the cancelled call to end")
    assert handlers.signal.waiting == 0
    assert call(channel, "Echo")(b"free", timeout=TIMEOUT) == b"free"


def test_blocking_handlers_abort_stream_and_set_metadata_as_before(serve):
    _, _, channel = serve(ServingLimits(workers=2, max_calls=8))
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "Refuse")(b"", timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details() == "refused on purpose"
    assert ("why", "test") in caught.value.trailing_metadata()
    total = channel.stream_unary(f"/{SERVICE}/Total")
    assert total(iter([b"ab", b"cde", b""]), timeout=TIMEOUT) == b"5"
    chunks = channel.unary_stream(f"/{SERVICE}/Chunks")
    assert list(chunks(b"3", timeout=TIMEOUT)) == [b"0", b"1", b"2"]
    # Longer than one batch of responses made per trip to a worker.
    many = serving.RESPONSE_BATCH * 2 + 1
    assert list(chunks(str(many).encode(), timeout=TIMEOUT)) == [
        str(i).encode() for i in range(many)
    ]


def test_quick_blocking_code_runs_on_the_loop_and_its_abort_ends_the_call(serve):
    server, handlers, channel = serve(ServingLimits(workers=1, max_calls=8))
    assert call(channel, "Quick")(b"member", timeout=TIMEOUT) == b"test-serving-loop"
    with pytest.raises(grpc.RpcError) as caught:
        call(channel, "Quick")(b"stranger", timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == "not a member"
    assert handlers.threads == set()  # no worker was used
    _until(lambda: server.admission.in_progress == 0, "every call to end")


def test_a_stream_longer_than_the_read_ahead_reaches_the_handler_whole(serve, monkeypatch):
    monkeypatch.setattr(serving, "PREREAD_BYTES", 4)
    _, _, channel = serve(ServingLimits(workers=1, max_calls=8))
    total = channel.stream_unary(f"/{SERVICE}/Total")
    # 4 bytes are read ahead on the loop; the other 7 as the handler asks for them.
    assert total(iter([b"ab", b"cd", b"efg", b"hijk"]), timeout=TIMEOUT) == b"11"


def test_a_server_never_started_leaves_no_thread():
    before = threading.active_count()
    server = AsyncServer("unstarted", ServingLimits())
    server.add_generic_rpc_handlers([Handlers().generic()])
    server.stop(0)
    assert threading.active_count() == before


@pytest.mark.parametrize("limits", [{"workers": 0}, {"max_calls": 0}, {"workers": True}])
def test_limits_refuse_nonsense(limits):
    with pytest.raises(ConfigError):
        ServingLimits(**limits)


def test_change_signal_never_misses_a_change_made_before_the_wait():
    signal = ChangeSignal()
    seen = signal.generation
    signal.notify()  # after the caller looked, before it waits

    async def waits() -> tuple[bool, bool]:
        moved = await signal.wait(seen, TIMEOUT)
        timed_out = await signal.wait(signal.generation, 0.01)
        return moved, timed_out

    assert asyncio.run(waits()) == (True, False)
    assert signal.waiting == 0


@pytest.mark.parametrize(
    ("requested", "held"),
    [
        (5.0, 5.0),
        (-1.0, 0.0),
        (1e9, 30.0),
        (float("inf"), 30.0),
        (float("-inf"), 0.0),
        (float("nan"), 0.0),
    ],
)
def test_a_peers_long_poll_wait_is_held_within_the_limit(requested, held):
    # A NaN deadline never passes and the aggregator's wait loop on it would spin.
    assert long_poll_seconds(requested, 30.0) == held
