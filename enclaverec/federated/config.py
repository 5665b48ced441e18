"""A federation's files, read into frozen configuration: the plan every party trains by,
the aggregator's measured configuration (``federation.toml``) and a party's
(``party.toml``).

The aggregator's measured configuration holds the plan, the membership and the policy its
parties' evidence must meet; it is hashed into the aggregator's measurement, so changing
any of them changes MRENCLAVE and the parties refuse the aggregator. A party's file holds
its identity, its data, where the aggregator is and the policy the aggregator must meet.
Relative paths in either file are relative to the file's folder.

Policies cannot pin each other's MRENCLAVE both ways (each measurement would contain the
other), so parties pin the aggregator's MRENCLAVE and the aggregator pins the parties'
signer (MRSIGNER) and role (ISVPRODID), plus each party's membership key.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enclaverec import config_tables
from enclaverec.arrays import Arrays, ModelLayout
from enclaverec.crypto.keys import parse_public_key_pem, public_key_der
from enclaverec.data.schema import FeatureSpec
from enclaverec.errors import ConfigError, EnclaveRecError
from enclaverec.federated.rounds import SelectionConfig
from enclaverec.federated.strategies import LocalTraining, StrategyConfig
from enclaverec.files import read_toml
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.policy import PolicySpec
from enclaverec.training import ModelKind as ModelKind  # re-exported: its old home
from enclaverec.training import initial_model

FORMAT_VERSION = 1
FEDERATION_FILE = "federation.toml"
PARTY_FILE = "party.toml"


class UpdateEncoding(enum.Enum):
    """How a party sends its embedding-table deltas: the touched rows only (the default),
    or whole tables (a measurement baseline for bytes on the wire)."""

    SPARSE = "sparse"
    DENSE = "dense"


# --- reading TOML tables strictly (shared with the distributed configuration) ---------

_table = config_tables.table
_check_keys = config_tables.check_keys


def _check_format(table: Mapping[str, Any], where: str) -> None:
    """The file's format version: missing and unknown are told apart, each naming the key."""
    if "format" not in table:
        raise ConfigError(f"{where}: missing key format (expected format = {FORMAT_VERSION})")
    if table["format"] != FORMAT_VERSION:
        raise ConfigError(
            f"{where}: format = {table['format']!r} is not one this build reads "
            f"(expected {FORMAT_VERSION})"
        )


_get = config_tables.get


def load_toml_file(path: Path) -> tuple[dict[str, Any], bytes]:
    """The parsed file and its exact bytes (the bytes are what is measured)."""
    return read_toml(path)


# --- the plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FederatedPlan:
    """What every party trains and how the aggregator combines it; identical for all."""

    model: ModelKind
    preset: str
    optimizer: str
    dataset: str
    features: FeatureSpec
    hashing: Mapping[str, Any] | None
    seed: int
    rounds: int
    local: LocalTraining
    strategy: StrategyConfig
    selection: SelectionConfig
    norm_bound: float | None = None
    update_encoding: UpdateEncoding = UpdateEncoding.SPARSE

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"rounds must be at least 1, got {self.rounds}")
        if self.norm_bound is not None and not (
            math.isfinite(self.norm_bound) and self.norm_bound > 0
        ):
            raise ConfigError(f"norm_bound must be positive, got {self.norm_bound}")

    def to_toml(self) -> dict[str, Any]:
        table: dict[str, Any] = {
            "model": self.model.value,
            "preset": self.preset,
            "optimizer": self.optimizer,
            "dataset": self.dataset,
            "seed": self.seed,
            "rounds": self.rounds,
            "local_epochs": self.local.epochs,
            "batch_size": self.local.batch_size,
            "learning_rate": self.local.learning_rate,
            "update_encoding": self.update_encoding.value,
            "norm_bound": self.norm_bound or 0.0,
            "strategy": self.strategy.to_toml(),
            "selection": {
                "fraction": self.selection.fraction,
                "min_parties": self.selection.min_parties,
                "quorum": self.selection.quorum,
                "deadline_seconds": self.selection.deadline_seconds,
            },
            "features": self.features.to_dict(),
        }
        if self.hashing is not None:
            table["hashing"] = dict(self.hashing)
        return table

    @classmethod
    def from_toml(cls, table: Mapping[str, Any], *, where: str = "[plan]") -> FederatedPlan:
        known = {
            "model", "preset", "optimizer", "dataset", "seed", "rounds", "local_epochs",
            "batch_size", "learning_rate", "update_encoding", "norm_bound", "strategy",
            "selection", "features", "hashing",
        }  # fmt: skip
        _check_keys(table, known, where)
        strategy = StrategyConfig.from_toml(
            _table(table, "strategy", where), where=f"{where}.strategy"
        )
        selection = _table(table, "selection", where)
        _check_keys(
            selection,
            {"fraction", "min_parties", "quorum", "deadline_seconds"},
            f"{where}.selection",
        )
        features = _table(table, "features", where)
        try:
            spec = FeatureSpec.from_dict(features)
            model = ModelKind(_get(table, "model", str, where))
            encoding = UpdateEncoding(_get(table, "update_encoding", str, where, "sparse"))
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        number = (int, float)
        seed = _get(table, "seed", int, where)
        bound = float(_get(table, "norm_bound", number, where, 0.0))
        return cls(
            model=model,
            preset=_get(table, "preset", str, where),
            optimizer=_get(table, "optimizer", str, where),
            dataset=_get(table, "dataset", str, where),
            features=spec,
            hashing=_get(table, "hashing", dict, where, None),
            seed=seed,
            rounds=_get(table, "rounds", int, where),
            local=LocalTraining(
                epochs=_get(table, "local_epochs", int, where),
                batch_size=_get(table, "batch_size", int, where),
                learning_rate=float(_get(table, "learning_rate", number, where)),
                seed=seed,
            ),
            strategy=strategy,
            selection=SelectionConfig(
                fraction=float(_get(selection, "fraction", number, where, 1.0)),
                min_parties=_get(selection, "min_parties", int, where, 1),
                quorum=float(_get(selection, "quorum", number, where, 1.0)),
                deadline_seconds=float(_get(selection, "deadline_seconds", number, where, 600.0)),
            ),
            norm_bound=bound if bound > 0 else None,
            update_encoding=encoding,
        )

    # --- the model the plan describes ----------------------------------------------------

    def initial_model(self) -> tuple[Arrays, ModelLayout]:
        """The initial global model (numpy, seeded by the plan: no TensorFlow) and its
        layout. Every party could compute the same; the aggregator's copy is the one used."""
        return initial_model(self.model, self.preset, self.features, self.seed)


