"""``bench federated``: its flags, and one tiny end-to-end run of real federations (logreg)."""

from __future__ import annotations

import json

import pytest

from enclaverec.app.bench_federated import (
    DEFAULT_BYTES_PARTIES,
    DEFAULT_BYTES_ROUNDS,
    DEFAULT_PARTIES,
    DEFAULT_REPEATS,
    DEFAULT_ROUNDS,
    DEFAULT_ROWS,
    DEFAULT_TABLE_SIZE,
)
from enclaverec.cli.bench_federated import parse_config
from enclaverec.cli.main import build_parser
from enclaverec.errors import ConfigError


def _args(*flags: str):
    return build_parser().parse_args(["bench", "federated", *flags])


# --- flags ---------------------------------------------------------------------------------


def test_defaults_are_the_documented_shape():
    config = parse_config(_args())
    assert config.parts == ("bytes", "overhead")
    assert config.model == "dlrm" and config.bytes_model_flag == "kaggle"
    assert (config.rows, config.table_size) == (DEFAULT_ROWS, DEFAULT_TABLE_SIZE)
    assert (config.bytes_parties, config.bytes_rounds) == (
        DEFAULT_BYTES_PARTIES,
        DEFAULT_BYTES_ROUNDS,
    )
    assert (config.dataset, config.parties, config.rounds, config.repeats) == (
        "movielens-100k",
        DEFAULT_PARTIES,
        DEFAULT_ROUNDS,
        DEFAULT_REPEATS,
    )


def test_only_and_logreg_select_parts_and_model():
    config = parse_config(_args("--only", "overhead", "--model", "logreg"))
    assert config.parts == ("overhead",)
    assert config.bytes_model_flag == "logreg"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--rounds", "1"), "--rounds must be at least 2"),
        (("--rows", "150001"), "--rows must be at most 150,000"),
        (("--rows", "150", "--bytes-parties", "2"), "under 100 rows per party"),
        (("--table-size", "1"), "--table-size must be at least 2"),
        (("--repeats", "0"), "--repeats must be at least 1"),
        (("--enrollments", "x"), "--enrollments must be an integer"),
    ],
)
def test_bad_values_are_refused_before_anything_runs(flags, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_args(*flags))


def test_bad_values_exit_2_with_one_line(run_cli):
    code, out, err = run_cli("bench", "federated", "--rounds", "1")
    assert code == 2
    assert "--rounds must be at least 2" in err and out == ""


def test_missing_output_folder_is_refused_before_anything_runs(run_cli, tmp_path):
    code, _, err = run_cli("bench", "federated", "--output", tmp_path / "no" / "out.json")
    assert code == 2
    assert "directory does not exist" in err


def test_non_empty_runs_folder_is_refused(run_cli, tmp_path):
    (tmp_path / "something").write_text("x")
    code, _, err = run_cli("bench", "federated", "--runs", tmp_path)
    assert code == 2
    assert "non-empty folder" in err


def test_unknown_model_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        _args("--model", "kaggle")
    assert exc.value.code == 2


@pytest.mark.multiprocess
def test_tiny_benchmark_runs_real_federations_and_writes_its_figures(run_cli, tmp_path):
    out = tmp_path / "bench.json"
    code, stdout, err = run_cli(
        "bench", "federated", "--model", "logreg",
        "--rows", "1000", "--table-size", "500", "--bytes-parties", "2", "--bytes-rounds", "1",
        "--parties", "2", "--rounds", "2", "--repeats", "1", "--enrollments", "1",
        "--output", out,
    )  # fmt: skip
    assert code == 0, err
    assert "simulated / none" in stdout and "dense / sparse" in stdout
    report = json.loads(out.read_text())

    part = report["update_bytes"]
    assert part["data"]["dataset"] == "criteo:synthetic-1000.tsv"
    assert part["sparse"]["update_encoding"] == "sparse"
    assert part["dense"]["update_encoding"] == "dense"
    # Dense updates carry every table whole; sparse ones only the rows a party touched.
    assert part["dense"]["min_bytes"] >= part["model_bytes"]
    assert part["sparse"]["max_bytes"] < part["dense"]["min_bytes"]
    assert part["dense_to_sparse_ratio"] > 1
    # The same federation either way: sparse updates lose nothing.
    assert abs(part["test_auc_difference"]) < 1e-9
    assert set(part["touched_rows"]["parties"]) == {"party-0", "party-1"}
    for entry in part["touched_rows"]["parties"].values():
        assert 0 < entry["fraction"] < 1
        (measured,) = entry["measured_sparse_bytes"]
        # What was sent is the touched rows plus protobuf framing (a few hundred bytes).
        predicted = entry["predicted_sparse_payload_bytes"]
        assert predicted <= measured < predicted * 1.1

    part = report["security_overhead"]
    assert [run["tee"] for run in part["runs"]] == ["none", "simulated"]
    for run in part["runs"]:
        assert run["later_rounds"] == 1 and len(run["round_seconds"]) == 2
    assert [run["authenticated_peers"] for run in part["runs"]] == [0, 2]
    assert part["round_time_ratio_mean"] > 0
    attestation = part["attestation"]
    for key in ("verify_and_pin_aggregator", "enroll", "first_call_mutual_tls"):
        assert attestation[key]["samples"] == 2  # 2 parties x 1 session
        assert attestation[key]["median_seconds"] > 0
