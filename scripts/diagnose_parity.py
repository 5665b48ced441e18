"""Where federated parity is lost: FedAvg in one process, without TEE, TLS or processes.

The same data loading, split, IID partition, DLRM trainer (the preset `small`, row-wise
Adagrad) and strategy code as ``enclaverec federated simulate``; the rounds are a plain
loop, so a variant (local batch, steps per round, clipping, row normalisation, one party
holding every row) takes a minute or two instead of a federation's four. With the
defaults it gives the same round-by-round AUCs as ``federated simulate`` (checked on the
Criteo-format file of ``scripts/measure_parity.py``: 0.8062 at round 4 in both, when
parties kept their optimizer state across rounds; ``--accumulators local`` still does).

    python scripts/diagnose_parity.py --data /tmp/parity/synthetic-criteo.tsv [--rounds 6]
        [--parties 1] [--batch 256] [--max-steps 60] [--clipping none] [--rows touching]
        [--strategy fedavg:-1] [--local-epochs 2] [--server-lr 2] [--server-momentum 0.5]
        [--tables-server-lr 0.5] [--accumulators local|reset|shared|shared-rows] [--stats]

``--stats`` prints, for the first two rounds, each party's local model's validation AUC
and the norms and mean pairwise cosine of the parties' updates, dense part and tables
apart. Nothing is asserted: it measures. Not a product path (no enclave, no transport).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _flat(update, layout, glob, tables: bool) -> np.ndarray:
    """An update's dense part or its tables as one vector (untouched rows zero)."""
    parts = []
    for name, spec in layout.specs.items():
        if spec.table != tables:
            continue
        if name in update.sparse:
            full = np.zeros(glob[name].shape, np.float64)
            full[update.sparse[name].row_ids] = update.sparse[name].values
            parts.append(full.ravel())
        else:
            parts.append(update.dense[name].astype(np.float64).ravel())
    return np.concatenate(parts)


def _accumulators(trainer) -> list[np.ndarray]:
    rule = trainer.rule
    return [rule.row_accumulators.numpy(), *(a.numpy() for a in rule.dense_accumulators)]


def _set_accumulators(trainer, values: list[np.ndarray]) -> None:
    rule = trainer.rule
    for variable, value in zip(
        [rule.row_accumulators, *rule.dense_accumulators], values, strict=True
    ):
        variable.assign(value)


