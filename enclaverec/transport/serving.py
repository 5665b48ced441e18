"""Serving gRPC without a thread per waiting caller: a ``grpc.aio`` server on its own event
loop, a bound on the calls it admits, and a bridge that runs blocking servicer code on a
small worker pool.

Why: Python's thread-pool gRPC server holds one thread per call for the call's whole
life. A long-poll (a party waiting for its next task) then holds a thread while it waits,
and with more waiting callers than threads the rest queue until a poll times out (issue
12: 16 parties on 8 threads waited 10 s per round). Here the event loop holds waiting
calls as coroutines (a few KiB each); a thread is taken only while a handler computes.

- Handlers written as ``async def`` (or async generators) run on the loop; they must not
  block it, and wait with :class:`ChangeSignal` rather than a lock or a sleep.
- Handlers written as plain functions (every servicer that does not wait) keep their code
  and their ``grpc.ServicerContext`` semantics: the bridge runs them on the worker pool with
  a context whose ``abort`` behaves as in the thread-pool server, streams requests to them
  as an ordinary iterator and streams their responses back. A call queued for a worker
  holds memory, not a thread.
- Every call first passes admission: at most ``max_calls`` calls are in progress at once
  (waiting, queued or running); one more is refused at once with RESOURCE_EXHAUSTED and
  reported to ``on_overload`` (the owner's audit log), so that a flood of callers costs a
  bounded amount of memory and never a thread each. Clients treat RESOURCE_EXHAUSTED as
  "busy, retry later".

The servers of the aggregator, and of the key broker and parameter servers, share this
module; none of them imports it for anything but serving.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc

from enclaverec.errors import ConfigError, TransportError

log = logging.getLogger(__name__)

T = TypeVar("T")
ServerOption = tuple[str, Any]

OverloadHook = Callable[[str, str, int], None]
"""Called as ``(method, peer address, limit)`` when a call is refused for overload. Runs on
the event loop: it must be quick (an audit line)."""

DEFAULT_MAX_CALLS = 1024
DEFAULT_WORKERS = 4
PREREAD_BYTES = 256 << 10
"""A request stream is read on the event loop up to this many bytes before its handler
runs on a worker: a whole small stream (an update, an evaluation) then costs the worker
no round trip to the loop per message. A larger one continues from the loop as the
handler reads it, so no more than this is buffered ahead of the handler's own checks."""
RESPONSE_BATCH = 8
"""Responses of a blocking response stream produced per trip to a worker (each is at
most a gRPC message, so this bounds what is made ahead of the network)."""
_END = object()


@dataclass(frozen=True)
class ServingLimits:
    """How much a server does at once.

    ``workers``: threads that run blocking handler code (decoding, checks, cryptography,
    aggregation bookkeeping); more do not help on a small machine, where the work is CPU.
    ``max_calls``: calls in progress at once, waiting or not; past it a call is refused
    with RESOURCE_EXHAUSTED before any of its work is done.
    """

    workers: int = DEFAULT_WORKERS
    max_calls: int = DEFAULT_MAX_CALLS

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or self.workers < 1:
            raise ConfigError(f"a server needs at least one worker thread, got {self.workers!r}")
        if isinstance(self.max_calls, bool) or self.max_calls < 1:
            raise ConfigError(f"max_calls must be at least 1, got {self.max_calls!r}")


