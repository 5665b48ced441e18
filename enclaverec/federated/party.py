"""The party role: trains on its own rows and talks only to an attested aggregator.

It opens its session (which verifies and pins the aggregator before anything is sent,
then enrolls), fetches the measured plan, and then does what the aggregator asks: train
local epochs from the broadcast model and send the delta (touched embedding rows only),
score a global model on its validation and test rows, wait, or finish by fetching the best
global model into its own trust domain. Its optimizer state (Adagrad's accumulators)
starts afresh every round and never leaves it.

Security: the only things sent are the model delta, the number of training rows, and
scores with labels for evaluation; no feature ever leaves the party's process.
"""

from __future__ import annotations

import logging
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from enclaverec.arrays import Arrays, ModelLayout, ModelUpdate, delta, sparsify
from enclaverec.data.schema import DataSet
from enclaverec.errors import (
    AggregationRefusedError,
    ConfigError,
    MalformedInputError,
    TransportError,
)
from enclaverec.federated.config import FederatedPlan, UpdateEncoding
from enclaverec.federated.wire import decode_layout, encode_evaluation
from enclaverec.paramservice.codec import encode_update
from enclaverec.paramservice.combine import RowNormalisation
from enclaverec.paramservice.service import ParameterClient
from enclaverec.training import FitConfig, Trainer
from enclaverec.transport import tensors
from enclaverec.transport.proto import federated_pb2, federated_pb2_grpc
from enclaverec.transport.session import Session

log = logging.getLogger(__name__)

T = TypeVar("T")

TrainerFactory = Callable[[FederatedPlan, DataSet], Trainer]
"""Builds the party's trainer for the plan on its own data (the TensorFlow DLRM in real
runs, the numpy logistic regression in protocol tests)."""

POLL_SECONDS = 10.0
RPC_TIMEOUT_SECONDS = 600.0


def local_fit_config(fit: Any, round_index: int) -> FitConfig:
    """The party's local training for a round, from the aggregator's fit instructions."""
    return FitConfig(
        batch_size=fit.batch_size,
        learning_rate=fit.learning_rate,
        epochs=max(1, fit.epochs),
        seed=int(fit.seed),
        round_index=round_index,
        proximal_mu=fit.proximal_mu,
        # Each round is a new local problem from a new global model: accumulators of the
        # party's own past gradients (at models the averaging replaced) shrink its steps
        # and cost parity (docs/decisions.md, "Federated parity ...", third look).
        restart_optimizer=True,
    )


@dataclass(frozen=True)
class PartyOptions:
    """How long a party keeps trying to reach an aggregator that went away (a restart),
    and an optional hook that sees each update before it is sent (tests)."""

    reconnect_seconds: float = 300.0
    poll_seconds: float = POLL_SECONDS
    on_update: Callable[[int, ModelUpdate], None] | None = field(default=None, repr=False)


@dataclass
class PartyResult:
    """What this party did; ``best_model`` is the best global model, for export."""

    party_id: str
    rounds_trained: list[int] = field(default_factory=list)
    rounds_evaluated: list[int] = field(default_factory=list)
    bytes_sent: dict[int, int] = field(default_factory=dict)
    train_samples: int = 0
    refusals: list[str] = field(default_factory=list)
    polls_expired: int = 0
    """Task requests that ended with WAIT: the aggregator had nothing for this party
    during the whole poll. A waiting request is answered the moment a task exists, so
    this counts only polls longer than the aggregator's phases."""
    best_round: int | None = None
    best_model: Arrays | None = field(default=None, repr=False)
    plan: FederatedPlan | None = None
    layout: ModelLayout | None = None
    trainer: Trainer | None = field(default=None, repr=False)


