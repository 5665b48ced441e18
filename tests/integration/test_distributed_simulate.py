"""``distributed simulate``: the owner, the key broker, two parameter servers and two
workers as separate processes (simulated TEE, tiny Criteo file, the numpy logistic
regression so that no process imports TensorFlow). The run's report, and a scan of
everything on the cluster's side for training rows and model weights in the clear."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from enclaverec.app.data import DataConfig, load_data
from enclaverec.app.distributed import (
    JOB_DIR,
    LOGS_DIR,
    SHARDS_DIR,
    DistributedSimulationConfig,
    PlanOptions,
    simulate_distributed,
)
from enclaverec.data.schema import split_sha256
from enclaverec.data.sources import DataSelection
from enclaverec.report import validate_metrics

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

ROWS = 1600
TABLE_SIZE = 64


def criteo_file(path: Path, rows: int = ROWS, seed: int = 3) -> Path:
    """Criteo-format rows whose label depends on the first integer feature and the
    first category (so the model learns something)."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(rows):
        ints = rng.integers(0, 50, size=13)
        cats = [f"{value:08x}" for value in rng.integers(0, 2**32, size=26)]
        logit = (ints[0] - 25) / 8 + (int(cats[0], 16) % 3 == 0) - 0.3
        label = int(rng.random() < 1 / (1 + np.exp(-logit)))
        lines.append("\t".join([str(label), *map(str, ints), *cats]))
    path.write_text("\n".join(lines) + "\n")
    return path


def data_config(path: Path) -> DataConfig:
    return DataConfig(DataSelection(paths=(path,)), seed=0, table_size=TABLE_SIZE)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("simulate")
    data = criteo_file(folder / "day.tsv")
    config = DistributedSimulationConfig(
        data=data_config(data),
        plan=PlanOptions(workers=2, paramservers=2, model="logreg", epochs=2, batch_size=128),
        output=folder / "run",
    )
    return data, simulate_distributed(config)


def test_the_report_has_the_distributed_keys_and_trains_the_test_rows_of_train(run):
    data, result = run
    metrics = json.loads((result.output / "metrics.json").read_text())
    validate_metrics(metrics)
    dataset = load_data(data_config(data), progress=False)
    steps_per_epoch = -(-len(dataset.train) // 128)
    assert metrics["mode"] == "distributed" and metrics["tee"] == "simulated"
    assert metrics["workers"] == 2 and metrics["paramservers"] == 2
    assert metrics["steps_completed"] == steps_per_epoch * metrics["epochs_completed"]
    assert metrics["attested_peers"] == 4  # two workers and two servers enrolled with evidence
    assert metrics["bytes_per_step_per_worker"] > 0
    assert metrics["test_split_sha256"] == split_sha256(dataset.test.row_ids)
    assert metrics["test_rows"] == len(dataset.test)
    assert set(metrics["step_seconds_median"]) == {"wait", "pull", "compute", "push", "total"}
    assert (result.output / "curves.png").stat().st_size > 0
    assert all(worker["steps"] == metrics["steps_completed"] for worker in result.workers)


def _cluster_files(output: Path) -> list[Path]:
    """Everything the cluster's hosts hold: the key broker's, servers' and workers'
    folders, the encrypted shards, the job's configurations and every role's log (not
    the owner's folder, nor its key)."""
    job = output / JOB_DIR
    roots = [output / LOGS_DIR, output / SHARDS_DIR, job / "keybroker"]
    roots += sorted(job.glob("ps-*")) + sorted(job.glob("worker-*")) + [job / "job.toml"]
    files = []
    for root in roots:
        files += [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    return files


def _patterns(data: Path, model) -> dict[str, bytes]:
    """Byte patterns that would show plaintext: each training row's text line and its
    dense features as float32 and categories as int32; and runs of the trained model's
    float32 weights (non-zero, so not a run of an untouched row)."""
    dataset = load_data(data_config(data), progress=False)
    lines = data.read_bytes().splitlines()
    patterns = {}
    for index, row in enumerate(dataset.train.row_ids[:200]):
        patterns[f"row {row} text"] = lines[int(row)]
        patterns[f"row {row} dense"] = np.asarray(dataset.train.dense[index], "<f4").tobytes()
        patterns[f"row {row} ids"] = np.asarray(dataset.train.categorical[index], "<i4").tobytes()
    patterns["linear/kernel"] = np.asarray(model["linear/kernel"], "<f4").tobytes()
    for name, value in model.items():
        flat = np.asarray(value, "<f4").ravel()
        for start in range(0, len(flat) - 4, max(1, len(flat) // 5)):
            window = flat[start : start + 4]
            if np.all(window != 0):
                patterns[f"{name}[{start}:{start + 4}]"] = window.tobytes()
    return patterns


def _scan(files: list[Path], patterns: dict[str, bytes]) -> list[str]:
    found = []
    for path in files:
        content = path.read_bytes()
        found += [f"{what} in {path}" for what, pattern in patterns.items() if pattern in content]
    return found


def test_no_training_row_and_no_weight_in_the_clear_on_the_cluster(run, tmp_path):
    data, result = run
    files = _cluster_files(result.output)
    patterns = _patterns(data, result.model)
    assert len(files) > 10 and len(patterns) > 600
    assert sum(1 for name in patterns if name.startswith("embedding/")) >= 10
    assert _scan(files, patterns) == []
    # The scan finds what it looks for: a file holding a row and a weight run is caught.
    leaked = tmp_path / "leak.bin"
    first_row = next(iter(patterns))
    leaked.write_bytes(b"header" + patterns[first_row] + b"--" + patterns["linear/kernel"])
    found = {line.split(" in ")[0] for line in _scan([leaked], patterns)}
    assert {first_row, "linear/kernel"} <= found


def test_the_plaintext_baseline_runs_the_same_job_and_says_so(tmp_path):
    data = criteo_file(tmp_path / "day.tsv", rows=800)
    out = tmp_path / "run"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "enclaverec.cli.main",
            "distributed",
            "simulate",
            "--data",
            str(data),
            "--table-size",
            str(TABLE_SIZE),
            "--model",
            "logreg",
            "--epochs",
            "1",
            "--ps",
            "1",
            "--tee",
            "none",
            "--output",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert "measurement baseline" in " ".join(completed.stderr.split())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tee"] == "none" and metrics["attested_peers"] == 0
    assert metrics["mode"] == "distributed" and metrics["paramservers"] == 1
    assert "distributed sync (none): test AUC" in completed.stdout


def test_refuses_a_used_output_folder_before_any_work(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("x")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "enclaverec.cli.main",
            "distributed",
            "simulate",
            "--dataset",
            "synthetic",
            "--output",
            str(tmp_path / "used"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == ["keep.txt"]