# --- the aggregator's measured configuration -------------------------------------------

# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_address(host: str, port: int, what: str) -> None:
    """Refuse a listen/connect address that cannot work: a port outside 1-65535, or a host
    that is neither an IP address nor a host name (RFC 1123)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{what}: a port is 1 to 65535, got {port}")
    try:
        ipaddress.ip_address(host.strip("[]") if host.startswith("[") else host)
        return
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(p) for p in name.split(".")):
        raise ConfigError(f"{what}: {host!r} is neither an IP address nor a host name")


def check_member_keys(membership: Mapping[str, str], where: str) -> None:
    """Valid party ids, each with a P-256 public key of its own: two ids sharing one key
    would let one site enroll as both and send two updates per round."""
    from enclaverec.tee.attested_ca import check_party_id

    if not membership:
        raise ConfigError(f"{where}: the membership lists no party")
    seen: dict[bytes, str] = {}
    for party, pem in membership.items():
        try:
            check_party_id(party)
            key = parse_public_key_pem(pem.encode(), source=f"{where}: key of {party}")
        except EnclaveRecError as exc:
            raise ConfigError(str(exc)) from exc
        der = public_key_der(key)
        if der in seen:
            raise ConfigError(
                f"{where}: {seen[der]} and {party} have the same public key; each member "
                "needs its own"
            )
        seen[der] = party


def check_min_parties(min_parties: int, members: int, where: str) -> None:
    if min_parties > members:
        raise ConfigError(f"{where}: min_parties {min_parties} exceeds the {members} members")


def check_membership(
    membership: Mapping[str, str], max_rows: Mapping[str, int], where: str
) -> None:
    """The membership the aggregator accepts (``init`` runs the same checks before it
    writes anything): :func:`check_member_keys`, and for every member a positive
    ``max_rows``, the bound on its updates' weight and on the rows it may score."""
    check_member_keys(membership, where)
    if set(max_rows) != set(membership):
        missing = sorted(set(membership) - set(max_rows))
        raise ConfigError(
            f"{where}: every member needs max_rows (the most rows it trains on); "
            f"missing for {', '.join(missing) or 'none'}, unknown for "
            f"{', '.join(sorted(set(max_rows) - set(membership))) or 'none'}"
        )
    for party, rows in max_rows.items():
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ConfigError(f"{where}: max_rows of {party} must be a positive integer")