class FederatedParty:
    def __init__(
        self,
        session: Session,
        data: DataSet,
        trainer_factory: TrainerFactory,
        options: PartyOptions | None = None,
    ) -> None:
        self.session = session
        self.data = data
        self.trainer_factory = trainer_factory
        self.options = options or PartyOptions()
        self.result = PartyResult(party_id=session.party_id)
        self._params: ParameterClient | None = None

    # --- RPCs, with retries while the aggregator is away --------------------------------

    def _retrying(self, what: str, action: Callable[[], T]) -> T:
        """``action()``, retried with backoff while the aggregator is unreachable (not up
        yet, or restarting) for up to ``reconnect_seconds``. A refusal is final: a gRPC
        FAILED_PRECONDITION / INVALID_ARGUMENT becomes ``AggregationRefusedError``, and
        verification errors pass through."""
        give_up = time.monotonic() + self.options.reconnect_seconds
        pause = 0.2
        while True:
            try:
                return action()
            except grpc.RpcError as exc:
                code = exc.code() if callable(getattr(exc, "code", None)) else None
                if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
                    raise AggregationRefusedError(f"{what}: {exc.details()}") from exc
                reason: object = code.name if code else exc
                failure: Exception = exc
            except TransportError as exc:  # e.g. the certificate fetch was refused
                reason, failure = exc, exc
            if time.monotonic() > give_up:
                raise TransportError(
                    f"{what}: the aggregator is unreachable ({reason})"
                ) from failure
            log.info("%s: aggregator unavailable (%s); retrying", what, reason)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _call(self, what: str, fn: Callable[[grpc.Channel], T]) -> T:
        """``fn(channel)`` on the session, retried while the aggregator is away."""
        return self._retrying(what, lambda: self.session.call(fn))

    # --- the protocol --------------------------------------------------------------------

    def fetch_plan(self) -> tuple[FederatedPlan, ModelLayout]:
        message = self._call(
            "plan", lambda ch: _stub(ch).GetPlan(federated_pb2.PlanRequest(), timeout=60)
        )
        try:
            plan = FederatedPlan.from_toml(
                tomllib.loads(message.plan_toml.decode()), where="the aggregator's plan"
            )
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise MalformedInputError("the aggregator's plan is not TOML") from exc
        layout = decode_layout(message)
        hashing = self.data.info.get("hashing")
        if plan.hashing is not None and hashing is not None and dict(hashing) != dict(plan.hashing):
            raise ConfigError(
                f"{self.session.party_id}: this party's data was hashed with another category "
                "hashing (function, salt or table sizes) than the plan's"
            )
        if plan.features != self.data.spec:
            raise ConfigError(
                f"{self.session.party_id}: this party's data ({self.data.name}) does not have the "
                "plan's features (names or table sizes differ)"
            )
        return plan, layout

    def run(self) -> PartyResult:
        # Verify and pin the aggregator, then enroll; wait for one that is not up yet.
        self._retrying("connect", self.session.open)
        plan, layout = self.fetch_plan()
        # The model travels through the parameter service on the same channel; retries
        # while the aggregator is away, like every other call.
        self._params = ParameterClient(lambda fn: self._call("parameter service", fn), layout)
        trainer = self.trainer_factory(plan, self.data)
        self.result.plan, self.result.layout, self.result.trainer = plan, layout, trainer
        log.info(
            "%s: joined; %d rounds of %s", self.session.party_id, plan.rounds, plan.strategy.name
        )
        # A reply (update or evaluation) brings the next task back with it; the party asks
        # with GetTask only when it has none: at the start, after a refusal, a WAIT, or a
        # reply too large for one message (issue 12: two calls a round instead of four).
        task: Any = None
        while True:
            if task is None:
                request = self._task_request()
                task = self._call(
                    "get task",
                    lambda ch, request=request: _stub(ch).GetTask(
                        request, timeout=self.options.poll_seconds + 30
                    ),
                )
            current, task = task, None
            try:
                if current.model:
                    # Checked as a pull's answer is; the task names the version it brings.
                    self._params.accept(current.model)
                if current.kind == federated_pb2.FIT:
                    task = self._fit(current, plan, layout, trainer)
                elif current.kind == federated_pb2.EVALUATE:
                    task = self._evaluate(current, layout, trainer)
                elif current.kind == federated_pb2.WAIT:
                    self.result.polls_expired += 1
                elif current.kind == federated_pb2.FINISHED:
                    self.result.best_model, self.result.best_round = self._params.pull_best()
                    log.info(
                        "%s: finished; best global model from round %d",
                        self.session.party_id,
                        self.result.best_round,
                    )
                    return self.result
            except AggregationRefusedError as exc:
                # The round moved on, or the aggregator restarted: ask again.
                self.result.refusals.append(str(exc))
                log.warning("%s", exc)

    def _task_request(self) -> federated_pb2.TaskRequest:
        """A task request naming the model this party holds: a task about another version
        brings the changes."""
        assert self._params is not None
        return federated_pb2.TaskRequest(
            wait_seconds=self.options.poll_seconds,
            carry_model=True,
            held_version=self._params.version,
            held_incarnation=self._params.incarnation,
        )

    def _current_model(self, task: Any) -> Arrays | None:
        """The global model the task is about, or None if it moved on meanwhile."""
        assert self._params is not None
        arrays = self._params.pull_unless_held(task.model_version, task.model_incarnation)
        if self._params.version != task.model_version:
            return None  # the model moved since the task was given: ask again
        return arrays

    def _fit(self, task: Any, plan: FederatedPlan, layout: ModelLayout, trainer: Trainer) -> Any:
        """Train and send the update; the next task when the push brought it back."""
        start = self._current_model(task)
        if start is None:
            return None
        config = local_fit_config(task.fit, task.round)
        trained, metrics = trainer.fit(start, config)
        full = delta(trained, start)
        if plan.update_encoding is UpdateEncoding.SPARSE:
            # Per-row normalisation needs every table's rows; FedAvg takes either form.
            update = sparsify(
                full,
                layout,
                metrics.samples // config.epochs,
                dense_when_smaller=plan.strategy.row_normalisation
                is RowNormalisation.ALL_CONTRIBUTORS,
            )
        else:
            update = ModelUpdate(dense=full, num_samples=metrics.samples // config.epochs)
        if self.options.on_update is not None:
            self.options.on_update(task.round, update)
        assert self._params is not None
        payload = encode_update(
            update,
            layout,
            step=task.round,
            base_version=self._params.version,
            incarnation=self._params.incarnation,
            train_loss=metrics.mean_loss,
            train_seconds=metrics.wall_seconds,
        )
        following = None
        if payload.ByteSize() <= tensors.CHUNK_BYTES:
            # One message, and the reply is the next task (the evaluation, with the model).
            request = federated_pb2.PushThenTaskRequest(update=payload, next=self._task_request())
            following = self._call(
                "push",
                lambda ch: _stub(ch).PushThenTask(
                    request, timeout=RPC_TIMEOUT_SECONDS + self.options.poll_seconds
                ),
            )
        else:
            self._params.push(payload)
        self.result.rounds_trained.append(task.round)
        self.result.bytes_sent[task.round] = payload.ByteSize()
        self.result.train_samples += metrics.samples
        log.info(
            "%s: round %d trained on %d rows (loss %.4f); sent %d bytes",
            self.session.party_id,
            task.round,
            update.num_samples,
            metrics.mean_loss,
            payload.ByteSize(),
        )
        return following

    def _evaluate(self, task: Any, layout: ModelLayout, trainer: Trainer) -> Any:
        """Score the task's model and send the scores; the next task when the reply
        brought it back."""
        arrays = self._current_model(task)
        if arrays is None:
            return None
        assert self._params is not None
        payload = encode_evaluation(
            round_index=task.round,
            model_version=self._params.version,
            incarnation=self._params.incarnation,
            validation_scores=trainer.predict(arrays, self.data.validation),
            validation_labels=self.data.validation.labels,
            test_scores=trainer.predict(arrays, self.data.test),
            test_labels=self.data.test.labels,
            test_row_ids=self.data.test.row_ids,
        )
        following = None
        if payload.ByteSize() <= tensors.CHUNK_BYTES:
            # One message (a unary call: a request stream costs the client a thread per
            # call), and the reply is the next round's task.
            request = federated_pb2.EvaluationThenTaskRequest(
                evaluation=payload, next=self._task_request()
            )
            following = self._call(
                "submit evaluation",
                lambda ch: _stub(ch).SubmitEvaluationThenTask(
                    request, timeout=RPC_TIMEOUT_SECONDS + self.options.poll_seconds
                ),
            )
        else:
            self._call(
                "submit evaluation",
                lambda ch: _stub(ch).SubmitEvaluation(
                    tensors.to_chunks(payload), timeout=RPC_TIMEOUT_SECONDS
                ),
            )
        self.result.rounds_evaluated.append(task.round)
        return following


def _stub(channel: grpc.Channel) -> federated_pb2_grpc.AggregatorStub:
    return federated_pb2_grpc.AggregatorStub(channel)
