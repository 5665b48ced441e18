"""``enclaverec train``, ``evaluate`` and ``demo`` end to end through the CLI, training
the TensorFlow DLRM for real (slow: tens of seconds each)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from enclaverec.report import COMMON_KEYS, validate_metrics

pytestmark = pytest.mark.slow


def read_json(path):
    return json.loads(path.read_text())


def test_train_synthetic_writes_the_contract_metrics(run_cli, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run_cli("train", "--dataset", "synthetic", "--epochs", "2", "--output", out)
    assert code == 0, stdout
    metrics = read_json(out / "metrics.json")
    validate_metrics(metrics)
    assert set(COMMON_KEYS) | {"best_epoch", "oracle_auc", "baseline_logreg_auc"} <= set(metrics)
    assert (metrics["mode"], metrics["tee"], metrics["dataset"]) == (
        "centralized",
        "none",
        "synthetic",
    )
    assert (metrics["preset"], metrics["optimizer"], metrics["seed"]) == ("small", "adagrad", 0)
    assert [entry["epoch"] for entry in metrics["history"]] == [1, 2]
    # The interactions matter: the DLRM beats the logistic baseline, and nothing beats the
    # planted model itself.
    assert metrics["baseline_logreg_auc"] < metrics["test_auc"] < metrics["oracle_auc"]
    assert (out / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert "test AUC" in stdout


def criteo_line(rng, label, row, *, unseen_category):
    integers = [str(int(v)) if rng.random() > 0.2 else "" for v in rng.poisson(3, 13)]
    categories = [f"{rng.integers(0, 40):08x}" if rng.random() > 0.1 else "" for _ in range(26)]
    # C1 carries the signal; C26 is a fresh category on every row, so every test row
    # has a category that training never saw.
    categories[0] = f"{(2 * rng.integers(0, 20) + label):08x}"
    categories[25] = f"{unseen_category:08x}"
    return "\t".join([str(label), *integers, *categories])


def write_clicks(path, rows=3000, seed=0):
    rng = np.random.default_rng(seed)
    lines = []
    for row in range(rows):
        label = int(rng.random() < 0.35)
        if rng.random() < 0.15:  # a noisy label: the task is learnable, not trivial
            label = 1 - label
        lines.append(criteo_line(rng, label, row, unseen_category=0x10000000 + row))
    lines.insert(1234, "1\tnot-a-number" + "\t" * 38)  # one malformed line
    path.write_text("\n".join(lines) + "\n")


def test_train_criteo_file_then_evaluate_the_export(run_cli, tmp_path):
    data = tmp_path / "clicks.tsv"
    write_clicks(data)
    out, model = tmp_path / "run", tmp_path / "model"
    code, stdout, err = run_cli(
        "train",
        "--data",
        data,
        "--table-size",
        "1000",
        "--epochs",
        "2",
        "--on-bad-line",
        "skip",
        "--output",
        out,
        "--export",
        model,
    )
    assert code == 0, err
    assert "preset: small (training split has" in " ".join(err.split())
    metrics = read_json(out / "metrics.json")
    validate_metrics(metrics)
    assert metrics["dataset"] == "criteo:clicks.tsv"
    assert metrics["bad_lines_skipped"] == 1
    assert metrics["test_auc"] > 0.7  # C1 separates the labels up to the 15% noise

    evaluation = tmp_path / "evaluation"
    code, _, err = run_cli(
        "evaluate",
        "--model",
        model,
        "--data",
        data,
        "--on-bad-line",
        "skip",
        "--output",
        evaluation,
    )
    assert code == 0, err
    scored = read_json(evaluation / "evaluation.json")
    assert scored["test_split_sha256"] == metrics["test_split_sha256"]
    assert scored["test_rows"] == metrics["test_rows"]
    assert scored["test_auc"] == pytest.approx(metrics["test_auc"], abs=1e-6)
    assert scored["test_logloss"] == pytest.approx(metrics["test_logloss"], abs=1e-6)


def test_a_malformed_line_fails_by_default_with_file_and_line(run_cli, tmp_path):
    data = tmp_path / "clicks.tsv"
    write_clicks(data, rows=2000)
    code, _, err = run_cli("train", "--data", data, "--output", tmp_path / "run")
    assert code == 2
    assert f"{data}:1235" in " ".join(err.split())


def test_demo_reaches_the_movielens_target(run_cli, tmp_path):
    code, stdout, err = run_cli("demo", "--output", tmp_path)
    assert code == 0, err
    report = read_json(tmp_path / "report.json")
    central, federated, baseline, distributed, distributed_none = report["summary"]
    assert (central["mode"], central["tee"]) == ("centralized", "none")
    assert (federated["mode"], federated["tee"]) == ("federated", "simulated")
    assert (baseline["mode"], baseline["tee"]) == ("federated", "none")
    assert central["test_auc"] >= 0.775
    # The secure scheme matches plaintext training (the README reports the exact figures;
    # the test leaves room for floating-point differences between machines).
    assert abs(federated["test_auc"] - central["test_auc"]) < 0.01
    assert federated["test_auc"] == pytest.approx(baseline["test_auc"], abs=1e-6)
    assert (distributed["mode"], distributed["tee"]) == ("distributed", "simulated")
    assert (distributed_none["mode"], distributed_none["tee"]) == ("distributed", "none")
    # Synchronous distributed training is train's run up to floating-point summation order.
    for row in (distributed, distributed_none):
        assert abs(row["test_auc"] - central["test_auc"]) < 0.002
    assert (tmp_path / "report.md").read_text().startswith("# enclaverec demo")
    runs = {
        name: read_json(tmp_path / name / "metrics.json")
        for name in (
            "centralized",
            "federated-simulated",
            "federated-none",
            "distributed-simulated",
            "distributed-none",
        )
    }
    for metrics in runs.values():
        validate_metrics(metrics)
    # Every mode is scored on the same test rows.
    assert len({m["test_split_sha256"] for m in runs.values()}) == 1
    assert (
        runs["federated-simulated"]["attested_peers"]
        and not runs["federated-none"]["attested_peers"]
    )
    assert runs["distributed-simulated"]["attested_peers"] == 3  # 2 workers, 1 server
    assert runs["distributed-none"]["attested_peers"] == 0
    assert "centralized" in stdout and "federated" in stdout and "distributed" in stdout


def test_bench_train_writes_its_figures(run_cli, tmp_path):
    out = tmp_path / "bench.json"
    code, stdout, err = run_cli(
        "bench",
        "train",
        "--batch-sizes",
        "16,32",
        "--steps",
        "3",
        "--repeats",
        "2",
        "--output",
        out,
    )
    assert code == 0, err
    report = read_json(out)
    assert [row["batch_size"] for row in report["results"]] == [16, 32]
    for row in report["results"]:
        assert (row["steps"], row["repeats"]) == (3, 2)
        for way in ("compute", "end_to_end"):
            runs = row[f"{way}_runs_samples_per_second"]
            assert len(runs) == 2 and min(runs) > 0
            assert row[f"{way}_best_samples_per_second"] == max(runs)
            assert row[f"{way}_samples_per_second"] == pytest.approx(sum(runs) / 2)
    assert report["shape"]["tables"] == 26 and report["shape"]["rows_per_table"] == 100_000
    assert set(report["threads"]) == {"intra_op", "inter_op"}
    assert report["peak_rss_mb"] > 100  # the 26 tables alone hold 166 MB
    assert "compute samples/s" in stdout
