"""``federated init``: a federation's files, one folder per site.

```
DIR/
  federation.toml        the aggregator's measured configuration (plan, membership,
                         the policy for the parties' evidence)
  aggregator/            the aggregator's state directory (sealed keys and checkpoints,
                         audit log, summary)
  party-<i>/party.toml   a party's configuration (identity, data, aggregator address and
                         the policy the aggregator must meet)
  party-<i>/identity.key[.pub], identity.pass
                         its membership key pair (private key encrypted, 0600) when init
                         made it; a real party makes its own with `keys new` and sends
                         only the public key (`--member ID=FILE.pub`)
  party-<i>/data/        its rows (a prepared folder), when init was given a data set
  simulation/            the simulation deployment (simulated TEE only)
```

Security: with a simulated TEE every folder lives on one machine and the simulation's
private keys are in ``simulation/keys``: a laptop set-up, said in every log line. For a
real federation each party folder is moved to its own site, and the aggregator's
measurement comes from ``gramine-sgx-sigstruct-view`` (docs/federated.md).
"""

from __future__ import annotations

import logging
import os
import secrets
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from enclaverec.crypto import keys
from enclaverec.data.prepared import save_prepared
from enclaverec.data.schema import DataSet
from enclaverec.errors import ConfigError, UsageError
from enclaverec.federated.config import (
    FEDERATION_FILE,
    PARTY_FILE,
    FederatedPlan,
    FederationConfig,
    federation_toml,
    party_toml,
)
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.measurement import ROLE_ISV_PROD_IDS, measured_inputs
from enclaverec.tee.policy import PolicySpec

log = logging.getLogger(__name__)

AGGREGATOR_DIR = "aggregator"
SIMULATION_DIR = "simulation"


def party_id(index: int) -> str:
    return f"party-{index}"


@dataclass(frozen=True)
class FederationFiles:
    """Where ``init`` put everything, and the aggregator's (simulated) measurement."""

    root: Path
    federation_toml: Path
    aggregator_dir: Path
    party_configs: tuple[Path, ...]
    simulation_dir: Path | None
    aggregator_mrenclave: bytes | None


def _write_toml(path: Path, document: Mapping[str, object]) -> bytes:
    data = tomli_w.dumps(document).encode()
    path.write_bytes(data)
    return data