class ChangeSignal:
    """Something changed: threads call :meth:`notify`; coroutines on any event loop wait
    for the next change with :meth:`wait`, holding no thread while they wait.

    Read :attr:`generation` *before* looking at the state you wait on, and pass it to
    :meth:`wait`: a change made in between is then never missed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    @property
    def waiting(self) -> int:
        """Coroutines waiting now."""
        with self._lock:
            return len(self._waiters)

    def notify(self) -> None:
        """Wake every waiter (thread-safe; never blocks on a waiter)."""
        with self._lock:
            self._generation += 1
            waiters, self._waiters = self._waiters, set()
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:
                pass  # that loop is closed: its server stopped, nobody waits any more

    async def wait(self, seen: int, timeout: float) -> bool:
        """Until the generation moves past ``seen`` or ``timeout`` seconds pass; whether
        it moved."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            if self._generation != seen:
                return True
            self._waiters.add(entry)
        # A timer that settles the future, not asyncio.wait_for: wait_for wraps the
        # future and cancels and awaits it on timeout, several times the loop's work, and
        # hundreds of parties wait at once (issue 12's profile).
        timer = loop.call_later(max(timeout, 0.0), _resolve, future)
        try:
            await future
            return self.generation != seen
        finally:
            timer.cancel()
            with self._lock:
                self._waiters.discard(entry)


def long_poll_seconds(requested: float, limit: float) -> float:
    """How long to hold a caller's long poll: its requested wait (a peer's number) within
    [0, ``limit``]; NaN is 0 (a NaN deadline never passes, and a wait loop on it spins)."""
    seconds = float(requested)
    if math.isnan(seconds):
        return 0.0
    return min(max(seconds, 0.0), limit)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _SyncContext:
    """A ``grpc.ServicerContext`` for blocking code on a worker thread, over the event
    loop's context: ``abort`` ends the call and raises as in the thread-pool server; the
    rest (auth_context, invocation_metadata, set_trailing_metadata, ...) is passed on."""

    def __init__(self, context: grpc.aio.ServicerContext, loop: asyncio.AbstractEventLoop) -> None:
        self._context = context
        self._loop = loop

    def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        asyncio.run_coroutine_threadsafe(self._context.abort(code, details), self._loop).result()
        raise TransportError("the call was aborted")  # abort raises; never reached

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        asyncio.run_coroutine_threadsafe(
            self._context.abort_with_status(status), self._loop
        ).result()
        raise TransportError("the call was aborted")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _LoopContext:
    """A blocking-style context for code run on the loop itself: ``abort`` unwinds that
    code (as ``abort`` does on a worker) and the caller then aborts the call on the loop."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise _Aborted(code, details)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


async def _next_request(requests: AsyncIterator[Any]) -> Any:
    try:
        return await requests.__anext__()
    except StopAsyncIteration:
        return _END


async def _preread(requests: AsyncIterator[Any]) -> tuple[list[Any], bool]:
    """Up to ``PREREAD_BYTES`` of a request stream, and whether that was all of it."""
    buffered: list[Any] = []
    size = 0
    while size < PREREAD_BYTES:
        item = await _next_request(requests)
        if item is _END:
            return buffered, True
        buffered.append(item)
        size += item.ByteSize() if hasattr(item, "ByteSize") else len(item)
    return buffered, False


def _sync_requests(
    buffered: list[Any],
    complete: bool,
    requests: AsyncIterator[Any],
    loop: asyncio.AbstractEventLoop,
) -> Iterator[Any]:
    """The request stream of a call as a blocking iterator for a worker: what was read
    ahead, then (for a long stream) the rest, read on the loop as the handler asks."""
    yield from buffered
    if complete:
        return
    while True:
        item = asyncio.run_coroutine_threadsafe(_next_request(requests), loop).result()
        if item is _END:
            return
        yield item


class _Admission:
    """Counts calls in progress. Touched only on the event loop's thread: no lock."""

    def __init__(self, limit: int, on_overload: OverloadHook | None) -> None:
        self.limit = limit
        self.in_progress = 0
        self.refused = 0
        self._on_overload = on_overload

    async def enter(self, method: str, context: grpc.aio.ServicerContext) -> None:
        if self.in_progress >= self.limit:
            self.refused += 1
            peer = context.peer()
            log.warning(
                "refused %s from %s: %d calls in progress (the limit)", method, peer, self.limit
            )
            if self._on_overload is not None:
                try:
                    self._on_overload(method, peer, self.limit)
                except Exception:  # noqa: BLE001 - the refusal must happen regardless
                    log.exception("the overload hook failed")
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server busy: {self.limit} calls in progress; retry later",
            )
        self.in_progress += 1

    def leave(self) -> None:
        self.in_progress -= 1