def _cosine_summary(vectors: list[np.ndarray]) -> str:
    norms = [float(np.linalg.norm(v)) for v in vectors]
    cosines = [
        float(vectors[i] @ vectors[j] / (norms[i] * norms[j]))
        for i in range(len(vectors))
        for j in range(i + 1, len(vectors))
    ]
    return (
        f"norms {' '.join(f'{n:.2f}' for n in norms)}, mean pairwise cosine {np.mean(cosines):.3f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path)
    source.add_argument("--dataset")
    parser.add_argument("--table-size", type=int)
    parser.add_argument("--parties", type=int, default=4, help="1: one trainer on every row")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128, help="federate's default local batch")
    parser.add_argument("--lr", type=float, default=0.05, help="the preset small's")
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, help="local steps per round instead of epochs")
    parser.add_argument("--strategy", default="fedavg")
    parser.add_argument("--clipping", default="median", choices=("median", "none"))
    parser.add_argument("--rows", default="all", choices=("all", "touching"))
    parser.add_argument(
        "--server-lr", type=float, default=1.0, help="the global model moves by this x the mean"
    )
    parser.add_argument(
        "--server-momentum", type=float, default=0.0, help="FedAvgM (Hsu et al. 2019): beta"
    )
    parser.add_argument(
        "--tables-server-lr", type=float, help="the tables' server step (default: --server-lr)"
    )
    parser.add_argument(
        "--accumulators",
        default="reset",
        choices=("local", "reset", "shared", "shared-rows"),
        help="the parties' Adagrad accumulators: zeroed every round, as a party does (reset), "
        "kept by each party across rounds, as it did before (local), or summed over the "
        "parties every round (shared; shared-rows: the tables' only)",
    )
    parser.add_argument("--stats", action="store_true")
    args = parser.parse_args()

    from enclaverec.app.centralized import start_tensorflow_threads
    from enclaverec.app.data import DataConfig, load_data
    from enclaverec.arrays import ModelLayout, delta, sparsify
    from enclaverec.data.partition import partition_dataset
    from enclaverec.data.sources import DataSelection
    from enclaverec.dlrm.config import PRESETS, OptimizerKind, Preset
    from enclaverec.dlrm.weights import EMBEDDING_PREFIX
    from enclaverec.federated.strategies import Clipping, StrategyConfig, make_strategy
    from enclaverec.paramservice.combine import RowNormalisation
    from enclaverec.training import FitConfig

    selection = (
        DataSelection(dataset=args.dataset) if args.dataset else DataSelection(paths=(args.data,))
    )
    dataset = load_data(DataConfig(selection, seed=0, table_size=args.table_size), progress=False)
    start_tensorflow_threads()
    from enclaverec.evaluation import evaluate_split
    from enclaverec.model.dlrm_trainer import DLRMTrainer, DLRMTrainerConfig

    preset = PRESETS[Preset.SMALL]
    trainer_config = DLRMTrainerConfig(
        model=preset.model,
        optimizer=OptimizerKind.ADAGRAD,
        init_seed=0,
        jit_compile=preset.jit_compile,
    )
    shares = (
        [dataset]
        if args.parties == 1
        else partition_dataset(dataset, parties=args.parties, mode="iid", seed=0)
    )
    trainers = [DLRMTrainer(dataset.spec, trainer_config, share.train) for share in shares]
    glob = trainers[0].initial_arrays()
    layout = ModelLayout.of(glob, tables=[n for n in glob if n.startswith(EMBEDDING_PREFIX)])
    parsed = StrategyConfig.parse(args.strategy, clipping=Clipping(args.clipping))
    rows = RowNormalisation(args.rows)
    strategy = make_strategy(StrategyConfig(parsed.name, parsed.options, parsed.clipping, rows))
    print(f"{vars(args)}; {len(dataset.train):,} training rows", flush=True)
    best = (0, -1.0, -1.0)
    momentum = {name: np.zeros_like(value) for name, value in glob.items()}
    for round_index in range(1, args.rounds + 1):
        started = time.monotonic()
        updates = []
        # The round's starting state, from which the shared modes sum the increments.
        start = _accumulators(trainers[0]) if args.accumulators.startswith("shared") else None
        for trainer in trainers:
            config = FitConfig(
                batch_size=args.batch,
                learning_rate=args.lr,
                epochs=args.local_epochs,
                seed=0,
                round_index=round_index,
                max_steps=args.max_steps,
                # reset: what a party does (the trainer's own restart of its optimizer).
                restart_optimizer=args.accumulators == "reset",
            )
            trained, metrics = trainer.fit(glob, config)
            if args.stats and round_index <= 2:
                local = evaluate_split(trainer, trained, dataset.validation).auc
                print(f"  a party's local model: validation AUC {local:.4f}", flush=True)
            updates.append(
                sparsify(
                    delta(trained, glob),
                    layout,
                    metrics.samples // args.local_epochs,
                    dense_when_smaller=rows is RowNormalisation.ALL_CONTRIBUTORS,
                )
            )
        if start is not None:
            # every party continues from the start plus the sum of the round's increments
            shared = [a.copy() for a in start]
            for trainer in trainers:
                for total, now, before in zip(shared, _accumulators(trainer), start, strict=True):
                    total += now - before
            for trainer in trainers:
                own = _accumulators(trainer)
                if args.accumulators == "shared-rows":
                    shared = [shared[0], *own[1:]]
                _set_accumulators(trainer, shared)
        if args.stats and len(updates) > 1 and round_index <= 2:
            for label, tables in (("dense", False), ("tables", True)):
                vectors = [_flat(u, layout, glob, tables) for u in updates]
                print(f"  {label}: {_cosine_summary(vectors)}", flush=True)
        combined = (
            updates[0]
            if len(updates) == 1
            else strategy.aggregate(updates, layout, [f"party-{i}" for i in range(len(updates))])
        )
        moved = {}
        for name, value in glob.items():
            step = np.zeros_like(value)
            if name in combined.dense:
                step += combined.dense[name]
            else:
                step[combined.sparse[name].row_ids] += combined.sparse[name].values
            momentum[name] = args.server_momentum * momentum[name] + step
            rate = args.server_lr
            if name.startswith(EMBEDDING_PREFIX) and args.tables_server_lr is not None:
                rate = args.tables_server_lr
            moved[name] = value + rate * momentum[name]
        glob = moved
        validation = evaluate_split(trainers[0], glob, dataset.validation).auc
        test = evaluate_split(trainers[0], glob, dataset.test).auc
        if validation > best[1]:
            best = (round_index, validation, test)
        print(
            f"round {round_index}: validation AUC {validation:.4f}, test AUC {test:.4f} "
            f"({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    print(f"best round {best[0]}: validation AUC {best[1]:.4f}, test AUC {best[2]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
