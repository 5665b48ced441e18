"""``enclaverec demo`` assembles its table and report from the runners in MODES."""

from __future__ import annotations

import json

from enclaverec.cli.commands import demo
from enclaverec.evaluation import BinaryMetrics
from enclaverec.report import Mode, TEEKind, build_metrics
from enclaverec.trainer import EvalRecord


def fake_runner(mode: Mode, tee: TEEKind, auc: float):
    def run(context: demo.DemoContext):
        assert context.dataset.name == "movielens-100k" and context.seed == demo.DEMO_SEED
        extra = {}
        if mode is Mode.FEDERATED:
            extra = {"parties": 3, "rounds_completed": 5, "attested_peers": 4}
        return build_metrics(
            mode=mode,
            tee=tee,
            dataset=context.dataset.name,
            preset="small",
            optimizer="adagrad",
            seed=context.seed,
            test=BinaryMetrics(
                auc=auc, logloss=0.56, accuracy=0.71, rows=len(context.dataset.test)
            ),
            test_split_sha256="ab" * 32,
            history=[EvalRecord("round", 1, auc, 0.56, 2.0)],
            best_index=1,
            train_samples_per_second=1234.0,
            wall_seconds=9.5,
            extra=extra,
        )

    return run


def test_each_runner_is_a_row_of_the_table_and_the_report(run_cli, monkeypatch, tmp_path):
    monkeypatch.setattr(
        demo,
        "MODES",
        (
            fake_runner(Mode.CENTRALIZED, TEEKind.NONE, 0.78),
            fake_runner(Mode.FEDERATED, TEEKind.SIMULATED, 0.779),
        ),
    )
    code, out, _ = run_cli("demo", "--output", tmp_path)
    assert code == 0
    assert "centralized" in out and "federated" in out and "0.7790" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["mode"] for row in report["summary"]] == ["centralized", "federated"]
    markdown = (tmp_path / "report.md").read_text()
    assert "| federated | simulated | 0.7790 | 0.5600 | 1,234 | 9.5 |" in markdown


def test_the_demo_starts_with_the_centralized_baseline():
    assert demo.MODES[0] is demo.centralized_mode
