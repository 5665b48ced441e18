"""How workers and parameter servers reach the key broker: an attested session (verify
the key broker against the member's policy, enroll with evidence for this member's id,
then mutual TLS), and the mapping of its refusals to typed errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc

from enclaverec.distributed.config import Address
from enclaverec.errors import RequestRefusedError, TrainingError, TransportError
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.policy import PolicySpec
from enclaverec.tee.role_setup import role_backend, verifier_context
from enclaverec.transport.endpoints import ServerEndpoints
from enclaverec.transport.enrollment import EnrollmentCredentials
from enclaverec.transport.proto import keybroker_pb2, keybroker_pb2_grpc
from enclaverec.transport.session import ClientSession, Session

T = TypeVar("T")

CHECK_METADATA = "enclaverec-check"
RETRY_SECONDS = 0.5
DIRECTIVE_POLL_SECONDS = 10.0


def keybroker_session(
    *,
    role: str,
    member_id: str,
    tee: TEEKind,
    raw_config: bytes,
    simulation_dir: Path | None,
    keybroker: Address,
    keybroker_policy: PolicySpec | None,
    pccs_url: str | None,
    attestation_dir: Path | None = None,
) -> Session:
    """The member's session to its key broker (nothing is sent until it opens, and it
    opens only after the key broker's evidence met ``keybroker_policy``)."""
    endpoints = ServerEndpoints(keybroker.host, keybroker.port, keybroker.enrollment_port)
    if tee is TEEKind.NONE:
        return ClientSession.unsafe_plaintext_baseline(endpoints, member_id)
    backend = role_backend(role, tee, raw_config, simulation_dir, attestation_dir)
    return ClientSession(
        endpoints,
        verifier_context(tee, keybroker_policy, simulation_dir, pccs_url),
        EnrollmentCredentials(member_id, backend=backend),
    )


def refusal(exc: grpc.RpcError, what: str) -> Exception:
    """A typed error for a failed key-broker call: a refusal (exit 3), a failed job, or
    a transport failure."""
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    trailing = exc.trailing_metadata() if callable(getattr(exc, "trailing_metadata", None)) else ()
    check = dict(trailing or ()).get(CHECK_METADATA, "request")
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return RequestRefusedError(f"the key broker refused {what}: {details}", check=check)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return TrainingError(f"{what}: {details}")
    return TransportError(f"{what} failed: {code}: {details}")


def call_keybroker(
    session: Session,
    fn: Callable[[grpc.Channel], T],
    what: str,
    *,
    wait_while_not_ready: float = 0.0,
) -> T:
    """``fn`` on the session's channel; retried while the key broker says "not yet"
    (FAILED_PRECONDITION) or is unreachable, for up to ``wait_while_not_ready`` seconds."""
    deadline = time.monotonic() + wait_while_not_ready
    while True:
        try:
            return session.call(fn)
        except grpc.RpcError as exc:
            error = refusal(exc, what)
            if isinstance(error, RequestRefusedError) or time.monotonic() >= deadline:
                raise error from exc
        time.sleep(RETRY_SECONDS)


def next_directive(
    session: Session,
    epoch: int,
    *,
    deadline_seconds: float,
    on_wait: Callable[[], None] | None = None,
) -> tuple[bool, int]:
    """After ``epoch``: (continue?, best epoch so far), waiting while the epoch is open
    (``on_wait`` after each long poll that ended without a decision) and while the key
    broker is unreachable (restarting)."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        reply = call_keybroker(
            session,
            lambda channel: keybroker_pb2_grpc.KeyBrokerStub(channel).GetDirective(
                keybroker_pb2.DirectiveRequest(epoch=epoch, wait_seconds=DIRECTIVE_POLL_SECONDS),
                timeout=DIRECTIVE_POLL_SECONDS + 30,
            ),
            "the next directive",
            wait_while_not_ready=max(0.0, deadline - time.monotonic()),
        )
        if reply.kind == keybroker_pb2.CONTINUE:
            return True, reply.best_epoch
        if reply.kind == keybroker_pb2.STOP:
            return False, reply.best_epoch
        if time.monotonic() > deadline:
            raise TrainingError(f"epoch {epoch} did not close within {deadline_seconds:.0f} s")
        if on_wait is not None:
            on_wait()
