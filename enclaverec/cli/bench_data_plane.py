"""``python -m enclaverec.cli.bench_data_plane``: prints the data plane's per-step figures
(:mod:`enclaverec.app.bench_data_plane`) as JSON. ``enclaverec bench distributed`` measures
whole jobs; this measures the data plane alone."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from enclaverec.app.bench_data_plane import SHAPES, DataPlaneBenchConfig, measure


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m enclaverec.cli.bench_data_plane", allow_abbrev=False
    )
    parser.add_argument("--shape", choices=SHAPES, default="small")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ps", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    config = DataPlaneBenchConfig(
        shape=args.shape,
        workers=args.workers,
        shards=args.ps,
        steps=args.steps,
        warmup=args.warmup,
    )
    print(json.dumps(measure(config), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
