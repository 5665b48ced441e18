from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pytest
from criteo_helpers import criteo_8hex_fields, lines_text, random_fields, reference_parse

from enclaverec.data.criteo import (
    BadLineCounter,
    criteo_feature_spec,
    iter_criteo_examples,
    parse_criteo_block,
    parse_criteo_lines,
)
from enclaverec.data.hashing import CategoryHashing
from enclaverec.data.schema import Examples
from enclaverec.errors import ConfigError, DataFormatError, UsageError

HASHING = CategoryHashing.uniform(26, 1000)


def parse(data: bytes, **kwargs) -> Examples:
    options = dict(
        hashing=HASHING, first_row_id=0, source="mem.tsv", first_line_number=1, on_bad_line="fail"
    )
    options.update(kwargs)
    return parse_criteo_block(data, **options)


def read_all(paths, **kwargs) -> Examples:
    kwargs.setdefault("hashing", HASHING)
    kwargs.setdefault("batch_size", 1000)
    return Examples.concatenate(list(iter_criteo_examples(paths, **kwargs)))


def assert_same(a: Examples, b: Examples) -> None:
    np.testing.assert_array_equal(a.dense, b.dense)
    np.testing.assert_array_equal(a.categorical, b.categorical)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.row_ids, b.row_ids)


# --- good lines -----------------------------------------------------------------------


@pytest.mark.parametrize("make", [random_fields, criteo_8hex_fields])
def test_vectorised_parse_equals_a_field_by_field_reference(make):
    rng = random.Random(3)
    rows = [make(rng) for _ in range(500)]
    got = parse(lines_text(rows))
    dense, categorical, labels = reference_parse(rows, HASHING)
    np.testing.assert_array_equal(got.dense, dense)
    np.testing.assert_array_equal(got.categorical, categorical)
    np.testing.assert_array_equal(got.labels, labels)
    np.testing.assert_array_equal(got.row_ids, np.arange(500))
    assert got.dense.dtype == np.float32 and got.categorical.dtype == np.int32
    assert got.labels.dtype == np.float32 and got.row_ids.dtype == np.int64


def test_integers_follow_criteos_transform():
    fields = ["1", "", "-5", "0", "3", "999999999999999999"] + ["7"] * 8 + [""] * 26
    got = parse(lines_text([fields]))
    expected = [0.0, 0.0, 0.0, np.log1p(3), np.log1p(999999999999999999)] + [np.log1p(7)] * 8
    np.testing.assert_allclose(got.dense[0], np.array(expected, np.float32))


def test_missing_categories_take_row_0_and_others_never_do():
    rng = random.Random(4)
    rows = [random_fields(rng) for _ in range(300)]
    got = parse(lines_text(rows))
    missing = np.array([[v == "" for v in r[14:]] for r in rows])
    assert (got.categorical[missing] == 0).all()
    assert (got.categorical[~missing] >= 1).all() and (got.categorical < 1000).all()


def test_hex_case_and_leading_zeros_do_not_matter():
    base = ["0"] + [""] * 13
    a = parse(lines_text([base + ["00abcdef"] * 26]))
    b = parse(lines_text([base + ["ABCDEF"] * 26]))
    np.testing.assert_array_equal(a.categorical, b.categorical)


def test_crlf_and_missing_final_newline_are_accepted():
    rng = random.Random(5)
    rows = [criteo_8hex_fields(rng) for _ in range(20)]
    plain = parse(lines_text(rows))
    assert_same(parse(lines_text(rows, newline="\r\n")), plain)
    assert_same(parse(lines_text(rows, final_newline=False)), plain)


def test_parse_lines_equals_parse_block_and_offsets_row_ids():
    rng = random.Random(6)
    rows = [criteo_8hex_fields(rng) for _ in range(30)]
    lines = [("\t".join(r) + "\n").encode() for r in rows]
    lines[3] = lines[3].rstrip(b"\n")  # a line without its newline is fine too
    a = parse_criteo_lines(
        lines, hashing=HASHING, first_row_id=100, source="x", first_line_number=7
    )
    b = parse(lines_text(rows), first_row_id=100)
    assert_same(a, b)
    np.testing.assert_array_equal(a.row_ids, np.arange(100, 130))


def test_empty_block_gives_empty_examples():
    got = parse(b"")
    assert len(got) == 0 and got.dense.shape == (0, 13) and got.categorical.shape == (0, 26)