def _new_identity(folder: Path) -> str:
    """A membership key pair for a party that init sets up itself; the passphrase goes to
    a 0600 file beside it (never argv or environment)."""
    passphrase = secrets.token_urlsafe(24)
    pass_path = folder / "identity.pass"
    fd = os.open(pass_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(passphrase + "\n")
    private = keys.generate_private_key()
    keys.save_key_pair(private, folder / "identity.key", passphrase.encode())
    return keys.public_key_pem(private.public_key()).decode()


def init_federation(
    root: Path,
    *,
    parties: int,
    plan: FederatedPlan,
    tee: TEEKind,
    parties_attest: bool,
    party_data: Sequence[DataSet] | None = None,
    members: Mapping[str, Path] | None = None,
    max_rows: Mapping[str, int] | None = None,
    host: str = "127.0.0.1",
    port: int = 50051,
    enrollment_port: int = 50052,
    aggregator_mrenclave: bytes | None = None,
    party_mrsigner: bytes | None = None,
    name: str = "federation",
    pccs_url: str | None = None,
) -> FederationFiles:
    """Write a federation's files under ``root`` (which must not exist or be empty).

    Each member's ``max_rows`` (the bound on its weight and on the rows it may score) comes
    from ``max_rows`` or, when init writes the parties' data, from the size of each share.
    """
    if parties < 1:
        raise UsageError(f"a federation needs at least one party, got {parties}")
    if root.exists() and any(root.iterdir()):
        raise UsageError(f"refusing to write into the non-empty folder {root}")
    if party_data is not None and len(party_data) != parties:
        raise UsageError(f"{len(party_data)} data shares for {parties} parties")
    ids = {party_id(i) for i in range(parties)}
    if members is not None and set(members) != ids:
        raise UsageError(f"--member must name exactly party-0 .. party-{parties - 1}")
    if max_rows is None and party_data is not None:
        max_rows = {party_id(i): len(share.train) for i, share in enumerate(party_data)}
    if max_rows is None or set(max_rows) != ids:
        raise UsageError(
            "every member needs its max_rows: give the parties' data, or --member "
            "ID=FILE.pub:ROWS for each"
        )
    attest = parties_attest and tee is not TEEKind.NONE
    if attest and tee is TEEKind.GRAMINE and party_mrsigner is None:
        raise ConfigError(
            "parties attest: give the parties' enclave signer (MRSIGNER, from "
            "gramine-sgx-sigstruct-view of the party enclave) with --party-mrsigner"
        )
    existed = root.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:
        return _write_federation(
            root,
            parties=parties,
            plan=plan,
            tee=tee,
            attest=attest,
            party_data=party_data,
            members=members,
            max_rows=max_rows,
            host=host,
            port=port,
            enrollment_port=enrollment_port,
            aggregator_mrenclave=aggregator_mrenclave,
            party_mrsigner=party_mrsigner,
            name=name,
            pccs_url=pccs_url,
        )
    except BaseException:
        # Nothing half-written: a failed init leaves the folder as it found it, so the
        # same command can simply be run again.
        import shutil

        for child in list(root.iterdir()):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        if not existed:
            root.rmdir()
        raise


def _write_federation(
    root: Path,
    *,
    parties: int,
    plan: FederatedPlan,
    tee: TEEKind,
    attest: bool,
    party_data: Sequence[DataSet] | None,
    members: Mapping[str, Path] | None,
    max_rows: Mapping[str, int],
    host: str,
    port: int,
    enrollment_port: int,
    aggregator_mrenclave: bytes | None,
    party_mrsigner: bytes | None,
    name: str,
    pccs_url: str | None,
) -> FederationFiles:
    (root / AGGREGATOR_DIR).mkdir(mode=0o700)

    simulation_dir = None
    signer = party_mrsigner
    sim_roots: frozenset[str] = frozenset()
    if tee is TEEKind.SIMULATED:
        from enclaverec.tee.simulation_pki import SimulationPKI

        pki = SimulationPKI.create(root / SIMULATION_DIR)
        simulation_dir = pki.folder
        signer = pki.mr_signer
        sim_roots = frozenset({pki.root_sha256})
    if attest and signer is None:
        raise ConfigError(
            "parties attest: give the parties' enclave signer (MRSIGNER, from "
            "gramine-sgx-sigstruct-view of the party enclave) with --party-mrsigner"
        )

    membership: dict[str, str] = {}
    party_dirs = []
    for index in range(parties):
        pid = party_id(index)
        folder = root / pid
        folder.mkdir(mode=0o700)
        party_dirs.append(folder)
        if members is not None:
            keys.load_public_key(members[pid])  # refuse anything but a P-256 public key
            membership[pid] = members[pid].read_text()
        else:
            membership[pid] = _new_identity(folder)

    party_policy = None
    if attest:
        party_policy = PolicySpec(
            mrsigners=frozenset({signer}),  # type: ignore[arg-type]
            isv_prod_id=ROLE_ISV_PROD_IDS["party"],
            unsafe_allow_simulation=bool(sim_roots),
            simulation_roots=sim_roots,
        )
    document = federation_toml(
        name=name,
        tee=tee,
        parties_attest=attest,
        simulation=SIMULATION_DIR if simulation_dir else None,
        plan=plan,
        membership=membership,
        max_rows=max_rows,
        party_policy=party_policy,
        host=host,
        port=port,
        enrollment_port=enrollment_port,
        pccs_url=pccs_url,
    )
    # The aggregator's own checks, before anything measured is written: a federation it
    # would refuse (a port above 65535, a shared key, ...) is refused here (exit 2).
    serialized = tomli_w.dumps(document).encode()
    FederationConfig.from_document(
        tomllib.loads(serialized.decode()), raw=serialized, path=root / FEDERATION_FILE
    )
    federation_bytes = _write_toml(root / FEDERATION_FILE, document)
    if tee is TEEKind.SIMULATED:
        aggregator_mrenclave = measured_inputs("aggregator", federation_bytes).mrenclave()

    configs = []
    for index, folder in enumerate(party_dirs):
        aggregator_policy = None
        if tee is not TEEKind.NONE:
            aggregator_policy = PolicySpec(
                mrenclaves=frozenset({aggregator_mrenclave})
                if aggregator_mrenclave
                else frozenset(),
                isv_prod_id=ROLE_ISV_PROD_IDS["aggregator"],
                unsafe_allow_simulation=bool(sim_roots),
                simulation_roots=sim_roots,
            )
        config_path = folder / PARTY_FILE
        _write_toml(
            config_path,
            party_toml(
                party_id=party_id(index),
                tee=tee,
                simulation=f"../{SIMULATION_DIR}" if simulation_dir else None,
                # With --member the party puts its own key pair here (docs/federated.md).
                identity_key="identity.key",
                passphrase_file="identity.pass",
                data="data",
                host=host,
                port=port,
                enrollment_port=enrollment_port if tee is not TEEKind.NONE else None,
                aggregator_policy=aggregator_policy,
                pccs_url=pccs_url,
            ),
        )
        configs.append(config_path)
        if party_data is not None:
            save_prepared(party_data[index], folder / "data")
    return FederationFiles(
        root=root,
        federation_toml=root / FEDERATION_FILE,
        aggregator_dir=root / AGGREGATOR_DIR,
        party_configs=tuple(configs),
        simulation_dir=simulation_dir,
        aggregator_mrenclave=aggregator_mrenclave,
    )
