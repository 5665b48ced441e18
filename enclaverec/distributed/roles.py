"""Running the distributed roles from their configuration files (the CLI's ``distributed
keybroker|paramserver|worker`` are thin wrappers; tests call these in-process)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from enclaverec.distributed.config import JobConfig
from enclaverec.distributed.keybroker import KeyBroker
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.policy import AnyOf, Policy, PolicySpec
from enclaverec.tee.role_setup import role_backend, verifier_context
from enclaverec.transport.server import ListenConfig


@dataclass(frozen=True)
class AnyOfSpecs:
    """Evidence that meets any one of ``specs`` (the key broker enrolls workers and
    parameter servers, each under its role's policy)."""

    specs: tuple[PolicySpec | None, ...]

    def build(self) -> Policy:
        return AnyOf([spec.build() for spec in self.specs if spec is not None])


def make_keybroker(
    config_path: Path,
    *,
    state_dir: Path | None = None,
    listen: ListenConfig | None = None,
    attestation_dir: Path | None = None,
) -> KeyBroker:
    """The key broker of ``job.toml``; it listens where the measured configuration says
    unless ``listen`` overrides the address (never a measured field)."""
    config = JobConfig.load(config_path)
    backend = role_backend(
        "keybroker", config.tee, config.raw, config.simulation_dir, attestation_dir
    )
    verification = None
    if config.tee is not TEEKind.NONE:
        verification = verifier_context(
            config.tee,
            AnyOfSpecs((config.worker_policy, config.paramserver_policy)),
            config.simulation_dir,
            config.pccs_url,
        )
    listen = listen or ListenConfig(
        host=config.listen.host,
        application_port=config.listen.port,
        enrollment_port=config.listen.enrollment_port or 0,
    )
    return KeyBroker(
        config,
        backend=backend,
        state_dir=state_dir or config_path.parent / "keybroker",
        listen=listen,
        member_verification=verification,
    )
