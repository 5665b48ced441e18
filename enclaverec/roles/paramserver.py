"""A parameter server's enclave: ``python3 -m enclaverec.roles.paramserver --config FILE``.

Its measured configuration is ``paramserver.toml``. It never trains: its closure holds no
TensorFlow, scikit-learn, scipy, matplotlib or rich (tests/unit/test_architecture.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from enclaverec.distributed.paramserver import run_paramserver
from enclaverec.roles.runner import run

NAME = "paramserver"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="paramserver.toml")
    parser.add_argument("--listen", metavar="HOST", help="listen address (default: the file's)")
    parser.add_argument(
        "--state-dir", metavar="DIR", help="sealed keys and checkpoints (default: state/ beside it)"
    )


def _run(args: argparse.Namespace) -> int:
    result = run_paramserver(
        Path(args.config),
        state_dir=Path(args.state_dir) if args.state_dir else None,
        listen_host=args.listen,
    )
    resumed = f"; resumed at step {result.resumed_from_step}" if result.resumed_from_step else ""
    print(
        f"{result.paramserver_id}: {result.applied_step} steps applied, shard of the best "
        f"epoch ({result.best_epoch}) sent to the key broker, {result.checkpoints} sealed "
        f"checkpoint(s){resumed}",
        flush=True,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(NAME, add_arguments, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
