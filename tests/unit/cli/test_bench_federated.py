"""``bench federated``: its flags, the figures it assembles, the Criteo file it writes, and
one tiny end-to-end run of real federations (logreg)."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from enclaverec.arrays import ModelLayout
from enclaverec.cli.bench_federated import (
    DEFAULT_BYTES_PARTIES,
    DEFAULT_BYTES_ROUNDS,
    DEFAULT_PARTIES,
    DEFAULT_REPEATS,
    DEFAULT_ROUNDS,
    DEFAULT_ROWS,
    DEFAULT_TABLE_SIZE,
    layout_figures,
    overhead_figures,
    parse_config,
    predicted_sparse_bytes,
    round_time_figures,
    touched_row_figures,
    write_synthetic_criteo,
)
from enclaverec.cli.main import build_parser
from enclaverec.data.criteo import iter_criteo_examples
from enclaverec.data.hashing import MISSING_ROW, CategoryHashing
from enclaverec.data.synthetic import generate
from enclaverec.errors import ConfigError, MetricsReportError, TrainingError


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


# --- result assembly --------------------------------------------------------------------------


def test_round_1_is_kept_apart():
    figures = round_time_figures([9.0, 1.0, 4.0, 1.5])
    assert figures["round_1_seconds"] == 9.0
    assert figures["later_rounds"] == 3
    assert figures["later_mean_seconds"] == pytest.approx(6.5 / 3)
    assert figures["later_median_seconds"] == 1.5


def test_one_round_cannot_be_timed():
    with pytest.raises(TrainingError, match="at least 2"):
        round_time_figures([3.0])


def _run(tee: str, rounds: list[float], wall: float) -> dict:
    return {"tee": tee, "round_seconds": rounds, "wall_seconds": wall}


def test_overhead_pools_later_rounds_of_every_run_per_mode():
    runs = [
        _run("none", [5.0, 1.0, 2.0], 10.0),
        _run("simulated", [8.0, 2.0, 3.0], 14.0),
        _run("none", [7.0, 3.0, 4.0], 12.0),
        _run("simulated", [6.0, 4.0, 9.0], 16.0),
    ]
    figures = overhead_figures(runs)
    none, simulated = figures["by_tee"]["none"], figures["by_tee"]["simulated"]
    assert (none["runs"], none["later_rounds"]) == (2, 4)
    assert none["later_mean_seconds"] == pytest.approx(2.5)
    assert simulated["later_median_seconds"] == pytest.approx(statistics.median([2, 3, 4, 9]))
    assert figures["round_time_ratio_mean"] == pytest.approx(4.5 / 2.5)
    assert figures["round_time_ratio_median"] == pytest.approx(3.5 / 2.5)
    assert figures["round_1_ratio"] == pytest.approx(7.0 / 6.0)
    assert figures["round_1_extra_seconds"] == pytest.approx(1.0)
    assert figures["wall_ratio"] == pytest.approx(15.0 / 11.0)


def test_overhead_needs_both_modes():
    with pytest.raises(TrainingError, match="--tee simulated"):
        overhead_figures([_run("none", [1.0, 1.0], 2.0)])


def test_layout_sizes_and_touched_rows():
    arrays = {
        "bottom/kernel": np.zeros((3, 4), np.float32),
        "embedding/a": np.zeros((10, 4), np.float32),
        "embedding/b": np.zeros((5, 4), np.float32),
    }
    layout = ModelLayout.of(arrays, tables=["embedding/a", "embedding/b"])
    info = layout_figures(layout, {"embedding/a": "a", "embedding/b": "b"})
    assert info["model_bytes"] == (12 + 40 + 20) * 4
    assert info["embedding_bytes"] == 60 * 4
    assert info["dense_layer_bytes"] == 12 * 4
    assert info["row_bytes"] == {"a": 16, "b": 16}

    rows = {"p0": np.array([[1, 0], [1, 2], [3, 2]]), "p1": np.array([[0, 0], [0, 0], [0, 1]])}
    touched = touched_row_figures(rows, ["a", "b"], [10, 5])
    assert touched["embedding_rows"] == 15
    assert touched["parties"]["p0"]["per_feature"] == {"a": 2, "b": 2}
    assert touched["parties"]["p1"]["touched_rows"] == 3
    assert touched["mean_fraction"] == pytest.approx((4 / 15 + 3 / 15) / 2)
    # Numbers alone: the dense layer, then each touched row's values and its 8-byte id.
    assert predicted_sparse_bytes(info, {"a": 2, "b": 2}) == 48 + 4 * (16 + 8)


def test_layout_table_without_a_feature_is_refused():
    layout = ModelLayout.of({"embedding/x": np.zeros((2, 2), np.float32)}, tables=["embedding/x"])
    with pytest.raises(MetricsReportError, match="embedding/x"):
        layout_figures(layout, {})


# --- the Criteo file ---------------------------------------------------------------------------


def test_synthetic_rows_read_back_through_the_criteo_reader(tmp_path):
    rows, size = 500, 1000
    path = write_synthetic_criteo(tmp_path / "rows.tsv", rows)
    original = generate().examples
    hashing = CategoryHashing.uniform(26, size)
    (read,) = list(iter_criteo_examples([path], hashing=hashing, batch_size=rows))
    np.testing.assert_array_equal(read.labels, original.labels[:rows])
    np.testing.assert_allclose(read.dense, original.dense[:rows], rtol=1e-6)
    for feature in range(26):
        ours, theirs = original.categorical[:rows, feature], read.categorical[:, feature]
        # Missing stays missing, and a category always lands on the same row.
        np.testing.assert_array_equal(ours == 0, theirs == MISSING_ROW)
        assert len(set(zip(ours.tolist(), theirs.tolist(), strict=True))) == len(set(ours.tolist()))


# --- end to end ----------------------------------------------------------------------------------


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
