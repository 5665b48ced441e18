from __future__ import annotations

import importlib.metadata
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest


def criteo_line(rng: random.Random) -> str:
    ints = [rng.choice(["", str(rng.randint(-2, 5000))]) for _ in range(13)]
    cats = [rng.choice(["", f"{rng.getrandbits(32):08x}"]) for _ in range(26)]
    return "\t".join([str(rng.randint(0, 1)), *ints, *cats])


@pytest.fixture
def criteo(tmp_path) -> Path:
    rng = random.Random(21)
    path = tmp_path / "day_0.tsv"
    path.write_text("".join(criteo_line(rng) + "\n" for _ in range(800)))
    return path


@pytest.fixture
def bad_criteo(criteo) -> Path:
    lines = criteo.read_bytes().split(b"\n")
    lines[41] = b"1\tnot\tenough"
    criteo.write_bytes(b"\n".join(lines))
    return criteo


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_the_data_set_choices_come_from_the_registry(run_cli):
    from enclaverec.data.registry import dataset_names

    code, _, err = run_cli("data", "prepare", "--dataset", "imagenet", "--output", "x")
    assert code == 2
    assert ", ".join(dataset_names()) in one_line(err)


@pytest.mark.parametrize("command", ["prepare", "partition"])
def test_help_says_the_files_hold_plaintext(command):
    out = subprocess.run(
        [sys.executable, "-m", "enclaverec.cli.main", "data", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "plaintext" in out and "own" in out and "data encrypt" in out


def test_prepare_writes_a_prepared_folder(run_cli, criteo, tmp_path):
    code, out, err = run_cli(
        "data",
        "prepare",
        "--data",
        criteo,
        "--output",
        tmp_path / "prep",
        "--seed",
        "3",
        "--table-size",
        "1000",
    )
    assert code == 0, err
    spec = json.loads((tmp_path / "prep" / "spec.json").read_text())
    assert spec["dataset"] == "criteo:day_0.tsv" and spec["seed"] == 3
    assert spec["hashing"]["table_sizes"] == [1000] * 26
    assert f"test_split_sha256: {spec['test_split_sha256']}" in out
    assert "own premises" in out


def test_prepare_movielens(run_cli, tmp_path):
    try:
        importlib.metadata.distribution("recbole")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("recbole is not installed")
    code, out, err = run_cli(
        "data", "prepare", "--dataset", "movielens-100k", "--output", tmp_path / "ml"
    )
    assert code == 0, err
    spec = json.loads((tmp_path / "ml" / "spec.json").read_text())
    assert sum(spec["rows"].values()) == 100_000


def test_bad_line_exits_2_with_file_and_line(run_cli, bad_criteo, tmp_path):
    code, out, err = run_cli("data", "prepare", "--data", bad_criteo, "--output", tmp_path / "p")
    assert code == 2
    line = one_line(err)
    assert f"{bad_criteo}:42: expected 40 tab-separated fields, got 3" in line
    assert not (tmp_path / "p").exists()


def test_skip_mode_reports_the_count_and_succeeds(run_cli, bad_criteo, tmp_path):
    code, out, err = run_cli(
        "data",
        "prepare",
        "--data",
        bad_criteo,
        "--output",
        tmp_path / "p",
        "--on-bad-line",
        "skip",
    )
    assert code == 0
    assert "skipped 1 malformed line(s)" in err and f"{bad_criteo}:42:" in err


def test_unknown_data_set_exits_2_naming_the_valid_ones(run_cli, tmp_path):
    code, out, err = run_cli("data", "prepare", "--dataset", "imagenet", "--output", tmp_path / "p")
    assert code == 2
    assert "synthetic, movielens-100k" in one_line(err)


def test_missing_file_exits_2(run_cli, tmp_path):
    code, out, err = run_cli(
        "data", "prepare", "--data", tmp_path / "nope.tsv", "--output", tmp_path / "p"
    )
    assert code == 2 and "data file not found" in one_line(err)


def test_a_non_empty_output_exits_2(run_cli, criteo, tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "mine.txt").write_text("x")
    code, out, err = run_cli("data", "prepare", "--data", criteo, "--output", tmp_path / "p")
    assert code == 2 and "refusing to write into the non-empty folder" in one_line(err)


def test_table_size_with_a_builtin_set_exits_2(run_cli, tmp_path):
    code, out, err = run_cli(
        "data",
        "prepare",
        "--dataset",
        "synthetic",
        "--table-size",
        "10",
        "--output",
        tmp_path / "p",
    )
    assert code == 2 and "--table-size applies to --data" in one_line(err)


def test_missing_recbole_exits_2_with_the_install_command(run_cli, tmp_path, monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    code, out, err = run_cli(
        "data", "prepare", "--dataset", "movielens-100k", "--output", tmp_path / "p"
    )
    assert code == 2
    assert "pip install --no-deps recbole==1.2.1" in one_line(err)


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "prepare", "--output", "x"],  # no source
        ["data", "prepare", "--dataset", "synthetic", "--data", "f", "--output", "x"],
        ["data", "prepare", "--dataset", "synthetic", "--output", "x", "--seed", "abc"],
        ["data", "prepare", "--data", "f", "--output", "x", "--on-bad-line", "ignore"],
        [
            "data",
            "partition",
            "--dataset",
            "synthetic",
            "--output",
            "x",
            "--parties",
            "two",
            "--partition",
            "iid",
        ],
    ],
)
def test_malformed_flags_exit_2(run_cli, argv):
    with pytest.raises(SystemExit) as excinfo:
        run_cli(*argv)
    assert excinfo.value.code == 2


