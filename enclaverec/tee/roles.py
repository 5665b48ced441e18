"""The roles, in one table: each role's entry module, whether it trains, its ISVPRODID, its
fixed argv and its configuration file.

A role's entry module is what its enclave runs (``python3 -m ENTRY --config ...``); its
closure (:mod:`enclaverec.tee.closure`) is what the simulated MRENCLAVE measures and what
the Gramine manifest trusts. Adding a role is one entry module under
``enclaverec/roles/`` plus one :class:`RoleSpec` here (docs/architecture.md).

This module names entry modules as strings and imports none of them: the table is read by
host-side tooling (measurement, manifests) without loading what the roles run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from enclaverec.errors import UsageError

MEASURED_CONFIG_PATH = "/enclaverec/measured.toml"
"""Where an enclave role reads its measured configuration (a trusted file under Gramine)."""


@dataclass(frozen=True)
class RoleSpec:
    name: str
    entry: str
    """Dotted name of the module the role's process runs (``python3 -m ENTRY``)."""
    command: tuple[str, ...]
    """The ``enclaverec`` subcommand that starts the role on a host."""
    trains: bool
    """Runs the TensorFlow trainer (its closure may reach ``enclaverec.model``)."""
    isv_prod_id: int
    """ISVPRODID of the role's enclave (``sgx.isvprodid``): a policy that trusts a signer
    (MRSIGNER) pins the role with it, so a party cannot pose as an aggregator signed by the
    same key."""
    config_file: str
    """The measured configuration file that describes the role (written by ``init``)."""
    config_table: str
    """The TOML table only that role's configuration has (``gramine manifest`` refuses a
    configuration of another role)."""
    in_enclave: bool = True

    @property
    def argv(self) -> tuple[str, ...]:
        """The role's fixed argv (the manifest's ``loader.argv``); flags that do not change
        measured behaviour (address, port, log level, sealed-state directory) are not part
        of it."""
        return ("python3", "-m", self.entry, "--config", MEASURED_CONFIG_PATH)


ROLE_SPECS: Mapping[str, RoleSpec] = {
    spec.name: spec
    for spec in (
        RoleSpec(
            "aggregator",
            "enclaverec.roles.aggregator",
            ("federated", "aggregator"),
            trains=False,
            isv_prod_id=1,
            config_file="federation.toml",
            config_table="federation",
        ),
        RoleSpec(
            "party",
            "enclaverec.roles.party",
            ("federated", "party"),
            trains=True,
            isv_prod_id=2,
            config_file="party.toml",
            config_table="party",
        ),
        # The owner runs on the data owner's own machine, outside any enclave.
        RoleSpec(
            "owner",
            "enclaverec.distributed.owner",
            ("distributed", "submit"),
            trains=False,
            isv_prod_id=3,
            config_file="owner.toml",
            config_table="owner",
            in_enclave=False,
        ),
        RoleSpec(
            "keybroker",
            "enclaverec.roles.keybroker",
            ("distributed", "keybroker"),
            trains=False,
            isv_prod_id=4,
            config_file="job.toml",
            config_table="job",
        ),
        RoleSpec(
            "paramserver",
            "enclaverec.roles.paramserver",
            ("distributed", "paramserver"),
            trains=False,
            isv_prod_id=5,
            config_file="paramserver.toml",
            config_table="paramserver",
        ),
        RoleSpec(
            "worker",
            "enclaverec.roles.worker",
            ("distributed", "worker"),
            trains=True,
            isv_prod_id=6,
            config_file="worker.toml",
            config_table="worker",
        ),
    )
}

ROLES: tuple[str, ...] = tuple(ROLE_SPECS)
"""Role ids (DESIGN.md §4)."""


def role_spec(name: str) -> RoleSpec:
    try:
        return ROLE_SPECS[name]
    except KeyError:
        raise UsageError(f"unknown role {name!r}; roles: {', '.join(ROLES)}") from None