class AsyncServer:
    """A ``grpc.aio`` server on its own event-loop thread, with the blocking interface of
    ``grpc.Server`` that generated ``add_*Servicer_to_server`` functions and our roles use:
    add handlers and ports, :meth:`start`, :meth:`stop` (which waits).

    Every handler passes admission (``limits.max_calls``); plain-function handlers run on
    ``limits.workers`` threads, ``async def`` handlers on the loop (see the module's
    docstring).
    """

    def __init__(
        self,
        name: str,
        limits: ServingLimits,
        *,
        options: Sequence[ServerOption] = (),
        on_overload: OverloadHook | None = None,
    ) -> None:
        self.name = name
        self.limits = limits
        self.admission = _Admission(limits.max_calls, on_overload)
        self._options = list(options)
        # Handlers are kept until the first port is added (or start): a server that is made
        # and dropped unstarted (tests, a role that fails to set up) leaves no thread.
        self._generic: list[grpc.GenericRpcHandler] = []
        self._registered: list[tuple[str, dict[str, grpc.RpcMethodHandler]]] = []
        self._lock = threading.Lock()
        self._pool: futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: grpc.aio.Server | None = None
        self._stopped = False

    # --- the loop ------------------------------------------------------------------------

    def _serving(self) -> grpc.aio.Server:
        """The aio server, made (with its loop thread and workers) on first use."""
        with self._lock:
            if self._stopped:
                raise TransportError(f"the {self.name} server has been stopped")
            if self._server is not None:
                return self._server
            self._pool = futures.ThreadPoolExecutor(
                self.limits.workers, thread_name_prefix=self.name
            )
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name=f"{self.name}-loop", daemon=True
            )
            self._thread.start()

            async def make() -> grpc.aio.Server:
                # The aio server binds to the loop that is running when it is made.
                return grpc.aio.server(migration_thread_pool=self._pool, options=self._options)

            server = self._run(make())
            server.add_generic_rpc_handlers([_GenericBridge(self, h) for h in self._generic])
            for service, handlers in self._registered:
                server.add_registered_method_handlers(service, self._bridged(service, handlers))
            self._server = server
            return server

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        self._serving()
        assert self._loop is not None
        return self._loop

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread, awaited (for async handlers that must take a
        lock or compute)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def run_with_context(
        self,
        fn: Callable[..., T],
        context: grpc.aio.ServicerContext,
        *args: Any,
    ) -> T:
        """``fn(blocking_context, *args)`` on a worker thread, for servicer code written for
        a blocking context (e.g. code that authenticates the peer, or aborts the call with
        ``context.abort``) called from an async handler."""
        loop = asyncio.get_running_loop()
        return await self.run_blocking(fn, _SyncContext(context, loop), *args)

    async def run_quick_with_context(
        self,
        fn: Callable[..., T],
        context: grpc.aio.ServicerContext,
        *args: Any,
    ) -> T:
        """``fn(blocking_context, *args)`` on the loop itself, for quick servicer code
        written for a blocking context: authenticating the peer of a long poll (a cached
        certificate's validity and membership) cost less than the two thread switches of
        :meth:`run_with_context`, once per task request (issue 12). ``fn`` must not block;
        its ``context.abort`` ends the call as on a worker."""
        try:
            return fn(_LoopContext(context), *args)
        except _Aborted as aborted:
            await context.abort(aborted.code, aborted.details)
            raise  # context.abort raises; never reached

    # --- what grpc.Server offers ----------------------------------------------------------

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        with self._lock:
            if self._server is None:
                self._generic.extend(handlers)
                return
        self._server.add_generic_rpc_handlers([_GenericBridge(self, h) for h in handlers])

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        with self._lock:
            if self._server is None:
                self._registered.append((service, dict(handlers)))
                return
        self._server.add_registered_method_handlers(service, self._bridged(service, handlers))

    def _bridged(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> dict[str, grpc.RpcMethodHandler]:
        return {name: self.bridge(f"/{service}/{name}", h) for name, h in handlers.items()}

    def add_insecure_port(self, address: str) -> int:
        return self._serving().add_insecure_port(address)

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        return self._serving().add_secure_port(address, credentials)

    def start(self) -> None:
        server = self._serving()
        self._run(server.start())

    def stop(self, grace: float | None = None) -> None:
        """Stop serving (calls in progress get ``grace`` seconds), then end the loop and the
        workers. Idempotent; a server never started has nothing to stop."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            server, loop, thread, pool = self._server, self._loop, self._thread, self._pool
        if server is None or loop is None or thread is None or pool is None:
            return
        try:
            self._run(server.stop(grace))
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            pool.shutdown(wait=False, cancel_futures=True)
            if not thread.is_alive():
                loop.close()

    # --- the bridge ----------------------------------------------------------------------

    def bridge(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` with admission, and its blocking behaviour moved to the workers."""
        if handler.request_streaming and handler.response_streaming:
            field, behaviour = "stream_stream", handler.stream_stream
        elif handler.request_streaming:
            field, behaviour = "stream_unary", handler.stream_unary
        elif handler.response_streaming:
            field, behaviour = "unary_stream", handler.unary_stream
        else:
            field, behaviour = "unary_unary", handler.unary_unary
        wrapped = self._wrap(method, behaviour, streaming_response=handler.response_streaming)
        return handler._replace(**{field: wrapped})  # type: ignore[attr-defined]

    def _wrap(
        self, method: str, behaviour: Callable[..., Any], *, streaming_response: bool
    ) -> Callable[..., Any]:
        admission = self.admission
        if inspect.isasyncgenfunction(behaviour):

            async def async_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await admission.enter(method, context)
                try:
                    async for item in behaviour(request, context):
                        yield item
                finally:
                    admission.leave()

            return async_stream
        if inspect.iscoroutinefunction(behaviour):

            async def async_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await admission.enter(method, context)
                try:
                    return await behaviour(request, context)
                finally:
                    admission.leave()

            return async_unary

        async def arguments(request: Any, context: grpc.aio.ServicerContext) -> tuple[Any, Any]:
            loop = asyncio.get_running_loop()
            if hasattr(request, "__aiter__"):
                buffered, complete = await _preread(request)
                request = _sync_requests(buffered, complete, request, loop)
            return request, _SyncContext(context, loop)

        if streaming_response:

            async def blocking_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await admission.enter(method, context)
                try:
                    args = await arguments(request, context)
                    # The handler runs, and its responses are produced, on a worker, a few
                    # at a time: one trip to the worker for a short stream, not one each.
                    responses: Iterator[Any] | None = None

                    def batch() -> list[Any]:
                        nonlocal responses
                        if responses is None:
                            responses = iter(behaviour(*args))
                        return list(itertools.islice(responses, RESPONSE_BATCH))

                    while True:
                        items = await self.run_blocking(batch)
                        for item in items:
                            yield item
                        if len(items) < RESPONSE_BATCH:
                            return
                finally:
                    admission.leave()

            return blocking_stream

        async def blocking_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admission.enter(method, context)
            try:
                args = await arguments(request, context)
                return await self.run_blocking(behaviour, *args)
            finally:
                admission.leave()

        return blocking_unary


class _GenericBridge(grpc.GenericRpcHandler):
    def __init__(self, server: AsyncServer, inner: grpc.GenericRpcHandler) -> None:
        self._server = server
        self._inner = inner

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        return self._server.bridge(handler_call_details.method, handler)
