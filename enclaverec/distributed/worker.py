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

import numpy as np

from enclaverec.data import encrypted
from enclaverec.data.shards import WorkerShard, load_shard
from enclaverec.distributed.config import WorkerConfig
from enclaverec.distributed.members import call_keybroker, keybroker_session
from enclaverec.errors import IntegrityError, TrainingError
from enclaverec.transport import tensors
from enclaverec.transport.proto import keybroker_pb2, keybroker_pb2_grpc
from enclaverec.transport.session import Session

log = logging.getLogger(__name__)

DIRECTIVE_POLL_SECONDS = 10.0


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
    )


def next_directive(session: Session, epoch: int, *, deadline_seconds: float) -> tuple[bool, int]:
    """After ``epoch``: (continue?, best epoch so far), waiting while the epoch is open."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        reply = call_keybroker(
            session,
            lambda channel: keybroker_pb2_grpc.KeyBrokerStub(channel).GetDirective(
                keybroker_pb2.DirectiveRequest(epoch=epoch, wait_seconds=DIRECTIVE_POLL_SECONDS),
                timeout=DIRECTIVE_POLL_SECONDS + 30,
            ),
            "the next directive",
        )
        if reply.kind == keybroker_pb2.CONTINUE:
            return True, reply.best_epoch
        if reply.kind == keybroker_pb2.STOP:
            return False, reply.best_epoch
        if time.monotonic() > deadline:
            raise TrainingError(f"epoch {epoch} did not close within {deadline_seconds:.0f} s")