def test_feature_spec_is_criteos():
    spec = criteo_feature_spec(HASHING)
    assert spec.dense_names == tuple(f"I{i}" for i in range(1, 14))
    assert spec.categorical_names == tuple(f"C{i}" for i in range(1, 27))
    assert spec.table_sizes == (1000,) * 26


def test_hashing_with_the_wrong_number_of_tables_is_refused():
    with pytest.raises(ConfigError, match="26 categorical"):
        parse(b"", hashing=CategoryHashing.uniform(3, 10))


# --- malformed lines ------------------------------------------------------------------


def good_fields() -> list[str]:
    return ["1"] + ["5"] * 13 + ["0a1b2c3d"] * 26


def with_field(index: int, value: str) -> list[str]:
    fields = good_fields()
    fields[index] = value
    return fields


BAD_LINES = {
    "too few fields": (good_fields()[:-1], "expected 40 tab-separated fields, got 39"),
    "too many fields": (good_fields() + ["1"], "expected 40 tab-separated fields, got 41"),
    "empty line": ([""], "expected 40 tab-separated fields, got 1"),
    "label 2": (with_field(0, "2"), "label must be 0 or 1"),
    "label empty": (with_field(0, ""), "label must be 0 or 1"),
    "label 01": (with_field(0, "01"), "label must be 0 or 1"),
    "decimal integer": (with_field(3, "1.5"), "integer feature I3 is not an integer"),
    "word integer": (with_field(1, "abc"), "integer feature I1 is not an integer"),
    "lone minus": (with_field(13, "-"), "integer feature I13 is not an integer"),
    "plus sign": (with_field(2, "+3"), "integer feature I2 is not an integer"),
    "space in integer": (with_field(2, " 3"), "integer feature I2 is not an integer"),
    "inner minus": (with_field(2, "3-4"), "integer feature I2 is not an integer"),
    "19-digit integer": (with_field(5, "1" * 19), "integer feature I5 is not an integer"),
    "non-hex category": (with_field(14, "0a1b2c3g"), "categorical feature C1 is not"),
    "17-digit category": (with_field(39, "1" * 17), "categorical feature C26 is not"),
    "category with space": (with_field(20, "ab cd"), "categorical feature C7 is not"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_malformed_line_is_fatal_with_file_and_line_number(case):
    fields, reason = BAD_LINES[case]
    data = lines_text([good_fields(), good_fields(), fields, good_fields()])
    with pytest.raises(DataFormatError) as excinfo:
        parse(data, source="day_0.tsv", first_line_number=10)
    message = str(excinfo.value)
    assert message.startswith("day_0.tsv:12: ")
    assert reason in message
    assert excinfo.value.path == "day_0.tsv" and excinfo.value.line == 12


def test_error_messages_never_show_the_lines_content():
    fields = with_field(14, "secretXYZ")
    with pytest.raises(DataFormatError) as excinfo:
        parse(lines_text([fields]))
    assert "secretXYZ" not in str(excinfo.value)


def test_the_first_malformed_line_is_reported():
    data = lines_text([good_fields(), with_field(0, "7"), good_fields()[:5], good_fields()])
    with pytest.raises(DataFormatError, match=r"mem\.tsv:2: label"):
        parse(data)


def test_skip_mode_counts_every_bad_line_and_keeps_row_ids():
    rows = [good_fields() for _ in range(10)]
    rows[2] = with_field(0, "x")
    rows[5] = good_fields()[:3]
    rows[9] = with_field(30, "zz")
    counter = BadLineCounter()
    got = parse(lines_text(rows), on_bad_line="skip", counter=counter, first_row_id=50)
    assert counter.skipped == 3
    assert counter.messages == [
        "mem.tsv:3: label must be 0 or 1",
        "mem.tsv:6: expected 40 tab-separated fields, got 3",
        "mem.tsv:10: categorical feature C17 is not 1 to 16 hex digits",
    ]
    # Skipping renumbers nothing: row ids are line indices.
    np.testing.assert_array_equal(got.row_ids, [50, 51, 53, 54, 56, 57, 58])


def test_skip_mode_keeps_only_the_first_messages_but_counts_all():
    rows = [with_field(0, "9") for _ in range(20)] + [good_fields()]
    counter = BadLineCounter()
    got = parse(lines_text(rows), on_bad_line="skip", counter=counter)
    assert counter.skipped == 20 and len(counter.messages) == 5 and len(got) == 1


def test_unknown_on_bad_line_is_a_usage_error():
    with pytest.raises(UsageError, match="'fail' or 'skip'"):
        parse(b"", on_bad_line="ignore")


# --- files ----------------------------------------------------------------------------


@pytest.fixture
def criteo_file(tmp_path) -> tuple[Path, list[list[str]]]:
    rng = random.Random(7)
    rows = [criteo_8hex_fields(rng) for _ in range(2000)]
    path = tmp_path / "day_0.tsv"
    path.write_bytes(lines_text(rows))
    return path, rows


def test_file_reading_equals_parsing_the_whole_text(criteo_file):
    path, rows = criteo_file
    # Tiny blocks: lines straddle block boundaries many times.
    got = read_all([path], block_bytes=777, batch_size=64)
    assert_same(got, parse(lines_text(rows)))


def test_batches_have_batch_size_rows_except_the_last(criteo_file):
    path, _ = criteo_file
    sizes = [len(b) for b in iter_criteo_examples([path], hashing=HASHING, batch_size=300)]
    assert sizes == [300] * 6 + [200]


def test_skip_mode_still_fills_batches(tmp_path):
    rows = [good_fields() for _ in range(100)]
    for i in range(0, 100, 10):
        rows[i] = with_field(0, "x")
    path = tmp_path / "bad.tsv"
    path.write_bytes(lines_text(rows))
    counter = BadLineCounter()
    batches = list(
        iter_criteo_examples(
            [path],
            hashing=HASHING,
            batch_size=25,
            on_bad_line="skip",
            counter=counter,
            block_bytes=500,
        )
    )
    assert [len(b) for b in batches] == [25, 25, 25, 15]
    assert counter.skipped == 10


def test_gzip_reads_the_same_as_plain(criteo_file, tmp_path):
    path, rows = criteo_file
    # No .gz suffix: gzip is recognised by its magic bytes.
    packed = tmp_path / "day_0.compressed"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert_same(read_all([packed]), read_all([path]))


def test_truncated_gzip_is_a_data_format_error(criteo_file, tmp_path):
    path, _ = criteo_file
    packed = gzip.compress(path.read_bytes())
    broken = tmp_path / "broken.gz"
    broken.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataFormatError, match=r"broken\.gz: corrupt gzip stream"):
        read_all([broken])


def test_several_files_continue_row_ids_and_restart_line_numbers(tmp_path):
    rng = random.Random(8)
    first = [criteo_8hex_fields(rng) for _ in range(5)]
    second = [criteo_8hex_fields(rng) for _ in range(4)]
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    a.write_bytes(lines_text(first))
    b.write_bytes(lines_text(second))
    got = read_all([a, b], start_row_id=1000)
    np.testing.assert_array_equal(got.row_ids, np.arange(1000, 1009))
    second[2] = with_field(4, "x")
    b.write_bytes(lines_text(second))
    with pytest.raises(DataFormatError, match=r"b\.tsv:3: integer feature I4"):
        read_all([a, b])


def test_skipped_lines_in_one_file_do_not_shift_the_next_files_row_ids(tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    a.write_bytes(lines_text([good_fields(), with_field(0, "x"), good_fields()]))
    b.write_bytes(lines_text([good_fields(), good_fields()]))
    got = read_all([a, b], on_bad_line="skip", counter=BadLineCounter())
    np.testing.assert_array_equal(got.row_ids, [0, 2, 3, 4])


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="data file not found"):
        read_all([tmp_path / "nope.tsv"])


def test_folder_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a file"):
        read_all([tmp_path])


def test_no_path_is_a_usage_error():
    with pytest.raises(UsageError, match="no data file"):
        read_all([])


def test_batch_size_must_be_positive(criteo_file):
    with pytest.raises(UsageError, match="batch size"):
        read_all([criteo_file[0]], batch_size=0)


def test_empty_file_gives_no_batches(tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_bytes(b"")
    assert list(iter_criteo_examples([path], hashing=HASHING, batch_size=10)) == []


def test_progress_callback_sees_every_byte(criteo_file):
    path, _ = criteo_file
    seen: list[int] = []
    read_all([path], on_bytes=seen.append, block_bytes=4096)
    assert sum(seen) == path.stat().st_size
