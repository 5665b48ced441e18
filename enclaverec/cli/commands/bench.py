"""``enclaverec bench``: benchmarks that print figures and write them as JSON.

Each benchmark is library code in ``enclaverec.app.bench_*`` (a typed configuration in, a
report out) with a thin command module ``enclaverec.cli.bench_*`` that parses its flags
and prints the figures.
"""

from __future__ import annotations

import argparse

from enclaverec.cli import (
    bench_crypto,
    bench_distributed,
    bench_federated,
    bench_robustness,
    bench_scale,
    bench_train,
)
from enclaverec.cli.registry import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    group = add_command(subparsers, "bench", help="benchmarks that print and write figures")
    sub = group.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    bench_train.register(sub)
    bench_crypto.register(sub)
    bench_federated.register(sub)
    bench_scale.register(sub)
    bench_distributed.register(sub)
    bench_robustness.register(sub)
