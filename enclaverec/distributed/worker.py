"""A worker joining its job: attest the key broker, enroll with evidence, receive the data
key (only a verified worker of this job gets it), and decrypt its own shard in memory.

What it then trains is the data plane's (``docs/distributed.md``, "Data plane"); this
module also reports each epoch's scores to the key broker and follows its directives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from enclaverec.data import encrypted
from enclaverec.data.shards import WorkerShard, load_shard
from enclaverec.distributed.config import WorkerConfig
from enclaverec.distributed.members import call_keybroker, keybroker_session, next_directive
from enclaverec.errors import (
    BarrierTimeoutError,
    IntegrityError,
    StaleUpdateError,
    TransportError,
)
from enclaverec.transport import tensors
from enclaverec.transport.proto import keybroker_pb2, keybroker_pb2_grpc
from enclaverec.transport.session import Session

log = logging.getLogger(__name__)

MAX_RECOVERIES = 5
START_GRACE_SECONDS = 600.0
"""How long the first barrier after a (re)start waits for the other workers."""
"""Parameter-server restarts a worker rides through before it gives up."""

__all__ = ["WorkerSetup", "join_job", "next_directive", "release_key", "submit_evaluation"]


@dataclass(frozen=True)
class WorkerSetup:
    """A worker that joined its job: its configuration, its key-broker session and its
    decrypted shard (in memory only)."""

    config: WorkerConfig
    session: Session
    shard: WorkerShard = field(repr=False)
    paramserver_mrenclaves: Mapping[str, bytes] = field(default_factory=dict)
    """Each parameter server's measurement, as the owner submitted it to the key broker:
    what the worker pins the servers by."""


def release_key(
    session: Session, job: str, *, wait_seconds: float
) -> tuple[bytes, bytes, dict[str, bytes]]:
    """(data key, data set id, parameter servers' measurements) from the key broker;
    waits while the owner has not submitted the job yet. Raises ``RequestRefusedError``
    (exit 3) when refused."""
    reply = call_keybroker(
        session,
        lambda channel: keybroker_pb2_grpc.KeyBrokerStub(channel).ReleaseKey(
            keybroker_pb2.ReleaseKeyRequest(job=job), timeout=30
        ),
        "the data key",
        wait_while_not_ready=wait_seconds,
    )
    pins = {member: bytes(value) for member, value in reply.paramserver_mrenclaves.items()}
    return bytes(reply.data_key), bytes(reply.dataset_id), pins


def join_job(config_path: Path, *, attestation_dir: Path | None = None) -> WorkerSetup:
    """Load the worker's configuration, join its job and decrypt its shard."""
    config = WorkerConfig.load(config_path)
    session = keybroker_session(
        role="worker",
        member_id=config.worker_id,
        tee=config.tee,
        raw_config=config.raw,
        simulation_dir=config.simulation_dir,
        keybroker=config.keybroker,
        keybroker_policy=config.keybroker_policy,
        pccs_url=config.pccs_url,
        attestation_dir=attestation_dir,
    )
    try:
        session.open()
        key, dataset_id, pins = release_key(
            session, config.job, wait_seconds=config.plan.worker_deadline_seconds
        )
        header = encrypted.read_unverified_header(config.data)
        if header.dataset_id != dataset_id:
            raise IntegrityError(f"{config.data.name} belongs to another data set than the job's")
        shard = load_shard(
            config.data, key, expected_header_sha256=config.shard_sha256, spec=config.plan.features
        )
        del key
    except BaseException:
        session.close()
        raise
    log.info(
        "%s joined job %s: %d training, %d validation, %d test rows decrypted in memory",
        config.worker_id,
        config.job,
        len(shard.train),
        len(shard.validation),
        len(shard.test),
    )
    return WorkerSetup(config, session, shard, pins)


def submit_evaluation(
    session: Session,
    *,
    epoch: int,
    steps: int,
    train_seconds: float,
    train_samples: int,
    validation: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    bytes_pushed: int = 0,
    bytes_pulled: int = 0,
    wait_seconds: float = 0.0,
) -> None:
    """Send this worker's scores on its validation rows (scores, labels) and test rows
    (scores, labels, row ids) for the model after ``epoch``."""
    payload = keybroker_pb2.EvaluationPayload(
        epoch=epoch,
        steps=steps,
        train_seconds=train_seconds,
        train_samples=train_samples,
        validation_scores=np.asarray(validation[0], "<f4").tobytes(),
        validation_labels=np.asarray(validation[1], "<f4").tobytes(),
        test_scores=np.asarray(test[0], "<f4").tobytes(),
        test_labels=np.asarray(test[1], "<f4").tobytes(),
        test_row_ids=np.asarray(test[2], "<i8").tobytes(),
        bytes_pushed=bytes_pushed,
        bytes_pulled=bytes_pulled,
    )
    call_keybroker(
        session,
        lambda channel: keybroker_pb2_grpc.KeyBrokerStub(channel).SubmitEvaluation(
            tensors.to_chunks(payload), timeout=120
        ),
        "the evaluation",
        wait_while_not_ready=wait_seconds,
    )


# --- training ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerResult:
    """What a worker did: epochs evaluated, the steps it ran (a restart runs fewer), its
    rows, payload bytes, and the median seconds of each phase of a step."""

    worker_id: str
    epochs: int
    steps: int
    first_step: int
    rows: int
    pulled_bytes: int
    pushed_bytes: int
    median_seconds: Mapping[str, float]
    setup_seconds: float
    """From the role's start to its first step: join, attest, decrypt, build the model."""

    def to_dict(self) -> dict[str, object]:
        return {
            "worker": self.worker_id,
            "epochs": self.epochs,
            "steps": self.steps,
            "first_step": self.first_step,
            "rows": self.rows,
            "pulled_bytes": self.pulled_bytes,
            "pushed_bytes": self.pushed_bytes,
            "median_seconds": dict(self.median_seconds),
            "setup_seconds": self.setup_seconds,
        }


def paramserver_sessions(setup: WorkerSetup, *, attestation_dir: Path | None = None) -> list:
    """One session per parameter server, in shard order. Each server must prove the
    exact MRENCLAVE the owner submitted for it (given with the data key) and the signer
    and role of the worker's measured configuration; the worker enrolls with its CA."""
    import dataclasses

    from enclaverec.errors import MrEnclaveError
    from enclaverec.paramservice.shard_rpc import SHARD_CHANNEL_OPTIONS
    from enclaverec.tee.kinds import TEEKind
    from enclaverec.tee.role_setup import role_backend, verifier_context
    from enclaverec.transport.endpoints import ServerEndpoints
    from enclaverec.transport.enrollment import EnrollmentCredentials
    from enclaverec.transport.session import ClientSession, SessionConfig

    config = setup.config
    sessions = []
    backend = None
    if config.tee is not TEEKind.NONE:
        backend = role_backend(
            "worker", config.tee, config.raw, config.simulation_dir, attestation_dir
        )
    for member in config.plan.paramservers:
        address = config.paramservers[member]
        endpoints = ServerEndpoints(address.host, address.port, address.enrollment_port)
        if backend is None:
            sessions.append(
                ClientSession.unsafe_plaintext_baseline(
                    endpoints, config.worker_id, channel_options=SHARD_CHANNEL_OPTIONS
                )
            )
            continue
        pin = setup.paramserver_mrenclaves.get(member)
        if pin is None or config.paramserver_signer_policy is None:
            raise MrEnclaveError(
                f"the key broker gave no measurement for {member}: the worker will not "
                "send gradients to a server it cannot pin"
            )
        policy = dataclasses.replace(config.paramserver_signer_policy, mrenclaves=frozenset({pin}))
        sessions.append(
            ClientSession(
                endpoints,
                verifier_context(config.tee, policy, config.simulation_dir, config.pccs_url),
                EnrollmentCredentials(config.worker_id, backend=backend),
                SessionConfig(channel_options=SHARD_CHANNEL_OPTIONS),
            )
        )
    return sessions


def _open_when_up(session, wait_seconds: float) -> None:
    """Open ``session``, retrying while its server is not up yet (servers and workers
    start in any order); a refusal is raised at once."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            session.open()
            return
        except TransportError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.25)


def _applied_when_up(client, wait_seconds: float, checkpoint_every: int) -> int:
    """The step every shard is at, once every shard answers again: with several shards,
    those ahead of one restarted from its checkpoint roll back to its step."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return client.align(checkpoint_every)
        except (TransportError, grpc.RpcError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def gradient_trainer(plan, *, threads: int | None = None):
    """The plan's step trainer: the numpy logistic regression, or the TensorFlow DLRM's
    sparse gradients (TensorFlow imported only then, with ``threads`` intra-op threads)."""
    from enclaverec.training import ModelKind

    if plan.model is ModelKind.LOGREG:
        from enclaverec.logreg import LogisticRegressionGradients

        return LogisticRegressionGradients(plan.features)
    from enclaverec.model.threads import ThreadSettings, available_cores, configure_threads

    configure_threads(ThreadSettings(intra_op=threads or available_cores(), inter_op=1))
    from enclaverec.dlrm.config import PRESETS, Preset
    from enclaverec.model.sparse_gradients import DLRMGradients

    return DLRMGradients(plan.features, PRESETS[Preset(plan.preset)].model)


def run_worker(
    config_path: Path,
    *,
    threads: int | None = None,
    attestation_dir: Path | None = None,
    on_epoch=None,
) -> WorkerResult:
    """The worker role, start to end: join the job (attest the key broker, get the data
    key, decrypt the shard in memory), attest and enroll with every parameter server,
    then per epoch run its part of the steps, score its validation and test rows with
    the epoch's model and send the scores to the key broker, until it says STOP.

    A restarted worker resumes at the step after the last one every shard applied (it
    attests again: a new process has no certificate)."""
    from enclaverec.distributed.steps import StepLoopConfig, WorkerData, run_worker_steps
    from enclaverec.paramservice.shard_rpc import ShardedClient

    began = time.perf_counter()
    setup = join_job(config_path, attestation_dir=attestation_dir)
    config, shard, plan = setup.config, setup.shard, setup.config.plan
    sessions: list = []
    try:
        sessions = paramserver_sessions(setup, attestation_dir=attestation_dir)
        for session in sessions:
            _open_when_up(session, plan.worker_deadline_seconds)
        trainer = gradient_trainer(plan, threads=threads)
        _, layout = plan.initial_model()
        schedule = plan.schedule()
        data = WorkerData.of(shard.train, shard.positions["train"])
        if len(data.positions) and (data.positions[0] < 0 or data.positions[-1] >= plan.train_rows):
            raise IntegrityError(f"{config.data.name}: training positions outside the plan's")
        client = ShardedClient([s.call for s in sessions], plan.data_shard_map(), layout)
        per_epoch = schedule.steps_per_epoch
        deadline = plan.worker_deadline_seconds
        staleness = plan.max_staleness if plan.mode.value == "async" else 0
        applied = client.applied_step()
        if not 0 <= applied <= schedule.total_steps:
            raise IntegrityError(f"a parameter server reports step {applied}, outside the plan")
        first_step = applied + 1
        setup_seconds = time.perf_counter() - began
        timings = []
        epoch = max(1, -(-applied // per_epoch))
        epochs_done = 0
        recoveries = 0
        fresh = True  # just started: the first barrier waits for slower starters
        while True:
            last = epoch * per_epoch
            first = max(applied + 1, (epoch - 1) * per_epoch + 1)
            pulled, pushed = client.traffic.pulled, client.traffic.pushed
            started = time.perf_counter()
            rows = 0
            try:
                if first <= last:
                    run = run_worker_steps(
                        client,
                        trainer,
                        data,
                        StepLoopConfig(
                            schedule,
                            first,
                            last,
                            barrier_deadline_seconds=deadline,
                            # The other workers may still be starting (or restarting).
                            first_barrier_deadline_seconds=max(deadline, START_GRACE_SECONDS)
                            if fresh
                            else None,
                            barrier_in_pull=plan.mode.value == "sync",
                        ),
                    )
                    timings.extend(run.timings)
                    rows = run.rows
                    fresh = False
                train_seconds = time.perf_counter() - started
                # The model after the epoch: every worker's last step applied (async: pushed).
                client.await_step(last + staleness, deadline)
                arrays, _ = client.pull_model()
            except BarrierTimeoutError:
                raise  # a worker is missing: the job fails (docs/decisions.md)
            except (TransportError, StaleUpdateError, grpc.RpcError) as exc:
                # A parameter server restarted (from its sealed checkpoint) or is
                # restarting: wait for it, then replay from the step after its checkpoint.
                recoveries += 1
                if recoveries > MAX_RECOVERIES:
                    raise
                log.warning("%s: %s; waiting for the parameter servers", config.worker_id, exc)
                applied = _applied_when_up(client, deadline, plan.checkpoint_every)
                epoch = max(1, -(-applied // per_epoch))
                fresh = True
                continue
            validation = trainer.predict(arrays, shard.validation)
            test = trainer.predict(arrays, shard.test)
            del arrays
            evaluation = {
                "epoch": epoch,
                "steps": last,
                "train_seconds": train_seconds,
                "train_samples": rows,
                "validation": (validation, shard.validation.labels),
                "test": (test, shard.test.labels, shard.test.row_ids),
                "bytes_pushed": client.traffic.pushed - pushed,
                "bytes_pulled": client.traffic.pulled - pulled,
            }
            submit_evaluation(setup.session, wait_seconds=deadline, **evaluation)
            epochs_done += 1
            go_on, best = next_directive(
                setup.session,
                epoch,
                deadline_seconds=deadline * 4,
                # A restarted key broker lost the open epoch's scores: send them again.
                on_wait=lambda evaluation=evaluation: submit_evaluation(
                    setup.session, wait_seconds=deadline, **evaluation
                ),
            )
            log.info("%s: epoch %d evaluated (best so far %d)", config.worker_id, epoch, best)
            if on_epoch is not None:
                on_epoch(epoch, go_on)
            if not go_on or epoch >= plan.epochs:
                break
            applied = last
            epoch += 1
        client.close()
        phases = ("wait_seconds", "pull_seconds", "compute_seconds", "push_seconds")
        busy = [t for t in timings if t.rows]
        return WorkerResult(
            worker_id=config.worker_id,
            epochs=epochs_done,
            steps=len(timings),
            first_step=first_step,
            rows=sum(t.rows for t in timings),
            pulled_bytes=sum(t.pulled_bytes for t in timings),
            pushed_bytes=sum(t.pushed_bytes for t in timings),
            median_seconds={
                phase.removesuffix("_seconds"): float(np.median([getattr(t, phase) for t in busy]))
                if busy
                else 0.0
                for phase in (*phases, "total_seconds")
            },
            setup_seconds=setup_seconds,
        )
    finally:
        for session in sessions:
            session.close()
        setup.session.close()
