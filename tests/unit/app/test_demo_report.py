"""Issue 11 item 14: the demo's ``report.md`` describes each mode from its own report
(parties or workers, rounds or epochs, best round or epoch, bytes per round, its curves as a
relative image link), says what samples/s counts, and lists the secret files under the
demo's folder, which is for this machine only."""

from __future__ import annotations

import re

from enclaverec.app import demo
from enclaverec.evaluation import BinaryMetrics
from enclaverec.report import Mode, build_metrics
from enclaverec.tee.kinds import TEEKind
from enclaverec.training import EvalRecord


def runner(mode: Mode, tee: TEEKind, unit: str, count: int, extra: dict, files: tuple = ()):
    def run(context: demo.DemoContext, folder):
        (folder / "curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        for name in files:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"secret")
        history = [EvalRecord(unit, i, 0.7, 0.5, float(i)) for i in range(1, count + 1)]
        return build_metrics(
            mode=mode,
            tee=tee,
            dataset=context.dataset.name,
            preset="small",
            optimizer="adagrad",
            seed=context.seed,
            test=BinaryMetrics(
                auc=0.77, logloss=0.56, accuracy=0.71, rows=len(context.dataset.test)
            ),
            test_split_sha256="ab" * 32,
            history=history,
            best_index=2,
            train_samples_per_second=1234.0,
            wall_seconds=9.5,
            extra={"oracle_auc": 0.8, "baseline_logreg_auc": 0.75, **extra},
        )

    return run


MODES = (
    demo.DemoMode("centralized", runner(Mode.CENTRALIZED, TEEKind.NONE, "epoch", 3, {})),
    demo.DemoMode(
        "federated-simulated",
        runner(
            Mode.FEDERATED, TEEKind.SIMULATED, "round", 4,
            {"parties": 4, "rounds_completed": 4, "attested_peers": 5,
             "update_bytes_per_party_per_round": 213414.0},
            files=("federation/simulation/keys/attestation.key",
                   "federation/party-0/identity.key", "federation/party-0/identity.pass",
                   "federation/party-0/identity.key.pub", "federation/aggregator/tls.sealed",
                   "federation/party-0/data/train.npz", "federation/federation.toml"),
        ),
    ),
    # A mode that joins later (distributed) is described from its own keys.
    demo.DemoMode(
        "distributed-simulated",
        runner(Mode.DISTRIBUTED, TEEKind.SIMULATED, "step", 2,
               {"workers": 3, "steps_completed": 2, "attested_peers": 4}),
    ),
)  # fmt: skip


def sections(markdown: str) -> dict[str, str]:
    parts = re.split(r"^## ", markdown, flags=re.M)
    return {part.splitlines()[0]: part for part in parts[1:]}


def test_report_describes_each_mode_and_its_secrets(tmp_path):
    result = demo.run_demo(demo.DemoConfig(output=tmp_path, dataset="synthetic"), modes=MODES)
    markdown = result.markdown.read_text()
    by_heading = sections(markdown)

    centralized = by_heading["centralized"]
    assert "- epochs: 3" in centralized and "- best epoch: 2" in centralized
    assert "![centralized: validation AUC and losses](centralized/curves.png)" in centralized

    federated = by_heading["federated-simulated"]
    assert "- parties: 4" in federated and "- rounds: 4" in federated
    assert "- best round: 2" in federated
    assert "- update bytes per party per round: 213,414" in federated
    assert "(federated-simulated/curves.png)" in federated

    distributed = by_heading["distributed-simulated"]
    assert "- workers: 3" in distributed and "- best step: 2" in distributed

    # What samples/s counts, and why a federation can show more of them in more wall time.
    assert "What samples/s counts" in markdown
    assert "training* time" in markdown and "the wall time includes" in markdown

    secrets = by_heading["Secrets under this folder"]
    assert "for this machine only" in secrets
    for secret in (
        "federated-simulated/federation/simulation/keys/attestation.key",
        "federated-simulated/federation/party-0/identity.key`",
        "federated-simulated/federation/party-0/identity.pass",
        "federated-simulated/federation/aggregator/tls.sealed",
        "federated-simulated/federation/party-0/data/train.npz",
    ):
        assert secret in secrets, secret
    # Public files are not called secret.
    assert "identity.key.pub" not in secrets and "federation.toml" not in secrets
    # The simulated deployment key is listed once, under the deployment's keys.
    assert secrets.count("attestation.key") == 1


def test_image_links_are_relative_and_point_at_files(tmp_path):
    result = demo.run_demo(demo.DemoConfig(output=tmp_path, dataset="synthetic"), modes=MODES)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", result.markdown.read_text())
    assert len(links) == len(MODES)
    for link in links:
        assert not link.startswith("/") and (tmp_path / link).is_file()
