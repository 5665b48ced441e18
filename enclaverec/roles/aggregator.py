"""The aggregator's enclave: ``python3 -m enclaverec.roles.aggregator --config FILE``.

Its measured configuration is ``federation.toml``. It never trains: its closure holds no
TensorFlow, scikit-learn, scipy, matplotlib or rich (tests/unit/test_architecture.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from enclaverec.federated.aggregator import FederatedAggregator
from enclaverec.federated.config import FederationConfig
from enclaverec.roles.runner import integer, run
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.role_setup import role_backend, verifier_context
from enclaverec.transport.server import ListenConfig

NAME = "aggregator"


def make_aggregator(
    config_path: Path,
    *,
    state_dir: Path,
    listen: ListenConfig,
    attestation_dir: Path | None = None,
) -> FederatedAggregator:
    config = FederationConfig.load(config_path)
    backend = role_backend(NAME, config.tee, config.raw, config.simulation_dir, attestation_dir)
    party_verification = None
    if config.parties_attest and config.tee is not TEEKind.NONE:
        party_verification = verifier_context(
            config.tee, config.party_policy, config.simulation_dir, config.pccs_url
        )
    return FederatedAggregator(
        config,
        backend=backend,
        state_dir=state_dir,
        listen=listen,
        party_verification=party_verification,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="federation.toml")
    parser.add_argument("--listen", metavar="HOST", help="listen address (default: the file's)")
    parser.add_argument("--port", metavar="PORT", help="application port (default: the file's)")
    parser.add_argument(
        "--enrollment-port", metavar="PORT", help="enrollment port (default: the file's)"
    )
    parser.add_argument(
        "--state-dir", metavar="DIR", help="sealed state (default: beside the file)"
    )


def _run(args: argparse.Namespace) -> int:
    config_path = Path(args.config)
    config = FederationConfig.load(config_path)
    state_dir = Path(args.state_dir) if args.state_dir else config_path.parent / NAME
    listen = ListenConfig(
        host=args.listen or config.listen_host,
        application_port=integer("port", args.port, minimum=0) if args.port else config.listen_port,
        enrollment_port=integer("enrollment-port", args.enrollment_port, minimum=0)
        if args.enrollment_port
        else config.enrollment_port,
    )
    summary = make_aggregator(config_path, state_dir=state_dir, listen=listen).run()
    print(
        f"federation finished: {summary['rounds_completed']} round(s), best round "
        f"{summary['best_round']}, summary in {state_dir}",
        flush=True,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(NAME, add_arguments, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