@dataclass(frozen=True)
class FederationConfig:
    """``federation.toml``: the aggregator's measured configuration."""

    name: str
    tee: TEEKind
    parties_attest: bool
    simulation_dir: Path | None
    plan: FederatedPlan
    membership: Mapping[str, str]
    party_policy: PolicySpec | None
    source: Path
    raw: bytes
    max_rows: Mapping[str, int] = field(default_factory=dict)
    """Each member's bound: its weight is min(claimed rows, max_rows); it may score at most
    max_rows validation and max_rows test rows."""
    listen_host: str = "127.0.0.1"
    listen_port: int = 50051
    enrollment_port: int = 50052
    pccs_url: str | None = None
    """Where to fetch real SGX collateral for the parties' evidence (Gramine); under
    Gramine argv is fixed, so this is the way to give it."""

    def __post_init__(self) -> None:
        check_membership(self.membership, self.max_rows, str(self.source))
        check_address(self.listen_host, self.listen_port, f"{self.source} [aggregator] port")
        check_address(
            self.listen_host, self.enrollment_port, f"{self.source} [aggregator] enrollment_port"
        )
        if self.enrollment_port == self.listen_port:
            raise ConfigError(f"{self.source}: the two ports of [aggregator] must differ")
        check_min_parties(self.plan.selection.min_parties, len(self.membership), str(self.source))
        if self.parties_attest and self.tee is not TEEKind.NONE:
            if self.party_policy is None or not self.party_policy.identity_checked:
                raise ConfigError(
                    f"{self.source}: parties_attest = true needs a [party_policy] that pins the "
                    "parties' enclaves (mrsigner or mrenclave); without it any enclave passes"
                )
        if self.tee is TEEKind.SIMULATED and self.simulation_dir is None:
            raise ConfigError(f"{self.source}: a simulated TEE needs [federation] simulation")

    @classmethod
    def load(cls, path: Path) -> FederationConfig:
        data, raw = load_toml_file(path)
        return cls.from_document(data, raw=raw, path=path)

    @classmethod
    def from_document(cls, data: Mapping[str, Any], *, raw: bytes, path: Path) -> FederationConfig:
        """The configuration a parsed ``federation.toml`` describes, with every check the
        aggregator makes; ``init`` calls it on what it is about to write."""
        where = str(path)
        _check_keys(data, {"federation", "aggregator", "plan", "membership", "party_policy"}, where)
        aggregator = _table(data, "aggregator", where, required=False)
        _check_keys(aggregator, {"host", "port", "enrollment_port"}, f"{where} [aggregator]")
        federation = _table(data, "federation", where)
        _check_keys(
            federation,
            {"name", "format", "tee", "parties_attest", "simulation", "pccs_url"},
            f"{where} [federation]",
        )
        _check_format(federation, f"{where} [federation]")
        try:
            tee = TEEKind(_get(federation, "tee", str, where))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        simulation = federation.get("simulation")
        membership = {}
        max_rows = {}
        for party, entry in _table(data, "membership", where).items():
            if not isinstance(entry, dict) or set(entry) != {"public_key", "max_rows"}:
                raise ConfigError(
                    f"{where}: [membership.{party}] must hold exactly public_key and max_rows"
                )
            membership[party] = _get(entry, "public_key", str, where)
            max_rows[party] = _get(entry, "max_rows", int, where)
        policy_table = _table(data, "party_policy", where, required=False)
        return cls(
            name=_get(federation, "name", str, where),
            tee=tee,
            parties_attest=_get(federation, "parties_attest", bool, where),
            simulation_dir=(path.parent / simulation) if isinstance(simulation, str) else None,
            plan=FederatedPlan.from_toml(_table(data, "plan", where), where=f"{where} [plan]"),
            membership=membership,
            party_policy=PolicySpec.from_toml(policy_table, source=f"{where} [party_policy]")
            if policy_table
            else None,
            source=path,
            raw=raw,
            max_rows=max_rows,
            listen_host=_get(aggregator, "host", str, where, "127.0.0.1"),
            listen_port=_get(aggregator, "port", int, where, 50051),
            enrollment_port=_get(aggregator, "enrollment_port", int, where, 50052),
            pccs_url=_get(federation, "pccs_url", str, where, None),
        )


def federation_toml(
    *,
    name: str,
    tee: TEEKind,
    parties_attest: bool,
    simulation: str | None,
    plan: FederatedPlan,
    membership: Mapping[str, str],
    max_rows: Mapping[str, int],
    party_policy: PolicySpec | None,
    host: str = "127.0.0.1",
    port: int = 50051,
    enrollment_port: int = 50052,
    pccs_url: str | None = None,
) -> dict[str, Any]:
    """The ``federation.toml`` document (the inverse of :meth:`FederationConfig.load`).
    ``[aggregator]`` holds where it listens by default (flags may override it)."""
    federation: dict[str, Any] = {
        "name": name,
        "format": FORMAT_VERSION,
        "tee": tee.value,
        "parties_attest": parties_attest,
    }
    if simulation is not None:
        federation["simulation"] = simulation
    if pccs_url is not None:
        federation["pccs_url"] = pccs_url
    document: dict[str, Any] = {
        "federation": federation,
        "aggregator": {"host": host, "port": port, "enrollment_port": enrollment_port},
        "plan": plan.to_toml(),
        "membership": {
            party: {"public_key": pem, "max_rows": max_rows[party]}
            if party in max_rows
            # A member without a bound is written as is, and refused by the loader.
            else {"public_key": pem}
            for party, pem in membership.items()
        },
    }
    if party_policy is not None:
        document["party_policy"] = party_policy.to_toml()
    return document


