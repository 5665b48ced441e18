"""Helpers of the distributed integration tests: a tiny data set, jobs written by
``distributed init`` (simulated TEE), and the key broker run in a thread of the test
process, where its state can be inspected."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enclaverec.crypto import keys
from enclaverec.data.schema import DataSet, Examples, FeatureSpec
from enclaverec.data.shards import encrypt_shards
from enclaverec.data.split import split_examples
from enclaverec.distributed.config import (
    DistributedPlan,
    ParamServerConfig,
    ShardMap,
    TrainingMode,
    WorkerConfig,
    paramserver_id,
    worker_id,
)
from enclaverec.distributed.keybroker import KeyBroker
from enclaverec.distributed.members import keybroker_session
from enclaverec.distributed.owner import OwnerClient
from enclaverec.distributed.setup import JobFiles, JobPorts, init_job, make_owner_key
from enclaverec.roles.keybroker import make_keybroker
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.policy import PolicySpec
from enclaverec.training import ModelKind
from enclaverec.transport.endpoints import free_ports
from enclaverec.transport.session import Session

SEED = 0


def tiny_dataset(rows: int = 1200, seed: int = 7) -> DataSet:
    """Random rows with a learnable label, split by ``SEED`` as every mode splits."""
    rng = np.random.default_rng(seed)
    spec = FeatureSpec(("d0", "d1"), ("c0", "c1"), (40, 40))
    dense = rng.normal(size=(rows, 2)).astype(np.float32)
    categorical = rng.integers(0, 40, size=(rows, 2)).astype(np.int32)
    logits = 1.5 * dense[:, 0] + (categorical[:, 0] % 3 == 0) - 0.5
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    examples = Examples(dense, categorical, labels, np.arange(rows, dtype=np.int64))
    train, validation, test = split_examples(examples, seed=SEED)
    return DataSet("synthetic", spec, train, validation, test)


def logreg_plan(
    data: DataSet,
    *,
    workers: int = 2,
    paramservers: int = 1,
    epochs: int = 3,
    worker_deadline_seconds: float = 30.0,
    patience: int | None = 2,
) -> DistributedPlan:
    return DistributedPlan(
        model=ModelKind.LOGREG,
        preset="logreg",
        optimizer="sgd",
        dataset=data.name,
        features=data.spec,
        seed=SEED,
        train_rows=len(data.train),
        epochs=epochs,
        batch_size=64,
        learning_rate=0.5,
        patience=patience,
        mode=TrainingMode.SYNC,
        max_staleness=0,
        checkpoint_every=10,
        worker_deadline_seconds=worker_deadline_seconds,
        workers=tuple(worker_id(i) for i in range(workers)),
        shard_map=ShardMap(tuple(paramserver_id(i) for i in range(paramservers)), "ps-0"),
    )


@dataclass(frozen=True)
class Job:
    root: Path
    files: JobFiles
    data: DataSet
    owner_public_key: Path
    shards: Path


def make_job(
    folder: Path,
    *,
    workers: int = 2,
    paramservers: int = 1,
    tee: TEEKind = TEEKind.SIMULATED,
    name: str = "job",
    data: DataSet | None = None,
    epochs: int = 3,
    worker_deadline_seconds: float = 30.0,
    patience: int | None = 2,
) -> Job:
    """Owner key, encrypted shards and a job's files, under ``folder``."""
    data = data or tiny_dataset()
    owner_public = make_owner_key(folder / "owner-key")
    shards = folder / "shards"
    encrypt_shards(
        data,
        workers=workers,
        seed=SEED,
        owner=keys.load_public_key(owner_public),
        output_dir=shards,
        dataset_name=name,
    )
    ports = free_ports(2 + 2 * paramservers)
    files = init_job(
        folder / "job",
        plan=logreg_plan(
            data,
            workers=workers,
            paramservers=paramservers,
            epochs=epochs,
            worker_deadline_seconds=worker_deadline_seconds,
            patience=patience,
        ),
        shards=shards,
        tee=tee,
        ports=JobPorts(
            "127.0.0.1",
            (ports[0], ports[1]),
            tuple((ports[2 + 2 * i], ports[3 + 2 * i]) for i in range(paramservers)),
        ),
        owner_public_key=owner_public,
        name=name,
    )
    return Job(folder / "job", files, data, owner_public, shards)


@contextlib.contextmanager
def running_keybroker(job: Job, state_dir: Path | None = None) -> Iterator[KeyBroker]:
    """The job's key broker in this process (a fresh state when ``state_dir`` is given)."""
    broker = make_keybroker(job.files.job_toml, state_dir=state_dir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop(None)


@contextlib.contextmanager
def owner(job: Job) -> Iterator[OwnerClient]:
    client = OwnerClient.load(job.files.owner_config)
    try:
        yield client
    finally:
        client.close()


def member_session(
    role: str,
    enclave: WorkerConfig | ParamServerConfig,
    member: str,
    *,
    at: WorkerConfig | ParamServerConfig | None = None,
    simulation_dir: Path | None = None,
    keybroker_policy: PolicySpec | None = None,
) -> Session:
    """A key-broker session of the enclave measured from ``enclave`` (a member's
    configuration) claiming the id ``member``, at the key broker ``at`` names (default:
    its own), trusting it by ``keybroker_policy`` (default: that configuration's)."""
    target = at or enclave
    return keybroker_session(
        role=role,
        member_id=member,
        tee=enclave.tee,
        raw_config=enclave.raw,
        simulation_dir=simulation_dir or enclave.simulation_dir,
        keybroker=target.keybroker,
        keybroker_policy=keybroker_policy or target.keybroker_policy,
        pccs_url=None,
    )
