"""``distributed init``: a secure-distributed-training job's files, one folder per role.

```
DIR/
  job.toml                   the key broker's measured configuration: plan, shard map,
                             owner's public key, every member's pinned measurement
  keybroker/                 the key broker's state directory (sealed keys and state,
                             audit log)
  worker-<i>/worker.toml     a worker's measured configuration (its shard, the key broker
                             and parameter servers it trusts), and its state directory
  ps-<j>/paramserver.toml    a parameter server's measured configuration
  owner/owner.toml           the owner's configuration (not measured); with its key pair
                             when init made one
  simulation/                the simulation deployment (simulated TEE only)
```

The encrypted shards (``data encrypt --shards W``) stay where they are; each worker's
configuration names its shard by relative path and pins its header digest.

Measurements are computed in dependency order (``distributed.config`` explains the
direction of pins): workers, then the key broker (which pins them), then the parameter
servers (which pin the key broker and the workers), then the owner's file (which pins the
key broker and lists the servers' measurements for its signed submission).

Security: with a simulated TEE every folder is on one machine and the simulation's
private keys are in ``simulation/keys``: a laptop set-up. For a real job, each folder is
copied to its machine, and Gramine measurements are read with
``gramine-sgx-sigstruct-view`` (docs/distributed.md).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from enclaverec.crypto import keys
from enclaverec.data.shards import ShardManifest
from enclaverec.distributed.config import (
    JOB_FILE,
    OWNER_FILE,
    PARAMSERVER_FILE,
    WORKER_FILE,
    Address,
    DistributedPlan,
    MemberPin,
    job_toml,
    owner_toml,
    paramserver_toml,
    worker_toml,
)
from enclaverec.errors import ConfigError, UsageError
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.measurement import ROLE_ISV_PROD_IDS, measured_inputs
from enclaverec.tee.policy import PolicySpec

log = logging.getLogger(__name__)

KEYBROKER_DIR = "keybroker"
OWNER_DIR = "owner"
SIMULATION_DIR = "simulation"
OWNER_KEY_FILE = "owner.key"


@dataclass(frozen=True)
class JobPorts:
    """Where each server listens (written into the measured configurations: the host
    cannot move an enclave to another address by a flag)."""

    host: str
    keybroker: tuple[int, int]
    paramservers: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class JobFiles:
    """Where ``init`` put everything, and the key broker's (simulated) measurement."""

    root: Path
    job_toml: Path
    keybroker_dir: Path
    worker_configs: tuple[Path, ...]
    paramserver_configs: tuple[Path, ...]
    owner_config: Path
    simulation_dir: Path | None
    keybroker_mrenclave: bytes | None
    member_mrenclaves: Mapping[str, bytes]


def _write_toml(path: Path, document: Mapping[str, object]) -> bytes:
    data = tomli_w.dumps(document).encode()
    path.write_bytes(data)
    return data


def default_ports(host: str, paramservers: int, base: int = 50061) -> JobPorts:
    """Consecutive ports from ``base``: the key broker's two, then two per server."""
    return JobPorts(
        host=host,
        keybroker=(base, base + 1),
        paramservers=tuple((base + 2 + 2 * i, base + 3 + 2 * i) for i in range(paramservers)),
    )


