"""The aggregator role: runs the rounds of a federation inside its enclave.

It holds the global model in a parameter store, tells each party what to do (train,
evaluate, wait, finish), accepts updates and evaluation scores over mutually authenticated
gRPC, combines the updates with the plan's strategy, scores every round's global model on
the union of the parties' validation and test rows, keeps the best round's model, and
seals a checkpoint after every aggregation and every round so that a restart loses no
completed round. No TensorFlow here: the model is numpy arrays.

Security: updates, scores and the model leave this process only over the attested
channels (or, with ``--tee none``, plaintext loopback for measurement). The audit log
records who enrolled and who contributed to which round, never an update or a key.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from enclaverec.audit import AuditLog
from enclaverec.data.schema import split_sha256
from enclaverec.errors import (
    AggregationRefusedError,
    ConfigError,
    ServerBusyError,
    StaleUpdateError,
    TrainingError,
)
from enclaverec.evaluation import binary_metrics
from enclaverec.federated.best_round import score_round
from enclaverec.federated.checkpoint import (
    SEALING_LABEL,
    AggregatorState,
    load_checkpoint,
    save_checkpoint,
)
from enclaverec.federated.config import FederationConfig
from enclaverec.federated.rounds import Phase, RoundCoordinator, Task, TaskKind
from enclaverec.federated.strategies import make_strategy
from enclaverec.federated.wire import (
    Evaluation,
    decode_evaluation,
    max_evaluation_bytes,
    plan_message,
)
from enclaverec.paramservice.combine import check_finite_result
from enclaverec.paramservice.service import (
    ParameterService,
    ParameterServicer,
    PushedUpdate,
    abort_refused,
    as_refusal,
)
from enclaverec.paramservice.store import ParameterStore
from enclaverec.report import write_json
from enclaverec.tee.attested_ca import EnrollmentConfig, PeerIdentity
from enclaverec.tee.backend import EvidenceBackend
from enclaverec.tee.kinds import TEEKind
from enclaverec.transport import tensors
from enclaverec.transport.proto import (
    federated_pb2,
    federated_pb2_grpc,
    paramservice_pb2_grpc,
    tensors_pb2,
)
from enclaverec.transport.server import (
    AttestedServer,
    ListenConfig,
    ServerIdentity,
    ServerIdentityConfig,
)
from enclaverec.transport.serving import ChangeSignal, long_poll_seconds

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
SUMMARY_FILE = "federation-summary.json"
MAX_WAIT_SECONDS = 30.0
MAX_PHASE_ATTEMPTS = 5
FINISH_GRACE_SECONDS = 60.0
MAX_WAITING_PER_PARTY = 2
"""Task requests one party may have waiting at once. A well-behaved party has one (it
asks again only after an answer or an error); two leave room for a retry racing the end
of a dropped call. More would let one member hold the server's call slots."""
RECHECK_SECONDS = 1.0
"""The shortest interval at which a waiting party is looked at again, so that it counts
as seen (see :func:`recheck_seconds`)."""
RECHECKS_PER_DEADLINE = 4
LOCK_RETRY_SECONDS = 0.02
"""How soon a task request looks again at state the driver is busy with."""
# The wait for parties to receive the best model grows with its size: at least this rate
# (a slow link, a loaded machine) must suffice. A 166 MB kaggle model gets 60 + 166 s.
FINISH_BYTES_PER_SECOND = 1 << 20


def recheck_seconds(deadline_seconds: float) -> float:
    """How often a waiting task request looks at the round again. It only has to keep its
    party "recently seen" (within one phase deadline, ``RoundCoordinator.recently_seen``);
    a change of phase wakes it at once anyway. A fixed second cost 256 wake-ups a second
    at 256 parties (issue 12's profile: a sixth of the event loop's time); a quarter of
    the deadline (600 s by default, so in practice the poll's own end) costs almost none.
    """
    return max(RECHECK_SECONDS, deadline_seconds / RECHECKS_PER_DEADLINE)


