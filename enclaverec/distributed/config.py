"""A secure-distributed-training job's files, read into frozen configuration: the plan every
role trains by, the shard map, the key broker's measured configuration (``job.toml``), a
worker's (``worker.toml``), a parameter server's (``paramserver.toml``) and the owner's
(``owner.toml``, on the owner's machine, not measured).

Measurements are pinned in one direction only (a measured configuration cannot hold the
measurement of a configuration that holds its own):

- the key broker (``job.toml``) pins every worker by MRENCLAVE, one per worker id, so
  only the owner's worker configurations ever receive the data key;
- each parameter server pins the key broker by MRENCLAVE (so it hands the model to no
  other) and each worker id by its MRENCLAVE (``[workers]``: worker-0's enclave cannot
  enroll as worker-1);
- workers pin the key broker by signer and role, and each parameter server by the
  MRENCLAVE the key broker gives them;
- the owner pins the key broker by MRENCLAVE and, in its signed submission, tells it each
  parameter server's MRENCLAVE (``init`` computes them; they cannot be in ``job.toml``,
  whose measurement they contain).

So the owner's pins cover the whole job: every role's measurement is fixed by the owner,
and each measured configuration holds its plan, data and peers.

Relative paths in a file are relative to the file's folder.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enclaverec.arrays import Arrays, ModelLayout
from enclaverec.config_tables import check_keys, get, table
from enclaverec.data.schema import FeatureSpec
from enclaverec.errors import ConfigError
from enclaverec.files import read_toml
from enclaverec.paramservice.shards import ShardMap as DataShardMap
from enclaverec.schedule import StepSchedule
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.policy import PolicySpec
from enclaverec.training import ModelKind, initial_model

FORMAT_VERSION = 1
JOB_FILE = "job.toml"
WORKER_FILE = "worker.toml"
PARAMSERVER_FILE = "paramserver.toml"
OWNER_FILE = "owner.toml"
MAX_WORKERS = 64
MAX_PARAMSERVERS = 16
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NUMBER = (int, float)


def worker_id(index: int) -> str:
    return f"worker-{index}"


def paramserver_id(index: int) -> str:
    return f"ps-{index}"


class TrainingMode(enum.Enum):
    """Synchronous: a barrier per step, every worker's gradients combined and applied once
    (the update of one process with the global batch). Asynchronous: each push is applied
    when it arrives, computed from parameters at most ``max_staleness`` steps old."""

    SYNC = "sync"
    ASYNC = "async"


def _hex_digest(value: str, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise ConfigError(f"{what} must be 64 lower-case hex digits")
    return bytes.fromhex(value)


# --- the shard map ---------------------------------------------------------------------


@dataclass(frozen=True)
class ShardMap:
    """Which servers hold the model: embedding rows striped over the P parameter servers
    (the data plane's ``paramservice`` shard map decides which row lives where), every
    dense parameter on ``dense_shard``. The ids are the members the key broker pins."""

    paramservers: tuple[str, ...]
    dense_shard: str

    def __post_init__(self) -> None:
        if not 1 <= len(self.paramservers) <= MAX_PARAMSERVERS:
            raise ConfigError(f"a job has 1 to {MAX_PARAMSERVERS} parameter servers")
        if len(set(self.paramservers)) != len(self.paramservers):
            raise ConfigError("parameter server ids must be distinct")
        if self.dense_shard not in self.paramservers:
            raise ConfigError(f"the dense shard {self.dense_shard!r} is not a parameter server")

    def to_toml(self) -> dict[str, Any]:
        return {
            "rows": "striped",
            "paramservers": list(self.paramservers),
            "dense_shard": self.dense_shard,
        }

    @classmethod
    def from_toml(cls, data: Mapping[str, Any], where: str) -> ShardMap:
        check_keys(data, {"rows", "paramservers", "dense_shard"}, where)
        if get(data, "rows", str, where) != "striped":
            raise ConfigError(f"{where}: the only row rule is striped")
        servers = get(data, "paramservers", list, where)
        if not all(isinstance(item, str) for item in servers):
            raise ConfigError(f"{where}: paramservers must be a list of ids")
        return cls(tuple(servers), get(data, "dense_shard", str, where))


# --- the plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DistributedPlan:
    """What every worker and parameter server runs; identical in every role's file.

    ``batch_size`` is the global batch (all workers together), as in ``train``; epochs,
    early-stopping patience, optimizer and seed are ``train``'s too.
    """

    model: ModelKind
    preset: str
    optimizer: str
    dataset: str
    features: FeatureSpec
    seed: int
    train_rows: int
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int | None
    mode: TrainingMode
    max_staleness: int
    checkpoint_every: int
    worker_deadline_seconds: float
    workers: tuple[str, ...]
    shard_map: ShardMap
    hashing: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.workers) <= MAX_WORKERS:
            raise ConfigError(f"a job has 1 to {MAX_WORKERS} workers")
        if len(set(self.workers)) != len(self.workers):
            raise ConfigError("worker ids must be distinct")
        for name in ("train_rows", "epochs", "batch_size", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be positive, got {self.patience}")
        if self.max_staleness < 0:
            raise ConfigError(f"max_staleness must not be negative, got {self.max_staleness}")
        for name in ("learning_rate", "worker_deadline_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be positive and finite, got {value}")
        if self.optimizer not in ("sgd", "adagrad"):
            raise ConfigError(f"optimizer must be sgd or adagrad, got {self.optimizer!r}")

    @property
    def paramservers(self) -> tuple[str, ...]:
        return self.shard_map.paramservers

    def data_shard_map(self) -> DataShardMap:
        """The data plane's shard map (shard indices) of this plan's (member ids)."""
        servers = self.shard_map.paramservers
        return DataShardMap(len(servers), servers.index(self.shard_map.dense_shard))

    def schedule(self) -> StepSchedule:
        """The global batches of every step (``train``'s seeded permutation per epoch)."""
        return StepSchedule(self.train_rows, self.batch_size, self.seed, self.epochs)

    def initial_model(self) -> tuple[Arrays, ModelLayout]:
        """The initial model (numpy, from the seed): what the parameter servers start from."""
        return initial_model(self.model, self.preset, self.features, self.seed)

    def to_toml(self) -> dict[str, Any]:
        return {
            "model": self.model.value,
            "preset": self.preset,
            "optimizer": self.optimizer,
            "dataset": self.dataset,
            "seed": self.seed,
            "train_rows": self.train_rows,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "patience": self.patience or 0,
            "mode": self.mode.value,
            "max_staleness": self.max_staleness,
            "checkpoint_every": self.checkpoint_every,
            "worker_deadline_seconds": self.worker_deadline_seconds,
            "workers": list(self.workers),
            "shards": self.shard_map.to_toml(),
            "features": self.features.to_dict(),
            **({"hashing": dict(self.hashing)} if self.hashing is not None else {}),
        }

    @classmethod
    def from_toml(cls, data: Mapping[str, Any], *, where: str = "[plan]") -> DistributedPlan:
        known = {
            "model", "preset", "optimizer", "dataset", "seed", "train_rows", "epochs", "batch_size",
            "learning_rate", "patience", "mode", "max_staleness", "checkpoint_every",
            "worker_deadline_seconds", "workers", "shards", "features", "hashing",
        }  # fmt: skip
        check_keys(data, known, where)
        try:
            model = ModelKind(get(data, "model", str, where))
            mode = TrainingMode(get(data, "mode", str, where, "sync"))
            features = FeatureSpec.from_dict(table(data, "features", where))
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        workers = get(data, "workers", list, where)
        if not all(isinstance(item, str) for item in workers):
            raise ConfigError(f"{where}: workers must be a list of ids")
        patience = get(data, "patience", int, where, 0)
        return cls(
            model=model,
            preset=get(data, "preset", str, where),
            optimizer=get(data, "optimizer", str, where),
            dataset=get(data, "dataset", str, where),
            features=features,
            seed=get(data, "seed", int, where),
            train_rows=get(data, "train_rows", int, where),
            epochs=get(data, "epochs", int, where),
            batch_size=get(data, "batch_size", int, where),
            learning_rate=float(get(data, "learning_rate", _NUMBER, where)),
            patience=patience if patience > 0 else None,
            mode=mode,
            max_staleness=get(data, "max_staleness", int, where, 0),
            checkpoint_every=get(data, "checkpoint_every", int, where, 50),
            worker_deadline_seconds=float(
                get(data, "worker_deadline_seconds", _NUMBER, where, 60.0)
            ),
            workers=tuple(workers),
            shard_map=ShardMap.from_toml(table(data, "shards", where), f"{where}.shards"),
            hashing=get(data, "hashing", dict, where, None),
        )


# --- addresses and shared tables --------------------------------------------------------


@dataclass(frozen=True)
class Address:
    """A server's host, application port and enrollment port (None with ``--tee none``)."""

    host: str
    port: int
    enrollment_port: int | None

    def to_toml(self) -> dict[str, Any]:
        value: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.enrollment_port is not None:
            value["enrollment_port"] = self.enrollment_port
        return value

    @classmethod
    def from_toml(cls, data: Mapping[str, Any], where: str) -> Address:
        check_keys(data, {"host", "port", "enrollment_port"}, where)
        return cls(
            get(data, "host", str, where),
            get(data, "port", int, where),
            get(data, "enrollment_port", int, where, None),
        )


def _header(
    data: Mapping[str, Any], name: str, known: set[str], where: str
) -> tuple[dict[str, Any], TEEKind]:
    header = table(data, name, where)
    check_keys(header, known | {"format", "tee"}, f"{where} [{name}]")
    if header.get("format") != FORMAT_VERSION:
        raise ConfigError(f"{where}: format {header.get('format')!r} is not {FORMAT_VERSION}")
    try:
        tee = TEEKind(get(header, "tee", str, where))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return header, tee


def _policy(data: Mapping[str, Any], name: str, where: str) -> PolicySpec | None:
    value = table(data, name, where, required=False)
    return PolicySpec.from_toml(value, source=f"{where} [{name}]") if value else None


def _require_pin(tee: TEEKind, policy: PolicySpec | None, what: str, where: str) -> None:
    if tee is not TEEKind.NONE and (policy is None or not policy.identity_checked):
        raise ConfigError(
            f"{where}: [{what}] must pin the enclave (mrenclave or mrsigner); without it "
            "any enclave could take its place"
        )


def _relative(base: Path, value: str | None) -> Path | None:
    return (base / value) if value is not None else None


# --- the key broker's measured configuration --------------------------------------------


@dataclass(frozen=True)
class MemberPin:
    """A worker or parameter server as the key broker knows it: its id and, with an
    enclave TEE, the exact MRENCLAVE that id must prove (None when the job pins members by
    signer only, e.g. Gramine without per-member measurements)."""

    member_id: str
    role: str
    mrenclave: bytes | None


@dataclass(frozen=True)
class JobConfig:
    """``job.toml``: the key broker's measured configuration."""

    name: str
    tee: TEEKind
    simulation_dir: Path | None
    plan: DistributedPlan
    owner_public_key: str = field(repr=False)
    members: Mapping[str, MemberPin]
    worker_policy: PolicySpec | None
    paramserver_policy: PolicySpec | None
    dataset_id: bytes
    test_split_sha256: str
    listen: Address
    paramserver_addresses: Mapping[str, Address]
    source: Path
    raw: bytes = field(repr=False)
    pccs_url: str | None = None

    def __post_init__(self) -> None:
        expected = {*self.plan.workers, *self.plan.paramservers}
        if set(self.members) != expected:
            raise ConfigError(
                f"{self.source}: [workers]/[paramservers] must list exactly the plan's members"
            )
        if set(self.paramserver_addresses) != set(self.plan.paramservers):
            raise ConfigError(f"{self.source}: every parameter server needs an address")
        _require_pin(self.tee, self.worker_policy, "worker_policy", str(self.source))
        _require_pin(self.tee, self.paramserver_policy, "paramserver_policy", str(self.source))
        if any(pin.role == "paramserver" and pin.mrenclave for pin in self.members.values()):
            raise ConfigError(f"{self.source}: parameter servers are pinned by the owner")
        if self.tee is TEEKind.SIMULATED:
            if self.simulation_dir is None:
                raise ConfigError(f"{self.source}: a simulated TEE needs [job] simulation")
            missing = [
                pin.member_id
                for pin in self.members.values()
                if pin.role == "worker" and pin.mrenclave is None
            ]
            if missing:
                # The simulated TEE always knows every measurement: pin each one.
                raise ConfigError(f"{self.source}: no mrenclave for {', '.join(missing)}")

    @property
    def workers(self) -> tuple[str, ...]:
        return self.plan.workers

    @property
    def paramservers(self) -> tuple[str, ...]:
        return self.plan.paramservers

    @classmethod
    def load(cls, path: Path) -> JobConfig:
        data, raw = read_toml(path)
        where = str(path)
        check_keys(
            data,
            {"job", "keybroker", "owner", "plan", "data", "workers", "paramservers",
             "worker_policy", "paramserver_policy"},
            where,
        )  # fmt: skip
        job, tee = _header(data, "job", {"name", "simulation", "pccs_url"}, where)
        owner = table(data, "owner", where)
        check_keys(owner, {"public_key"}, f"{where} [owner]")
        dataset = table(data, "data", where)
        check_keys(dataset, {"dataset_id", "test_split_sha256"}, f"{where} [data]")
        dataset_id = get(dataset, "dataset_id", str, where)
        if not re.fullmatch(r"[0-9a-f]{32}", dataset_id):
            raise ConfigError(f"{where} [data]: dataset_id must be 32 lower-case hex digits")
        members: dict[str, MemberPin] = {}
        addresses: dict[str, Address] = {}
        for role, key in (("worker", "workers"), ("paramserver", "paramservers")):
            for member, entry in table(data, key, where).items():
                if not isinstance(entry, dict):
                    raise ConfigError(f"{where}: [{key}.{member}] must be a table")
                known = {"host", "port"} if role == "paramserver" else {"mrenclave"}
                check_keys(entry, known, f"{where} [{key}.{member}]")
                value = get(entry, "mrenclave", str, where, None)
                members[member] = MemberPin(
                    member,
                    role,
                    _hex_digest(value, f"[{key}.{member}] mrenclave") if value else None,
                )
                if role == "paramserver":
                    addresses[member] = Address(
                        get(entry, "host", str, where), get(entry, "port", int, where), None
                    )
        simulation = get(job, "simulation", str, where, None)
        return cls(
            name=get(job, "name", str, where),
            tee=tee,
            simulation_dir=_relative(path.parent, simulation),
            plan=DistributedPlan.from_toml(table(data, "plan", where), where=f"{where} [plan]"),
            owner_public_key=get(owner, "public_key", str, where),
            members=members,
            worker_policy=_policy(data, "worker_policy", where),
            paramserver_policy=_policy(data, "paramserver_policy", where),
            dataset_id=bytes.fromhex(dataset_id),
            test_split_sha256=get(dataset, "test_split_sha256", str, where),
            listen=Address.from_toml(table(data, "keybroker", where), f"{where} [keybroker]"),
            paramserver_addresses=addresses,
            source=path,
            raw=raw,
            pccs_url=get(job, "pccs_url", str, where, None),
        )


def job_toml(
    *,
    name: str,
    tee: TEEKind,
    simulation: str | None,
    plan: DistributedPlan,
    owner_public_key: str,
    members: Mapping[str, MemberPin],
    worker_policy: PolicySpec | None,
    paramserver_policy: PolicySpec | None,
    dataset_id: bytes,
    test_split_sha256: str,
    listen: Address,
    paramserver_addresses: Mapping[str, Address],
    pccs_url: str | None = None,
) -> dict[str, Any]:
    job: dict[str, Any] = {"name": name, "format": FORMAT_VERSION, "tee": tee.value}
    if simulation is not None:
        job["simulation"] = simulation
    if pccs_url is not None:
        job["pccs_url"] = pccs_url
    workers: dict[str, Any] = {}
    servers: dict[str, Any] = {}
    for member, pin in members.items():
        entry: dict[str, Any] = {}
        if pin.mrenclave is not None:
            entry["mrenclave"] = pin.mrenclave.hex()
        if pin.role == "paramserver":
            address = paramserver_addresses[member]
            entry.update(host=address.host, port=address.port)
            servers[member] = entry
        else:
            workers[member] = entry
    document: dict[str, Any] = {
        "job": job,
        "keybroker": listen.to_toml(),
        "owner": {"public_key": owner_public_key},
        "data": {"dataset_id": dataset_id.hex(), "test_split_sha256": test_split_sha256},
        "plan": plan.to_toml(),
        "workers": workers,
        "paramservers": servers,
    }
    for key, policy in (
        ("worker_policy", worker_policy),
        ("paramserver_policy", paramserver_policy),
    ):
        if policy is not None:
            document[key] = policy.to_toml()
    return document


# --- a worker's and a parameter server's measured configuration --------------------------


@dataclass(frozen=True)
class WorkerConfig:
    """``worker.toml``: one worker's identity, shard, key broker and parameter servers."""

    worker_id: str
    job: str
    tee: TEEKind
    simulation_dir: Path | None
    data: Path
    shard_sha256: bytes
    plan: DistributedPlan
    keybroker: Address
    keybroker_policy: PolicySpec | None
    paramservers: Mapping[str, Address]
    source: Path
    raw: bytes = field(repr=False)
    pccs_url: str | None = None
    paramserver_signer_policy: PolicySpec | None = None
    """What every parameter server's evidence must also meet (signer and role); each
    server's exact MRENCLAVE comes from the key broker, as the owner submitted it."""

    def __post_init__(self) -> None:
        where = str(self.source)
        if self.worker_id not in self.plan.workers:
            raise ConfigError(f"{where}: {self.worker_id} is not a worker of the plan")
        if set(self.paramservers) != set(self.plan.paramservers):
            raise ConfigError(f"{where}: [paramservers] must list the plan's parameter servers")
        _require_pin(self.tee, self.keybroker_policy, "keybroker_policy", where)
        _require_pin(self.tee, self.paramserver_signer_policy, "paramserver_policy", where)
        _check_enclave_addresses(self.tee, [self.keybroker, *self.paramservers.values()], where)
        if self.tee is TEEKind.SIMULATED and self.simulation_dir is None:
            raise ConfigError(f"{where}: a simulated TEE needs [worker] simulation")

    @classmethod
    def load(cls, path: Path) -> WorkerConfig:
        data, raw = read_toml(path)
        where = str(path)
        check_keys(
            data,
            {"worker", "keybroker", "keybroker_policy", "paramservers", "paramserver_policy",
             "plan"},
            where,
        )  # fmt: skip
        header, tee = _header(
            data,
            "worker",
            {"id", "job", "simulation", "data", "shard_sha256", "pccs_url"},
            where,
        )
        servers = {
            member: Address.from_toml(entry, f"{where} [paramservers.{member}]")
            for member, entry in table(data, "paramservers", where).items()
        }
        return cls(
            worker_id=get(header, "id", str, where),
            job=get(header, "job", str, where),
            tee=tee,
            simulation_dir=_relative(path.parent, get(header, "simulation", str, where, None)),
            data=path.parent / get(header, "data", str, where),
            shard_sha256=_hex_digest(get(header, "shard_sha256", str, where), "shard_sha256"),
            plan=DistributedPlan.from_toml(table(data, "plan", where), where=f"{where} [plan]"),
            keybroker=Address.from_toml(table(data, "keybroker", where), f"{where} [keybroker]"),
            keybroker_policy=_policy(data, "keybroker_policy", where),
            paramservers=servers,
            paramserver_signer_policy=_policy(data, "paramserver_policy", where),
            source=path,
            raw=raw,
            pccs_url=get(header, "pccs_url", str, where, None),
        )


def worker_toml(
    *,
    worker: str,
    job: str,
    tee: TEEKind,
    simulation: str | None,
    data: str,
    shard_sha256: bytes,
    plan: DistributedPlan,
    keybroker: Address,
    keybroker_policy: PolicySpec | None,
    paramservers: Mapping[str, Address],
    paramserver_policy: PolicySpec | None,
    pccs_url: str | None = None,
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "id": worker,
        "job": job,
        "format": FORMAT_VERSION,
        "tee": tee.value,
        "data": data,
        "shard_sha256": shard_sha256.hex(),
    }
    if simulation is not None:
        header["simulation"] = simulation
    if pccs_url is not None:
        header["pccs_url"] = pccs_url
    document: dict[str, Any] = {
        "worker": header,
        "keybroker": keybroker.to_toml(),
        "paramservers": {member: address.to_toml() for member, address in paramservers.items()},
        "plan": plan.to_toml(),
    }
    if keybroker_policy is not None:
        document["keybroker_policy"] = keybroker_policy.to_toml()
    if paramserver_policy is not None:
        document["paramserver_policy"] = paramserver_policy.to_toml()
    return document


@dataclass(frozen=True)
class ParamServerConfig:
    """``paramserver.toml``: one parameter server's identity, address and key broker."""

    paramserver_id: str
    job: str
    tee: TEEKind
    simulation_dir: Path | None
    plan: DistributedPlan
    listen: Address
    keybroker: Address
    keybroker_policy: PolicySpec | None
    worker_policy: PolicySpec | None
    source: Path
    raw: bytes = field(repr=False)
    pccs_url: str | None = None
    worker_mrenclaves: Mapping[str, bytes] = field(default_factory=dict)
    """The MRENCLAVE each worker id must enroll with (``[workers.<id>] mrenclave``); an id
    without one is accepted from any enclave of ``worker_policy`` (same code, several ids)."""

    def __post_init__(self) -> None:
        where = str(self.source)
        if self.paramserver_id not in self.plan.paramservers:
            raise ConfigError(f"{where}: {self.paramserver_id} is not a parameter server")
        _require_pin(self.tee, self.keybroker_policy, "keybroker_policy", where)
        _require_pin(self.tee, self.worker_policy, "worker_policy", where)
        if set(self.worker_mrenclaves) - set(self.plan.workers):
            raise ConfigError(f"{where}: [workers] names a worker the plan does not have")
        allowed = self.worker_policy.mrenclaves if self.worker_policy is not None else ()
        if allowed and not set(self.worker_mrenclaves.values()) <= set(allowed):
            raise ConfigError(f"{where}: a [workers] MRENCLAVE is not in [worker_policy]")
        _check_enclave_addresses(self.tee, [self.keybroker, self.listen], where)
        if self.tee is TEEKind.SIMULATED and self.simulation_dir is None:
            raise ConfigError(f"{where}: a simulated TEE needs [paramserver] simulation")

    @property
    def shard_index(self) -> int:
        return self.plan.paramservers.index(self.paramserver_id)

    @classmethod
    def load(cls, path: Path) -> ParamServerConfig:
        data, raw = read_toml(path)
        where = str(path)
        check_keys(
            data,
            {"paramserver", "listen", "keybroker", "keybroker_policy", "worker_policy", "plan",
             "workers"},
            where,
        )  # fmt: skip
        header, tee = _header(data, "paramserver", {"id", "job", "simulation", "pccs_url"}, where)
        return cls(
            paramserver_id=get(header, "id", str, where),
            job=get(header, "job", str, where),
            tee=tee,
            simulation_dir=_relative(path.parent, get(header, "simulation", str, where, None)),
            plan=DistributedPlan.from_toml(table(data, "plan", where), where=f"{where} [plan]"),
            listen=Address.from_toml(table(data, "listen", where), f"{where} [listen]"),
            keybroker=Address.from_toml(table(data, "keybroker", where), f"{where} [keybroker]"),
            keybroker_policy=_policy(data, "keybroker_policy", where),
            worker_policy=_policy(data, "worker_policy", where),
            source=path,
            raw=raw,
            pccs_url=get(header, "pccs_url", str, where, None),
            worker_mrenclaves=_member_mrenclaves(data, "workers", where),
        )


def _member_mrenclaves(data: Mapping[str, Any], key: str, where: str) -> dict[str, bytes]:
    """``[<key>.<member>] mrenclave = "<hex>"`` entries (the table is optional)."""
    pins = {}
    for member, entry in table(data, key, where, required=False).items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: [{key}.{member}] must be a table")
        check_keys(entry, {"mrenclave"}, f"{where} [{key}.{member}]")
        value = get(entry, "mrenclave", str, where)
        pins[member] = _hex_digest(value, f"[{key}.{member}] mrenclave")
    return pins


def paramserver_toml(
    *,
    paramserver: str,
    job: str,
    tee: TEEKind,
    simulation: str | None,
    plan: DistributedPlan,
    listen: Address,
    keybroker: Address,
    keybroker_policy: PolicySpec | None,
    worker_policy: PolicySpec | None,
    pccs_url: str | None = None,
    worker_mrenclaves: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "id": paramserver,
        "job": job,
        "format": FORMAT_VERSION,
        "tee": tee.value,
    }
    if simulation is not None:
        header["simulation"] = simulation
    if pccs_url is not None:
        header["pccs_url"] = pccs_url
    document: dict[str, Any] = {
        "paramserver": header,
        "listen": listen.to_toml(),
        "keybroker": keybroker.to_toml(),
        "plan": plan.to_toml(),
    }
    if keybroker_policy is not None:
        document["keybroker_policy"] = keybroker_policy.to_toml()
    if worker_policy is not None:
        document["worker_policy"] = worker_policy.to_toml()
    if worker_mrenclaves:
        document["workers"] = {
            member: {"mrenclave": value.hex()} for member, value in worker_mrenclaves.items()
        }
    return document


def _check_enclave_addresses(tee: TEEKind, addresses: list[Address], where: str) -> None:
    if tee is TEEKind.NONE:
        return
    if any(address.enrollment_port is None for address in addresses):
        raise ConfigError(f"{where}: attested servers need an enrollment_port")


# --- the owner's configuration (not measured: the owner runs no enclave) ---------------


@dataclass(frozen=True)
class OwnerConfig:
    """``owner.toml``: the owner's key, its shards, and the key broker it trusts."""

    job: str
    tee: TEEKind
    simulation_dir: Path | None
    identity_key: Path
    passphrase_file: Path | None
    shards: Path
    keybroker: Address
    keybroker_policy: PolicySpec | None
    source: Path
    pccs_url: str | None = None
    paramserver_mrenclaves: Mapping[str, bytes] = field(default_factory=dict)
    """Each parameter server's MRENCLAVE, submitted (signed) to the key broker."""

    def __post_init__(self) -> None:
        where = str(self.source)
        _require_pin(self.tee, self.keybroker_policy, "keybroker_policy", where)
        _check_enclave_addresses(self.tee, [self.keybroker], where)
        if self.tee is TEEKind.SIMULATED and self.simulation_dir is None:
            raise ConfigError(f"{where}: a simulated TEE needs [owner] simulation")

    @classmethod
    def load(cls, path: Path) -> OwnerConfig:
        data, _ = read_toml(path)
        where = str(path)
        check_keys(data, {"owner", "keybroker", "keybroker_policy", "paramservers"}, where)
        header, tee = _header(
            data,
            "owner",
            {"job", "simulation", "identity_key", "passphrase_file", "shards", "pccs_url"},
            where,
        )
        base = path.parent
        return cls(
            job=get(header, "job", str, where),
            tee=tee,
            simulation_dir=_relative(base, get(header, "simulation", str, where, None)),
            identity_key=base / get(header, "identity_key", str, where),
            passphrase_file=_relative(base, get(header, "passphrase_file", str, where, None)),
            shards=base / get(header, "shards", str, where),
            keybroker=Address.from_toml(table(data, "keybroker", where), f"{where} [keybroker]"),
            keybroker_policy=_policy(data, "keybroker_policy", where),
            source=path,
            pccs_url=get(header, "pccs_url", str, where, None),
            paramserver_mrenclaves={
                member: _hex_digest(get(entry, "mrenclave", str, where), f"[paramservers.{member}]")
                for member, entry in table(data, "paramservers", where, required=False).items()
            },
        )


def owner_toml(
    *,
    job: str,
    tee: TEEKind,
    simulation: str | None,
    identity_key: str,
    passphrase_file: str | None,
    shards: str,
    keybroker: Address,
    keybroker_policy: PolicySpec | None,
    paramserver_mrenclaves: Mapping[str, bytes],
    pccs_url: str | None = None,
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "job": job,
        "format": FORMAT_VERSION,
        "tee": tee.value,
        "identity_key": identity_key,
        "shards": shards,
    }
    for key, value in (
        ("simulation", simulation),
        ("passphrase_file", passphrase_file),
        ("pccs_url", pccs_url),
    ):
        if value is not None:
            header[key] = value
    document: dict[str, Any] = {"owner": header, "keybroker": keybroker.to_toml()}
    if paramserver_mrenclaves:
        document["paramservers"] = {
            member: {"mrenclave": value.hex()} for member, value in paramserver_mrenclaves.items()
        }
    if keybroker_policy is not None:
        document["keybroker_policy"] = keybroker_policy.to_toml()
    return document