# --- a party's configuration ------------------------------------------------------------


@dataclass(frozen=True)
class PartyConfig:
    """``party.toml``: one party's identity, data, aggregator address and policy."""

    party_id: str
    tee: TEEKind
    simulation_dir: Path | None
    identity_key: Path | None
    passphrase_file: Path | None
    data: Path
    aggregator_host: str
    aggregator_port: int
    aggregator_enrollment_port: int | None
    aggregator_policy: PolicySpec | None
    source: Path
    raw: bytes
    pccs_url: str | None = None
    export: Path | None = None
    """Where to write the best global model (a SavedModel) when the federation ends."""

    @classmethod
    def load(cls, path: Path) -> PartyConfig:
        data, raw = load_toml_file(path)
        where = str(path)
        _check_keys(data, {"party", "aggregator", "aggregator_policy"}, where)
        party = _table(data, "party", where)
        _check_keys(
            party,
            {
                "id",
                "format",
                "tee",
                "simulation",
                "identity_key",
                "passphrase_file",
                "data",
                "pccs_url",
                "export",
            },  # fmt: skip
            f"{where} [party]",
        )
        _check_format(party, f"{where} [party]")
        aggregator = _table(data, "aggregator", where)
        _check_keys(aggregator, {"host", "port", "enrollment_port"}, f"{where} [aggregator]")
        try:
            tee = TEEKind(_get(party, "tee", str, where))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        base = path.parent

        def relative(key: str) -> Path | None:
            value = _get(party, key, str, where, None)
            return (base / value) if value is not None else None

        policy_table = _table(data, "aggregator_policy", where, required=False)
        config = cls(
            party_id=_get(party, "id", str, where),
            tee=tee,
            simulation_dir=relative("simulation"),
            identity_key=relative("identity_key"),
            passphrase_file=relative("passphrase_file"),
            data=base / _get(party, "data", str, where),
            aggregator_host=_get(aggregator, "host", str, where),
            aggregator_port=_get(aggregator, "port", int, where),
            aggregator_enrollment_port=_get(aggregator, "enrollment_port", int, where, None),
            aggregator_policy=PolicySpec.from_toml(
                policy_table, source=f"{where} [aggregator_policy]"
            )
            if policy_table
            else None,
            source=path,
            raw=raw,
            pccs_url=_get(party, "pccs_url", str, where, None),
            export=relative("export"),
        )
        if tee is not TEEKind.NONE:
            if config.aggregator_policy is None or not config.aggregator_policy.identity_checked:
                raise ConfigError(
                    f"{where}: [aggregator_policy] must pin the aggregator (mrenclave or "
                    "mrsigner); without it any enclave could pose as the aggregator"
                )
            if config.aggregator_enrollment_port is None:
                raise ConfigError(f"{where}: [aggregator] needs enrollment_port")
        if tee is TEEKind.SIMULATED and config.simulation_dir is None:
            raise ConfigError(f"{where}: a simulated TEE needs [party] simulation")
        return config


def party_toml(
    *,
    party_id: str,
    tee: TEEKind,
    simulation: str | None,
    identity_key: str | None,
    passphrase_file: str | None,
    data: str,
    host: str,
    port: int,
    enrollment_port: int | None,
    aggregator_policy: PolicySpec | None,
    pccs_url: str | None = None,
) -> dict[str, Any]:
    party: dict[str, Any] = {
        "id": party_id,
        "format": FORMAT_VERSION,
        "tee": tee.value,
        "data": data,
    }
    for key, value in (
        ("simulation", simulation),
        ("identity_key", identity_key),
        ("passphrase_file", passphrase_file),
        ("pccs_url", pccs_url),
    ):
        if value is not None:
            party[key] = value
    aggregator: dict[str, Any] = {"host": host, "port": port}
    if enrollment_port is not None:
        aggregator["enrollment_port"] = enrollment_port
    document: dict[str, Any] = {"party": party, "aggregator": aggregator}
    if aggregator_policy is not None:
        document["aggregator_policy"] = aggregator_policy.to_toml()
    return document
