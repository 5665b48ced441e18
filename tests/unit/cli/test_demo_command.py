"""``enclaverec demo`` prints its table from the runners in ``app.demo.MODES`` and refuses,
before any training, a mode folder it did not make."""

from __future__ import annotations

import json

from enclaverec.app import demo
from enclaverec.evaluation import BinaryMetrics
from enclaverec.report import Mode, build_metrics
from enclaverec.tee.kinds import TEEKind
from enclaverec.training import EvalRecord


def fake_runner(mode: Mode, tee: TEEKind, auc: float, calls: list[str] | None = None):
    def run(context: demo.DemoContext, folder):
        assert context.dataset.name == "movielens-100k" and context.seed == demo.DEMO_SEED
        assert (folder / ".enclaverec-demo").is_file()  # the folder is marked as the demo's
        if calls is not None:
            calls.append(folder.name)
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


def fake_modes(calls: list[str] | None = None) -> tuple[demo.DemoMode, ...]:
    return (
        demo.DemoMode("centralized", fake_runner(Mode.CENTRALIZED, TEEKind.NONE, 0.78, calls)),
        demo.DemoMode(
            "federated-simulated", fake_runner(Mode.FEDERATED, TEEKind.SIMULATED, 0.779, calls)
        ),
    )


def test_each_runner_is_a_row_of_the_table_and_the_report(run_cli, monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "MODES", fake_modes())
    code, out, _ = run_cli("demo", "--output", tmp_path)
    assert code == 0
    assert "centralized" in out and "federated" in out and "0.7790" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["mode"] for row in report["summary"]] == ["centralized", "federated"]
    markdown = (tmp_path / "report.md").read_text()
    assert "| federated | simulated | 0.7790 | 0.5600 | 1,234 | 9.5 |" in markdown


def test_a_rerun_replaces_the_demos_own_folders(run_cli, monkeypatch, tmp_path):
    calls: list[str] = []
    monkeypatch.setattr(demo, "MODES", fake_modes(calls))
    assert run_cli("demo", "--output", tmp_path)[0] == 0
    (tmp_path / "centralized" / "stale.txt").write_text("from the previous run")
    assert run_cli("demo", "--output", tmp_path)[0] == 0
    assert calls == ["centralized", "federated-simulated"] * 2
    assert not (tmp_path / "centralized" / "stale.txt").exists()


def test_a_folder_the_demo_did_not_make_stops_it_before_training(run_cli, monkeypatch, tmp_path):
    calls: list[str] = []
    monkeypatch.setattr(demo, "MODES", fake_modes(calls))
    mine = tmp_path / "federated-simulated"
    mine.mkdir()
    (mine / "federation").mkdir()
    (mine / "federation" / "federation.toml").write_text("# a user's own federation\n")
    code, _, err = run_cli("demo", "--output", tmp_path)
    assert code == 2
    assert str(mine) in " ".join(err.split()) and "did not make" in err
    assert calls == []  # not even the centralized mode ran
    assert (mine / "federation" / "federation.toml").read_text() == "# a user's own federation\n"


def test_the_demo_starts_with_the_centralized_baseline():
    assert demo.MODES[0].runner is demo.centralized_mode
    assert [mode.folder for mode in demo.MODES] == [
        "centralized",
        "federated-simulated",
        "federated-none",
        "distributed-simulated",
        "distributed-none",
    ]