def finish_grace_seconds(model_bytes: int) -> float:
    """How long a finished federation waits for its parties to receive the best model."""
    return FINISH_GRACE_SECONDS + model_bytes / FINISH_BYTES_PER_SECOND


class FederatedAggregator:
    """One federation's aggregator. ``backend`` is None only for ``--tee none``."""

    def __init__(
        self,
        config: FederationConfig,
        *,
        backend: EvidenceBackend | None,
        state_dir: Path,
        listen: ListenConfig,
        party_verification: Any | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (backend is None) != (config.tee is TEEKind.NONE):
            raise ConfigError(
                "a TEE backend is needed exactly when the federation's tee is not none"
            )
        self.config = config
        self.plan = config.plan
        self.backend = backend
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.audit = AuditLog(self.state_dir / AUDIT_FILE)
        self.clock = clock
        self.strategy = make_strategy(self.plan.strategy)
        initial, self.layout = self.plan.initial_model()
        self._sealing_key = backend.sealing_key(SEALING_LABEL) if backend is not None else None
        restored = (
            load_checkpoint(self.state_dir, self._sealing_key, self.layout)
            if self._sealing_key is not None
            else None
        )
        if restored is not None:
            restored.restarts += 1
            self.state = restored
            self.strategy.load_state(restored.strategy_state)
        else:
            self.state = AggregatorState(store=ParameterStore(initial, self.layout))
        parties = sorted(config.membership)
        self.coordinator: RoundCoordinator[Any] = RoundCoordinator(
            parties,
            self.plan.rounds,
            self.plan.selection,
            seed=self.plan.seed,
            start_round=self.state.completed_round + 1,
            clock=clock,
        )
        if self.state.aggregated_round > self.state.completed_round:
            # Aggregated but not evaluated before the restart: evaluate that model now.
            self.coordinator.skip_to_evaluation()
        self._cond = threading.Condition()
        # Wakes the task requests waiting on the server's event loop (the condition
        # wakes threads: the driver, and nothing else waits on it for long).
        self._changed = ChangeSignal()
        self._waiting: dict[str, int] = {}
        self._recheck = recheck_seconds(self.plan.selection.deadline_seconds)
        # The model travels through the parameter service; pushed updates land in this
        # round's replies (under the same lock).
        self.params = ParameterService(
            self.state.store,
            self._accept_update,
            norm_bound=self.plan.norm_bound,
            weight_bounds=config.max_rows,
            lock=self._cond,
        )
        self.params.best = self.best_model
        self._finished: set[str] = set()
        self._attested_peers: dict[str, dict[str, Any]] = {}
        self._wire_bytes: dict[int, dict[str, int]] = {}
        self._train_loss: dict[int, float] = {}
        self._round_started = time.perf_counter()
        self._started = time.perf_counter()
        self._failed: Exception | None = None
        # Opens the other sealed files (TLS and CA keys): a tampered one stops us here.
        self.server = self._make_server(listen, party_verification)
        self._evaluation_budget = tensors.InFlightBudget()
        self.finish_grace = finish_grace_seconds(
            sum(
                math.prod(spec.shape) * np.dtype(spec.dtype).itemsize
                for spec in self.layout.specs.values()
            )
        )
        if restored is not None:
            # Only now is every sealed file open: "resumed" is never written for a restart
            # that then fails on a tampered key file.
            log.info(
                "resumed from the sealed checkpoint: %d round(s) completed, model version %d",
                restored.completed_round,
                restored.store.version,
            )
            self.audit.write(
                "resumed",
                completed_round=restored.completed_round,
                aggregated_round=restored.aggregated_round,
            )
        # One servicer for the parameter service and the federated PushThenTask: one
        # push check.
        self.params_servicer = ParameterServicer(
            self.params,
            lambda context: self.peer(context).party_id,
            on_pull_best=self.mark_finished,
            on_refused=self._refused_update,
        )
        federated_pb2_grpc.add_AggregatorServicer_to_server(
            AggregatorServicer(self), self.server.application_server
        )
        paramservice_pb2_grpc.add_ParameterServiceServicer_to_server(
            self.params_servicer, self.server.application_server
        )

    # --- set-up ------------------------------------------------------------------------

    def _make_server(self, listen: ListenConfig, party_verification: Any | None) -> AttestedServer:
        options = [("grpc.max_receive_message_length", 8 << 20)]
        # Bounds on calls in progress that every member can use at once, and no more.
        listen = listen.sized_for(len(self.config.membership))
        if self.backend is None:
            return AttestedServer.unsafe_plaintext_baseline(
                listen,
                parties=self.config.membership,
                application_options=options,
                on_overload=self._overloaded,
            )
        identity = ServerIdentity(self.backend, ServerIdentityConfig(self.state_dir))
        enrollment = EnrollmentConfig(
            membership=self.config.membership,
            require_membership_signature=True,
            require_evidence=self.config.parties_attest,
        )
        return AttestedServer.create(
            identity,
            enrollment,
            listen,
            evidence_verification=party_verification if self.config.parties_attest else None,
            audit=self.audit.enrollment,
            refused=self._refused_enrollment,
            application_options=options,
            on_overload=self._overloaded,
        )

    def _overloaded(self, method: str, peer: str, limit: int) -> None:
        self.audit.write("overloaded", method=method, peer=peer, limit=limit)

    def _notify(self) -> None:
        """Wake everything that waits for a change (lock held): the driver thread and the
        parties' waiting task requests. For the driver's changes of phase only: every
        waiting party looks again."""
        self._cond.notify_all()
        self._changed.notify()

    def _refused_enrollment(self, claimed: str, check: str, detail: str) -> None:
        # The joiner gets one answer for every membership refusal; the detail is here only.
        self.audit.write("enrollment_refused", claimed_party_id=claimed, check=check, reason=detail)

    # --- what the servicer calls (under the condition's lock) ---------------------------

    def peer(self, context: grpc.ServicerContext) -> PeerIdentity:
        identity = self.server.peer_identity(context)
        # Only authenticated peers count as attested (not the --tee none baseline's
        # declared ones).
        if identity.authenticated and identity.party_id not in self._attested_peers:
            self._attested_peers[identity.party_id] = identity.to_dict()
        return identity

    def task_now(self, party: str) -> tuple[Task, int]:
        """The party's task at this moment and the model version it is about."""
        with self._cond:
            return self.coordinator.task_for(party), self.state.store.version

    async def next_task(self, party: str, wait_seconds: float) -> tuple[Task, int]:
        """The party's next task, waiting while there is nothing to do (up to
        ``wait_seconds``). Runs on the application server's event loop: the wait holds no
        thread, and a task is handed out the moment the driver makes it (the driver's
        notify wakes this at once, not at a poll's end). Refuses a party that already has
        ``MAX_WAITING_PER_PARTY`` requests waiting (``ServerBusyError``, audited)."""
        waiting = self._waiting.get(party, 0)
        if waiting >= MAX_WAITING_PER_PARTY:
            self.audit.write(
                "refused", party_id=party, reason=f"{waiting} task requests already waiting"
            )
            raise ServerBusyError(f"{party} already has {waiting} task requests waiting")
        self._waiting[party] = waiting + 1
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + long_poll_seconds(wait_seconds, MAX_WAIT_SECONDS)
            while True:
                # The generation first: a change made while we look is never missed.
                seen = self._changed.generation
                task, version = await self._task_without_blocking(party)
                remaining = deadline - loop.time()
                if task.kind is not TaskKind.WAIT or remaining <= 0 or self._failed:
                    return task, version
                await self._changed.wait(seen, min(remaining, self._recheck))
        finally:
            self._waiting[party] -= 1
            if not self._waiting[party]:
                del self._waiting[party]

    async def _task_without_blocking(self, party: str) -> tuple[Task, int]:
        # Taken on the loop when the lock is free (nearly always, and held only briefly).
        # While the driver holds it (aggregating, sealing a checkpoint) the request waits
        # for the driver's next notification, or looks again shortly: it never blocks the
        # loop, nor a worker thread that pushes and pulls need.
        while True:
            seen = self._changed.generation
            if self._cond.acquire(blocking=False):
                try:
                    return self.coordinator.task_for(party), self.state.store.version
                finally:
                    self._cond.release()
            await self._changed.wait(seen, LOCK_RETRY_SECONDS)

    def fit_instructions(self, round_index: int) -> federated_pb2.FitInstructions:
        fit = self.strategy.configure_fit(round_index, self.plan.local)
        return federated_pb2.FitInstructions(
            epochs=fit.epochs,
            batch_size=fit.batch_size,
            learning_rate=fit.learning_rate,
            proximal_mu=fit.proximal_mu,
            seed=fit.seed,
        )

    @property
    def incarnation(self) -> str:
        return self.params.incarnation

    def _refused_update(self, party: str, step: int, refusal: Exception) -> None:
        """A push the parameter service refused: audit it; if its content was refused
        (not merely computed from an older model, which the party retrains from), end the
        party's turn in this round's FIT phase: it would only be refused again."""
        self.audit.write("refused", party_id=party, round=step, reason=str(refusal))
        if isinstance(refusal, StaleUpdateError):
            return
        with self._cond:
            self.coordinator.mark_refused(party, Phase.FIT, step)
            self._cond.notify_all()  # the driver (no other party's task changed)

    def _accept_update(self, pushed: PushedUpdate) -> None:
        """The parameter service's sink (lock held): this round's FIT reply."""
        self.coordinator.accept(pushed.contributor, Phase.FIT, pushed.step, pushed)
        self._wire_bytes.setdefault(pushed.step, {})[pushed.contributor] = pushed.wire_bytes
        self.audit.write(
            "update",
            party_id=pushed.contributor,
            round=pushed.step,
            samples=pushed.update.num_samples,
            bytes=pushed.wire_bytes,
        )

    def max_evaluation_bytes(self, party: str) -> int:
        """The largest evaluation ``party`` may send: max_rows validation and test rows."""
        return max_evaluation_bytes(self.config.max_rows.get(party, 0))

    def receive_evaluation(
        self, party: str, chunks: Iterable[tensors_pb2.Chunk]
    ) -> federated_pb2.EvaluationPayload:
        """Reassemble a party's evaluation, refused as soon as it exceeds its bound."""
        return tensors.from_chunks(
            chunks,
            federated_pb2.EvaluationPayload,
            max_bytes=self.max_evaluation_bytes(party),
            budget=self._evaluation_budget,
            caller=party,
        )

    def evaluation_message(
        self, party: str, payload: federated_pb2.EvaluationPayload
    ) -> federated_pb2.EvaluationPayload:
        """A party's evaluation sent as one message, held to the same bound as a stream."""
        return tensors.check_one_message(
            payload, self.max_evaluation_bytes(party), f"the evaluation from {party}"
        )

    def submit_evaluation(self, party: str, payload: federated_pb2.EvaluationPayload) -> None:
        evaluation = decode_evaluation(payload, max_rows=self.config.max_rows.get(party, 0))
        with self._cond:
            if (
                payload.incarnation != self.incarnation
                or payload.model_version != self.state.store.version
            ):
                raise AggregationRefusedError(
                    f"evaluation from {party} refused: it scored model version "
                    f"{payload.model_version}, the global model is at {self.state.store.version}"
                )
            self.coordinator.accept(party, Phase.EVALUATE, payload.round, evaluation)
            # Only the driver: a reply changes no one's task until the driver closes the
            # phase (and then notifies everyone). Waking every waiting party per reply
            # cost O(parties^2) per round (issue 12: 4 s of CPU per round at 256).
            self._cond.notify_all()

    def best_model(self) -> tuple[dict[str, np.ndarray], int]:
        with self._cond:
            if self.state.best_arrays is None:
                return self.state.store.snapshot(), self.state.completed_round
            return self.state.best_arrays, self.state.best_round or 0

    def mark_finished(self, party: str) -> None:
        """``party`` received the whole best model (its download stream completed)."""
        with self._cond:
            self._finished.add(party)
            self.audit.write("finished", party_id=party)
            self._cond.notify_all()  # the driver

    # --- the rounds ----------------------------------------------------------------------

    def run(self, *, on_round: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Serve until every round is done and the parties have fetched the best model
        (or a grace period has passed); returns the summary it also writes."""
        endpoints = self.server.start()
        self.audit.write(
            "started",
            attested=self.server.attested,
            mrenclave=self.backend.measurement().hex() if self.backend else None,
            application_port=endpoints.application_port,
            enrollment_port=endpoints.enrollment_port,
        )
        try:
            self._drive(on_round)
        finally:
            # Every live party confirmed (or the finish grace passed). The last frames a
            # party confirmed may still be in flight (up to gRPC's flow-control window):
            # the grace lets them drain. It ends as soon as no call is left, so a long
            # grace costs nothing when every party is done.
            self.server.stop(grace=self.finish_grace)
        summary = self.summary()
        write_json(self.state_dir / SUMMARY_FILE, summary)
        return summary

    def _drive(self, on_round: Callable[[dict[str, Any]], None] | None) -> None:
        attempts = 0
        done_at: float | None = None
        with self._cond:
            while True:
                if self.coordinator.phase is Phase.DONE:
                    done_at = self.clock() if done_at is None else done_at
                    # Wait for the parties still around to receive the whole best model;
                    # one not seen for a whole deadline (it crashed, or was dropped) is not.
                    # One that never confirms ends the wait after the grace.
                    live = self.coordinator.recently_seen()
                    if live <= self._finished:
                        return
                    if self.clock() - done_at > self.finish_grace:
                        log.warning(
                            "finished without confirmation from %s after %.0f s",
                            ", ".join(sorted(live - self._finished)),
                            self.finish_grace,
                        )
                        self.audit.write(
                            "finish_unconfirmed", parties=sorted(live - self._finished)
                        )
                        return
                    self._cond.wait(0.5)
                    continue
                if self.coordinator.ready():
                    phase, round_index = self.coordinator.phase, self.coordinator.round
                    replies = self.coordinator.close_phase()
                    attempts = 0
                    if phase is Phase.FIT:
                        self._aggregate(round_index, replies)
                    else:
                        record = self._evaluate(round_index, replies)
                        if on_round is not None:
                            on_round(record)
                    self._notify()
                    continue
                if self.coordinator.expired_without_quorum():
                    attempts += 1
                    if attempts >= MAX_PHASE_ATTEMPTS:
                        self._failed = TrainingError(
                            f"round {self.coordinator.round}: no quorum after {attempts} deadlines"
                        )
                        self._notify()
                        raise self._failed
                    log.warning(
                        "round %d %s: deadline passed with %d of %d replies (quorum %d); "
                        "selecting again among the live parties",
                        self.coordinator.round,
                        self.coordinator.phase.value,
                        len(self.coordinator.replies),
                        len(self.coordinator.selected),
                        self.coordinator.quorum_count,
                    )
                    self.audit.write(
                        "phase_restarted",
                        round=self.coordinator.round,
                        phase=self.coordinator.phase.value,
                    )
                    self.coordinator.restart_phase()
                    self._notify()
                    continue
                self._cond.wait(min(1.0, max(self.coordinator.seconds_to_deadline(), 0.05)))

    def _aggregate(self, round_index: int, replies: dict[str, PushedUpdate]) -> None:
        parties = list(replies)
        # The round's training loss for the curves: the parties' reported mean losses
        # (finite, checked on receipt), weighted by their bounded sample counts.
        weights = [max(reply.update.num_samples, 0) for reply in replies.values()]
        if sum(weights) > 0:
            self._train_loss[round_index] = sum(
                w * reply.train_loss for w, reply in zip(weights, replies.values(), strict=True)
            ) / sum(weights)
        strategy_state = {name: value.copy() for name, value in self.strategy.state().items()}
        try:
            change = self.strategy.aggregate(
                [reply.update for reply in replies.values()],
                self.layout,
                parties,
                self.plan.norm_bound,
            )
            check_finite_result(change, f"round {round_index}'s combination")
            self.state.store.apply(change)
            for party, cosine in self.strategy.excluded.items():
                log.warning(
                    "round %d: update from %s left out: it points against the others (cosine %.3f)",
                    round_index,
                    party,
                    cosine,
                )
                self.audit.write(
                    "excluded", round=round_index, party=party, cosine_with_others=cosine
                )
        except AggregationRefusedError as exc:
            # The combination is refused, the model stays at the last one (and the
            # strategy's server state with it); the round goes on to evaluation.
            self.strategy.load_state(strategy_state)
            log.warning("round %d: %s", round_index, exc)
            self.audit.write("refused", round=round_index, parties=parties, reason=str(exc))
        self.state.aggregated_round = round_index
        self.state.strategy_state = dict(self.strategy.state())
        # A party's weight is its rows (one epoch); it trained them local-epochs times, as
        # centralized training counts every epoch's rows.
        self.state.train_samples += self.plan.local.epochs * sum(
            reply.update.num_samples for reply in replies.values()
        )
        # Parties train in parallel: the round's training phase lasts as long as its slowest.
        self.state.train_seconds += max(reply.train_seconds for reply in replies.values())
        for party in parties:
            self.state.contributions.setdefault(party, []).append(round_index)
        # Seal first, then announce: what the audit log reports survives a crash.
        self._checkpoint()
        self.audit.write(
            "aggregated", round=round_index, parties=parties, model_version=self.state.store.version
        )

    def _evaluate(self, round_index: int, replies: dict[str, Evaluation]) -> dict[str, Any]:
        values = list(replies.values())
        scores = score_round(replies)
        validation = scores.pooled
        per_party = {
            party: None
            if m is None
            else {"val_auc": m.auc, "val_logloss": m.logloss, "rows": m.rows}
            for party, m in scores.per_party.items()
        }
        self.audit.write(
            "evaluated",
            round=round_index,
            per_party=per_party,
            selection_auc=scores.selection_auc,
            statistic=scores.statistic,
        )
        test = binary_metrics(
            np.concatenate([e.test_labels for e in values]),
            np.concatenate([e.test_scores for e in values]),
        )
        test_ids = np.concatenate([e.test_row_ids for e in values])
        elapsed = self.state.wall_seconds_before + (time.perf_counter() - self._started)
        record = {
            "round": round_index,
            "val_auc": validation.auc,
            "val_logloss": validation.logloss,
            # What chooses the best round: no single party can move it (best_round.py).
            "selection_auc": scores.selection_auc,
            "selection_statistic": scores.statistic,
            "val_auc_per_party": {p: m and m["val_auc"] for p, m in per_party.items()},
            "test_auc": test.auc,
            "test_logloss": test.logloss,
            "test_accuracy": test.accuracy,
            "test_rows": test.rows,
            "wall_seconds": elapsed,
            "round_seconds": time.perf_counter() - self._round_started,
            "parties_evaluated": sorted(replies),
            "bytes_received": self._wire_bytes.get(round_index, {}),
            "train_loss": self._train_loss.get(round_index),
        }
        self._round_started = time.perf_counter()
        self.state.history.append(record)
        if self.state.best_val_auc is None or scores.selection_auc > self.state.best_val_auc:
            self.state.best_round = round_index
            self.state.best_val_auc = scores.selection_auc
            self.state.best_arrays = self.state.store.snapshot()
            self.state.best_test = {
                "test_auc": test.auc,
                "test_logloss": test.logloss,
                "test_accuracy": test.accuracy,
                "test_rows": test.rows,
                "test_split_sha256": split_sha256(test_ids),
            }
        self.state.completed_round = round_index
        # Seal first, then announce: a round the audit log reports complete is never
        # lost (nor evaluated again) if the aggregator dies right after.
        self._checkpoint()
        self.audit.write(
            "round_completed", round=round_index, val_auc=validation.auc, test_auc=test.auc
        )
        log.info(
            "round %d/%d: validation AUC %.4f, test AUC %.4f (%d parties)",
            round_index,
            self.plan.rounds,
            validation.auc,
            test.auc,
            len(replies),
        )
        return record

    def _checkpoint(self) -> None:
        if self._sealing_key is None:
            return  # --tee none: nothing may be written in plaintext, and nothing sealed
        elapsed = time.perf_counter() - self._started
        save_checkpoint(
            self.state_dir,
            self._sealing_key,
            self.state,
            wall_seconds=self.state.wall_seconds_before + elapsed,
        )

    def summary(self) -> dict[str, Any]:
        """What the federation achieved, without any model or data: for metrics.json."""
        with self._cond:
            wall = self.state.wall_seconds_before + (time.perf_counter() - self._started)
            return {
                "federation": self.config.name,
                "tee": self.config.tee.value,
                "parties_attest": self.config.parties_attest,
                "parties": len(self.config.membership),
                "rounds_planned": self.plan.rounds,
                "rounds_completed": self.state.completed_round,
                "best_round": self.state.best_round,
                "best_val_auc": self.state.best_val_auc,
                "best_test": self.state.best_test,
                "history": self.state.history,
                "contributions": self.state.contributions,
                "train_samples": self.state.train_samples,
                "train_seconds": self.state.train_seconds,
                "wall_seconds": wall,
                "restarts": self.state.restarts,
                "attested_peers": sorted(
                    self._attested_peers.values(), key=lambda p: p["party_id"]
                ),
                "update_encoding": self.plan.update_encoding.value,
                "mrenclave": self.backend.measurement().hex() if self.backend else None,
            }


# --- the gRPC service ---------------------------------------------------------------------


class AggregatorServicer(federated_pb2_grpc.AggregatorServicer):
    """Every RPC first establishes who the peer is (``peer_identity`` aborts an
    unauthenticated call), then asks the aggregator."""

    def __init__(self, aggregator: FederatedAggregator) -> None:
        self.aggregator = aggregator
        self._plan = plan_message(aggregator.config, aggregator.layout).SerializeToString()

    def GetPlan(self, request, context):  # noqa: N802 - gRPC's naming
        self.aggregator.peer(context)
        # Made once (canonicalising the plan took ~7 ms per party); each caller gets its
        # own parsed copy, so no message is shared between threads.
        return federated_pb2.Plan.FromString(self._plan)

    async def GetTask(self, request, context):  # noqa: N802
        # A long-poll: it waits on the server's event loop, holding no thread
        # (transport/serving.py), and its blocking parts run on a worker.
        party = await self._party_on_loop(context)
        return await self._next_task(party, request, context)

    async def PushThenTask(self, request, context):  # noqa: N802
        # The push exactly as PushUnary (its bounds, checks, audit events and refusals) on a
        # worker; a refusal ends the call there. Then the task request that every push was
        # followed by, answered as GetTask answers it: one call fewer per party and round.
        party = await self._party_on_loop(context)
        serving = self.aggregator.server.application_server
        await serving.run_with_context(
            lambda ctx: self.aggregator.params_servicer.PushUnary(request.update, ctx), context
        )
        return await self._next_task(party, request.next, context, after_reply=True)

    async def SubmitEvaluationThenTask(self, request, context):  # noqa: N802
        # The same for an evaluation (as SubmitEvaluationUnary), then the next round's task.
        party = await self._party_on_loop(context)
        serving = self.aggregator.server.application_server
        await serving.run_with_context(
            lambda ctx: self.SubmitEvaluationUnary(request.evaluation, ctx), context
        )
        return await self._next_task(party, request.next, context, after_reply=True)

    async def _party_on_loop(self, context) -> str:
        # The cached certificate check, on the loop (no thread switch); aborts a stranger.
        serving = self.aggregator.server.application_server
        return (await serving.run_quick_with_context(self.aggregator.peer, context)).party_id

    async def _next_task(
        self, party: str, request, context, *, after_reply: bool = False
    ) -> federated_pb2.Task:
        serving = self.aggregator.server.application_server
        try:
            task, version = await self.aggregator.next_task(party, request.wait_seconds)
        except ServerBusyError as exc:
            if after_reply:
                # The reply was accepted; the party must not resend it but ask for its task
                # (GetTask), where it meets this bound as a retryable RESOURCE_EXHAUSTED.
                return federated_pb2.Task(kind=federated_pb2.WAIT)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except AggregationRefusedError as exc:
            await serving.run_with_context(abort_refused, context, exc)
        kind = {
            TaskKind.FIT: federated_pb2.FIT,
            TaskKind.EVALUATE: federated_pb2.EVALUATE,
            TaskKind.WAIT: federated_pb2.WAIT,
            TaskKind.FINISHED: federated_pb2.FINISHED,
        }[task.kind]
        incarnation = self.aggregator.incarnation
        message = federated_pb2.Task(
            kind=kind,
            round=task.round,
            attempt=task.attempt,
            model_version=version,
            model_incarnation=incarnation,
        )
        if task.kind is TaskKind.FIT:
            message.fit.CopyFrom(self.aggregator.fit_instructions(task.round))
        if (
            request.carry_model
            and task.kind in (TaskKind.FIT, TaskKind.EVALUATE)
            and (request.held_version, request.held_incarnation) != (version, incarnation)
        ):
            # The model rides in the task: one call fewer per party and round (issue 12).
            # Encoded once per version for every party, like a pull's answer; encoded on a
            # worker by the first party to need it, the others find it made.
            params = self.aggregator.params
            since, held = request.held_version, request.held_incarnation
            model = params.cached_model_message(since, held, version)
            if model is None:
                model = await serving.run_blocking(params.model_message, since, held, version)
            if model is not None:
                message.model = model
        return message

    def SubmitEvaluation(self, request_iterator, context):  # noqa: N802
        party = self.aggregator.peer(context).party_id
        return self._submit_evaluation(
            party,
            context,
            lambda: self.aggregator.receive_evaluation(party, request_iterator),
        )

    def SubmitEvaluationUnary(self, request, context):  # noqa: N802
        party = self.aggregator.peer(context).party_id
        return self._submit_evaluation(
            party, context, lambda: self.aggregator.evaluation_message(party, request)
        )

    def _submit_evaluation(
        self,
        party: str,
        context: grpc.ServicerContext,
        receive: Callable[[], federated_pb2.EvaluationPayload],
    ) -> federated_pb2.SubmitReply:
        try:
            payload = receive()
            self.aggregator.submit_evaluation(party, payload)
        except Exception as exc:  # noqa: BLE001 - every refusal gets a status and an audit event
            refusal = as_refusal(exc, f"the evaluation from {party}")
            if refusal is not exc:
                log.warning("undecodable evaluation from %s", party, exc_info=exc)
            self.aggregator.audit.write("refused", party_id=party, reason=str(refusal))
            abort_refused(context, refusal)
        return federated_pb2.SubmitReply(accepted=True)