def _new_owner_key(folder: Path) -> str:
    """An owner key pair made by init (a laptop set-up); the passphrase goes to a 0600
    file beside it, never to argv or the environment."""
    passphrase = secrets.token_urlsafe(24)
    fd = os.open(folder / "owner.pass", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(passphrase + "\n")
    private = keys.generate_private_key()
    keys.save_key_pair(private, folder / OWNER_KEY_FILE, passphrase.encode())
    return keys.public_key_pem(private.public_key()).decode()


def init_job(
    root: Path,
    *,
    plan: DistributedPlan,
    shards: Path,
    tee: TEEKind,
    ports: JobPorts,
    owner_public_key: Path | None = None,
    owner_private_key: Path | None = None,
    owner_passphrase_file: Path | None = None,
    enclave_mrsigner: bytes | None = None,
    keybroker_mrenclave: bytes | None = None,
    name: str = "job",
    pccs_url: str | None = None,
) -> JobFiles:
    """Write a job's files under ``root`` (which must not exist or be empty).

    ``shards`` is the folder ``data encrypt --shards`` wrote; its manifest must have one
    shard per worker of ``plan``, encrypted to the owner's key. Without
    ``owner_public_key`` init makes the owner's key pair in ``owner/`` (and the shards
    must then have been encrypted to it: :func:`make_owner_key` comes first).
    """
    if root.exists() and any(root.iterdir()):
        raise UsageError(f"refusing to write into the non-empty folder {root}")
    manifest = ShardManifest.load(shards)
    if manifest.workers != len(plan.workers):
        raise UsageError(
            f"{shards} holds {manifest.workers} shard(s) for {len(plan.workers)} worker(s)"
        )
    if len(ports.paramservers) != len(plan.paramservers):
        raise UsageError("one pair of ports per parameter server is needed")
    if tee is TEEKind.GRAMINE and enclave_mrsigner is None:
        raise ConfigError(
            "a Gramine job needs the enclaves' signer (--mrsigner, from "
            "gramine-sgx-sigstruct-view): workers and servers pin the key broker by it"
        )
    existed = root.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:
        return _write_job(
            root,
            plan=plan,
            manifest=manifest,
            shards=shards,
            tee=tee,
            ports=ports,
            owner_public_key=owner_public_key,
            owner_private_key=owner_private_key,
            owner_passphrase_file=owner_passphrase_file,
            enclave_mrsigner=enclave_mrsigner,
            keybroker_mrenclave=keybroker_mrenclave,
            name=name,
            pccs_url=pccs_url,
        )
    except BaseException:
        # Nothing half-written: the same command can simply be run again.
        for child in list(root.iterdir()):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        if not existed:
            root.rmdir()
        raise


def make_owner_key(folder: Path) -> Path:
    """Make an owner key pair in ``folder`` (created, 0700) for a laptop set-up; returns
    the public key's path. The private key is ``folder/owner.key`` (passphrase in
    ``owner.pass``)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    _new_owner_key(folder)
    return folder / (OWNER_KEY_FILE + keys.PUBLIC_SUFFIX)


def _write_job(
    root: Path,
    *,
    plan: DistributedPlan,
    manifest: ShardManifest,
    shards: Path,
    tee: TEEKind,
    ports: JobPorts,
    owner_public_key: Path | None,
    owner_private_key: Path | None,
    owner_passphrase_file: Path | None,
    enclave_mrsigner: bytes | None,
    keybroker_mrenclave: bytes | None,
    name: str,
    pccs_url: str | None,
) -> JobFiles:
    (root / KEYBROKER_DIR).mkdir(mode=0o700)
    owner_dir = root / OWNER_DIR
    owner_dir.mkdir(mode=0o700)
    if owner_public_key is None:
        raise UsageError("the owner's public key is needed (the shards are encrypted to it)")
    owner_key = keys.load_public_key(owner_public_key)
    if keys.fingerprint(owner_key) != manifest.owner_fingerprint:
        raise UsageError(
            f"the shards in {shards} are encrypted to owner key {manifest.owner_fingerprint}, "
            f"not to {keys.fingerprint(owner_key)}"
        )
    owner_pem = keys.public_key_pem(owner_key).decode()

    simulation_dir = None
    signer = enclave_mrsigner
    sim_roots: frozenset[str] = frozenset()
    if tee is TEEKind.SIMULATED:
        from enclaverec.tee.simulation_pki import SimulationPKI

        pki = SimulationPKI.create(root / SIMULATION_DIR)
        simulation_dir = pki.folder
        signer = pki.mr_signer
        sim_roots = frozenset({pki.root_sha256})

    def policy(role: str, mrenclaves: frozenset[bytes] = frozenset()) -> PolicySpec | None:
        if tee is TEEKind.NONE:
            return None
        return PolicySpec(
            mrenclaves=mrenclaves,
            mrsigners=frozenset() if mrenclaves else frozenset({signer}),  # type: ignore[arg-type]
            isv_prod_id=ROLE_ISV_PROD_IDS[role],
            unsafe_allow_simulation=bool(sim_roots),
            simulation_roots=sim_roots,
        )

    def relative_to(folder: Path, target: Path) -> str:
        return os.path.relpath(target.resolve(), folder.resolve())

    enclave = tee is not TEEKind.NONE
    keybroker = (
        Address(ports.host, *ports.keybroker)
        if enclave
        else Address(ports.host, ports.keybroker[0], None)
    )
    server_addresses = {
        member: Address(ports.host, app, enroll if enclave else None)
        for member, (app, enroll) in zip(plan.paramservers, ports.paramservers, strict=True)
    }
    simulation_ref = f"../{SIMULATION_DIR}" if simulation_dir else None
    keybroker_by_signer = policy("keybroker")
    measured: dict[str, bytes] = {}

    # 1. Workers: they pin the key broker by signer and role (the key broker's
    #    configuration holds their measurements), the servers by signer here and by
    #    MRENCLAVE as the key broker tells them.
    worker_configs = []
    for index, member in enumerate(plan.workers):
        folder = root / member
        folder.mkdir(mode=0o700)
        shard = manifest.shards[index]
        path = folder / WORKER_FILE
        raw = _write_toml(
            path,
            worker_toml(
                worker=member,
                job=name,
                tee=tee,
                simulation=simulation_ref,
                data=relative_to(folder, Path(shards) / shard.file),
                shard_sha256=bytes.fromhex(shard.header_sha256),
                plan=plan,
                keybroker=keybroker,
                keybroker_policy=keybroker_by_signer,
                paramservers=server_addresses,
                paramserver_policy=policy("paramserver"),
                pccs_url=pccs_url,
            ),
        )
        worker_configs.append(path)
        if tee is TEEKind.SIMULATED:
            measured[member] = measured_inputs("worker", raw).mrenclave()

    # 2. The key broker pins every worker, one measurement per id.
    worker_pins = frozenset(measured.values())
    members = {
        member: MemberPin(member, "worker", measured.get(member)) for member in plan.workers
    } | {member: MemberPin(member, "paramserver", None) for member in plan.paramservers}
    job_raw = _write_toml(
        root / JOB_FILE,
        job_toml(
            name=name,
            tee=tee,
            simulation=SIMULATION_DIR if simulation_dir else None,
            plan=plan,
            owner_public_key=owner_pem,
            members=members,
            worker_policy=policy("worker", worker_pins),
            paramserver_policy=policy("paramserver"),
            dataset_id=bytes.fromhex(manifest.dataset_id),
            test_split_sha256=manifest.test_split_sha256,
            listen=keybroker,
            paramserver_addresses=server_addresses,
            pccs_url=pccs_url,
        ),
    )
    if tee is TEEKind.SIMULATED:
        keybroker_mrenclave = measured_inputs("keybroker", job_raw).mrenclave()
    keybroker_exact = policy(
        "keybroker", frozenset({keybroker_mrenclave}) if keybroker_mrenclave else frozenset()
    )

    # 3. Parameter servers pin the key broker exactly (they hand the model to it and no
    #    other) and each worker id by its measurement.
    ps_configs = []
    server_pins: dict[str, bytes] = {}
    for member in plan.paramservers:
        folder = root / member
        folder.mkdir(mode=0o700)
        path = folder / PARAMSERVER_FILE
        raw = _write_toml(
            path,
            paramserver_toml(
                paramserver=member,
                job=name,
                tee=tee,
                simulation=simulation_ref,
                plan=plan,
                listen=server_addresses[member],
                keybroker=keybroker,
                keybroker_policy=keybroker_exact,
                worker_policy=policy("worker", worker_pins),
                pccs_url=pccs_url,
                worker_mrenclaves={member: measured[member] for member in plan.workers}
                if tee is TEEKind.SIMULATED
                else None,
            ),
        )
        ps_configs.append(path)
        if tee is TEEKind.SIMULATED:
            server_pins[member] = measured_inputs("paramserver", raw).mrenclave()
    measured.update(server_pins)

    # 4. The owner pins the key broker exactly and submits the servers' measurements.
    owner_policy = keybroker_exact
    private = owner_private_key or owner_public_key.with_name(
        owner_public_key.name.removesuffix(keys.PUBLIC_SUFFIX)
    )
    passphrase = owner_passphrase_file
    if passphrase is None and (private.parent / "owner.pass").exists():
        passphrase = private.parent / "owner.pass"
    owner_config = owner_dir / OWNER_FILE
    _write_toml(
        owner_config,
        owner_toml(
            job=name,
            tee=tee,
            simulation=simulation_ref,
            identity_key=relative_to(owner_dir, private),
            passphrase_file=relative_to(owner_dir, passphrase) if passphrase else None,
            shards=relative_to(owner_dir, Path(shards)),
            keybroker=keybroker,
            keybroker_policy=owner_policy,
            paramserver_mrenclaves=server_pins,
            pccs_url=pccs_url,
        ),
    )
    return JobFiles(
        root=root,
        job_toml=root / JOB_FILE,
        keybroker_dir=root / KEYBROKER_DIR,
        worker_configs=tuple(worker_configs),
        paramserver_configs=tuple(ps_configs),
        owner_config=owner_config,
        simulation_dir=simulation_dir,
        keybroker_mrenclave=keybroker_mrenclave,
        member_mrenclaves=measured,
    )
