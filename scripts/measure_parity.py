"""Parity of the federated defaults with centralized training (issue 9).

For each data set: ``enclaverec train`` and ``enclaverec federated simulate --parties 4``
(IID, every other flag at its default), both on the same split (same seed), and the
difference of their test AUCs. The data sets: MovieLens-100K, the built-in ``synthetic``
set, and a Criteo-format file (the 150,000 ``synthetic`` rows written as a Criteo TSV by
``app.bench_federated.write_synthetic_criteo``, read with ``--data FILE``).

    python scripts/measure_parity.py --work /tmp/parity [--only movielens-100k ...]
        [--simulate-flag=--clipping --simulate-flag=none] [--table-size 10000]

Runs one command at a time (each takes the machine's cores); prints each command, then the
table. Nothing is asserted: it measures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CRITEO = "criteo-file"
DATA_SETS = ("movielens-100k", "synthetic", CRITEO)
CRITEO_ROWS = 150_000


def run(args: list[str]) -> float:
    command = [sys.executable, "-m", "enclaverec.cli.main", *args]
    print("$ enclaverec " + " ".join(args), flush=True)
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"exit {done.returncode}: {' '.join(args)}")
    return time.monotonic() - start


def data_flags(name: str, work: Path, table_size: int | None) -> list[str]:
    if name != CRITEO:
        return ["--dataset", name]
    from enclaverec.app.bench_federated import write_synthetic_criteo

    path = work / "synthetic-criteo.tsv"
    if not path.exists():
        write_synthetic_criteo(path, CRITEO_ROWS)
    sizes = ["--table-size", str(table_size)] if table_size else []
    return ["--data", str(path), *sizes]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--only", nargs="+", choices=DATA_SETS, default=DATA_SETS)
    parser.add_argument("--parties", type=int, default=4)
    parser.add_argument("--simulate-flag", action="append", default=[], dest="simulate_flags")
    parser.add_argument("--tag", default="default", help="names this variant's folders")
    parser.add_argument("--skip-train", action="store_true", help="reuse earlier train runs")
    parser.add_argument("--table-size", type=int, help="rows per table for the Criteo file")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.only:
        flags = data_flags(name, args.work, args.table_size)
        sized = f"-{args.table_size}" if name == CRITEO and args.table_size else ""
        central = args.work / f"train-{name}{sized}"
        if not (args.skip_train and (central / "metrics.json").exists()):
            run(["train", *flags, "--output", str(central), "--overwrite"])
        federated = args.work / f"simulate-{name}{sized}-{args.tag}"
        seconds = run(
            [
                "federated", "simulate", *flags, "--parties", str(args.parties),
                *args.simulate_flags, "--output", str(federated), "--overwrite",
            ]
        )  # fmt: skip
        c = json.loads((central / "metrics.json").read_text())
        f = json.loads((federated / "metrics.json").read_text())
        assert c["test_split_sha256"] == f["test_split_sha256"], "different test rows"
        rows.append((name, c, f, seconds))
    print(f"\nparity, {args.parties} IID parties, simulate flags: {args.simulate_flags or 'none'}")
    print(f"{'data':16} {'train AUC':>10} {'(epochs)':>9} {'fed AUC':>9} {'(best round)':>13} "
          f"{'fed - train':>12} {'fed wall':>9}")  # fmt: skip
    for name, c, f, seconds in rows:
        print(
            f"{name:16} {c['test_auc']:10.4f} {c['best_epoch']:>4}/{c['epochs_completed']:<4} "
            f"{f['test_auc']:9.4f} {f['best_round']:>6}/{f['rounds_completed']:<6} "
            f"{f['test_auc'] - c['test_auc']:+12.4f} {seconds:8.0f}s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