def test_partition_writes_one_folder_per_party(run_cli, criteo, tmp_path):
    code, out, err = run_cli(
        "data",
        "partition",
        "--data",
        criteo,
        "--parties",
        "3",
        "--partition",
        "dirichlet:0.5",
        "--output",
        tmp_path / "fed",
        "--table-size",
        "1000",
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "fed" / "partition.json").read_text())
    assert summary["parties"] == 3 and summary["mode"] == "dirichlet:0.5"
    for i in range(3):
        assert (tmp_path / "fed" / f"party-{i}" / "spec.json").is_file()
        assert f"party-{i}: train" in out
    assert f"global test_split_sha256: {summary['global_test_split_sha256']}" in out


def test_partition_of_a_prepared_folder_keeps_its_split(run_cli, criteo, tmp_path):
    assert (
        run_cli("data", "prepare", "--data", criteo, "--output", tmp_path / "p", "--seed", "5")[0]
        == 0
    )
    code, out, err = run_cli(
        "data",
        "partition",
        "--prepared",
        tmp_path / "p",
        "--parties",
        "2",
        "--partition",
        "iid",
        "--output",
        tmp_path / "fed",
    )
    assert code == 0, err
    prepared = json.loads((tmp_path / "p" / "spec.json").read_text())
    summary = json.loads((tmp_path / "fed" / "partition.json").read_text())
    assert summary["global_test_split_sha256"] == prepared["test_split_sha256"]
    assert summary["seed"] == 5 and summary["partition_seed"] == 5


def test_partition_by_user_of_criteo_files_exits_2(run_cli, criteo, tmp_path):
    code, out, err = run_cli(
        "data",
        "partition",
        "--data",
        criteo,
        "--parties",
        "2",
        "--partition",
        "by-user",
        "--output",
        tmp_path / "fed",
    )
    assert code == 2 and "no user column" in one_line(err)


def test_partition_with_a_malformed_mode_exits_2_before_loading(run_cli, tmp_path):
    code, out, err = run_cli(
        "data",
        "partition",
        "--data",
        tmp_path / "never-read.tsv",
        "--parties",
        "2",
        "--partition",
        "dirichlet:-1",
        "--output",
        tmp_path / "fed",
    )
    assert code == 2 and "bad partition mode 'dirichlet:-1'" in one_line(err)


def test_inspect_criteo_file_as_json(run_cli, criteo):
    code, out, err = run_cli("data", "inspect", criteo, "--json", "--table-size", "1000")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["dataset"] == "criteo:day_0.tsv" and summary["rows"]["total"] == 800
    assert len(summary["categorical_features"]) == 26
    assert summary["bad_lines_skipped"] == 0


def test_inspect_gives_the_same_test_split_as_prepare(run_cli, criteo, tmp_path):
    assert run_cli("data", "prepare", "--data", criteo, "--output", tmp_path / "p")[0] == 0
    direct = json.loads(run_cli("data", "inspect", criteo, "--json")[1])
    folder = json.loads(run_cli("data", "inspect", tmp_path / "p", "--json")[1])
    assert direct["test_split_sha256"] == folder["test_split_sha256"]
    assert direct["rows"] == folder["rows"]


def test_inspect_a_partitioned_folder(run_cli, criteo, tmp_path):
    run_cli(
        "data",
        "partition",
        "--data",
        criteo,
        "--parties",
        "2",
        "--partition",
        "iid",
        "--output",
        tmp_path / "fed",
    )
    code, out, err = run_cli("data", "inspect", tmp_path / "fed")
    assert code == 0, err
    assert "union of parties' test rows is the global test split: True" in out


def test_inspect_a_builtin_set_as_a_table(run_cli, monkeypatch):
    from enclaverec.data import synthetic

    small = synthetic.SyntheticConfig(num_rows=2000)
    monkeypatch.setattr(synthetic, "SyntheticConfig", lambda: small)
    code, out, err = run_cli("data", "inspect", "synthetic")
    assert code == 0, err
    assert "data set: synthetic (seed 0)" in out and "oracle_auc" in out


def test_inspect_bad_line_exits_2(run_cli, bad_criteo):
    code, out, err = run_cli("data", "inspect", bad_criteo)
    assert code == 2 and f"{bad_criteo}:42:" in one_line(err)


def test_inspect_a_folder_that_is_not_prepared_exits_2(run_cli, tmp_path):
    code, out, err = run_cli("data", "inspect", tmp_path)
    assert code == 2 and "not a prepared data folder" in one_line(err)


def test_inspect_refuses_loading_flags_for_a_prepared_folder(run_cli, criteo, tmp_path):
    run_cli("data", "prepare", "--data", criteo, "--output", tmp_path / "p")
    code, out, err = run_cli("data", "inspect", tmp_path / "p", "--seed", "1")
    assert code == 2 and "do not apply" in one_line(err)


def test_inspect_an_encrypted_file_shows_its_header_only(run_cli, criteo, tmp_path):
    from enclaverec.crypto import keys
    from enclaverec.data import encrypted

    owner = keys.generate_private_key()
    dataset = encrypted.DataSetKey.generate(owner.public_key(), "unit")
    target = tmp_path / "day_0.tsv.enc"
    encrypted.encrypt_file(criteo, target, dataset)
    code, out, err = run_cli("data", "inspect", target, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["dataset_name"] == "unit" and summary["authenticated"] is False
    assert dataset.data_key.hex() not in out
