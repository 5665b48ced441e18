"""The key broker's enclave: ``python3 -m enclaverec.roles.keybroker --config job.toml``.

It never trains: its closure holds no TensorFlow, scikit-learn, scipy, matplotlib or rich
(tests/unit/test_architecture.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from enclaverec.distributed.config import JobConfig
from enclaverec.distributed.keybroker import KeyBroker
from enclaverec.roles.runner import run
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.policy import AnyOf, Policy, PolicySpec
from enclaverec.tee.role_setup import role_backend, verifier_context
from enclaverec.transport.server import ListenConfig

NAME = "keybroker"


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
    backend = role_backend(NAME, config.tee, config.raw, config.simulation_dir, attestation_dir)
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
        state_dir=state_dir or config_path.parent / NAME,
        listen=listen,
        member_verification=verification,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="job.toml")
    parser.add_argument("--listen", metavar="HOST", help="listen address (default: the file's)")
    parser.add_argument("--state-dir", metavar="DIR", help="sealed state (default: keybroker/)")


def _run(args: argparse.Namespace) -> int:
    config_path = Path(args.config)
    config = JobConfig.load(config_path)
    listen = ListenConfig(
        host=args.listen or config.listen.host,
        application_port=config.listen.port,
        enrollment_port=config.listen.enrollment_port or 0,
    )
    broker = make_keybroker(
        config_path,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        listen=listen,
    )
    broker.start()
    try:
        # Serve until the owner fetched the result (the job is then over for this role).
        while not broker.wait_fetched(timeout=1.0):
            pass
    finally:
        broker.stop(2.0)
    print(f"job {config.name}: result fetched by the owner", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(NAME, add_arguments, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
