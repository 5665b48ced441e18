"""A worker's enclave: ``python3 -m enclaverec.roles.worker --config FILE``.

Its measured configuration is ``worker.toml``. It trains (TensorFlow's sparse gradients for
the DLRM); its shard is decrypted in memory only. It imports no host-side tooling, plots or
UI (tests/unit/test_architecture.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from enclaverec.distributed.worker import run_worker
from enclaverec.roles.runner import integer, run

NAME = "worker"
RESULT_PREFIX = "worker result: "
"""The one machine-readable line a worker prints (timings and byte counts only: no data, no
weight); ``distributed simulate`` and ``bench distributed`` read it from the role's log."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="worker.toml")
    parser.add_argument(
        "--threads", metavar="N", help="TensorFlow intra-op threads (default: all cores)"
    )


def _run(args: argparse.Namespace) -> int:
    threads = integer("threads", args.threads, minimum=1) if args.threads else None
    result = run_worker(Path(args.config), threads=threads)
    print(RESULT_PREFIX + json.dumps(result.to_dict()), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(NAME, add_arguments, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
