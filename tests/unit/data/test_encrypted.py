from __future__ import annotations

import gzip
import random
import stat
import struct
from pathlib import Path

import numpy as np
import pytest

from enclaverec.crypto import keys
from enclaverec.data import encrypted
from enclaverec.data.batching import encrypted_batches
from enclaverec.data.criteo import BadLineCounter, iter_criteo_examples, parse_criteo_block
from enclaverec.data.encrypted import writer as encrypted_writer
from enclaverec.data.encrypted.format import count_lines
from enclaverec.data.hashing import CategoryHashing
from enclaverec.errors import (
    DataFormatError,
    IntegrityError,
    UnknownFormatError,
    UsageError,
)

CHUNK = 1024  # small chunks so a few hundred lines make many of them
HASHING = CategoryHashing.uniform(26, 1000)


def criteo_text(lines: int, *, seed: int = 0, bad_every: int = 0, final_newline=True) -> bytes:
    """Criteo-shaped lines with missing and negative values; every ``bad_every``-th line
    malformed (a label of 2) when asked."""
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        label = "2" if bad_every and i % bad_every == bad_every - 1 else str(rng.randint(0, 1))
        ints = [rng.choice(["", str(rng.randint(-2, 5000))]) for _ in range(13)]
        cats = [rng.choice(["", f"{rng.getrandbits(32):08x}"]) for _ in range(26)]
        out.append("\t".join([label, *ints, *cats]))
    text = "\n".join(out) + ("\n" if final_newline else "")
    return text.encode()


@pytest.fixture(scope="module")
def owner():
    return keys.generate_private_key()


@pytest.fixture(scope="module")
def dataset(owner):
    return encrypted.DataSetKey.generate(owner.public_key(), "unit-test")


@pytest.fixture
def plain(tmp_path):
    path = tmp_path / "day_0.txt"
    path.write_bytes(criteo_text(300))
    return path


@pytest.fixture
def enc(tmp_path, plain, dataset):
    out = tmp_path / "enc"
    out.mkdir()
    return encrypted.encrypt_files([plain], out, dataset, chunk_size=CHUNK)[0].path


def records(path: Path) -> tuple[bytes, list[bytes]]:
    """(header, [record bytes]) of an encrypted file, for tampering."""
    data = path.read_bytes()
    (header_length,) = struct.unpack_from(">I", data, 10)
    offset, out = header_length, []
    while offset < len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        out.append(data[offset : offset + 8 + length])
        offset += 8 + length
    return data[:header_length], out


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 1 << bit
    return bytes(changed)


# --- round trips -------------------------------------------------------------------------


def test_round_trip_exact(enc, plain, dataset):
    with encrypted.EncryptedDataReader(enc, dataset.data_key) as reader:
        assert reader.num_chunks > 20
        assert reader.num_lines == 300
        joined = b"".join(reader.read_chunk(i) for i in range(reader.num_chunks))
    assert joined == plain.read_bytes()


def test_chunks_hold_whole_lines_within_the_chunk_size(enc, dataset):
    with encrypted.EncryptedDataReader(enc, dataset.data_key) as reader:
        first_lines = []
        for index, chunk in reader.iter_chunks():
            assert len(chunk) <= CHUNK
            assert chunk.endswith(b"\n")
            first, count = reader.chunk_lines(index)
            assert count == chunk.count(b"\n")
            first_lines.append(first)
    assert first_lines[0] == 0
    assert first_lines == sorted(first_lines)


def test_any_chunk_parses_on_its_own_with_its_row_ids(enc, plain, dataset):
    expected = parse_criteo_block(
        plain.read_bytes(), hashing=HASHING, first_row_id=0, source="p", first_line_number=1
    )
    with encrypted.EncryptedDataReader(enc, dataset.data_key) as reader:
        index = reader.num_chunks // 2
        first, count = reader.chunk_lines(index)
        part = parse_criteo_block(
            reader.read_chunk(index),
            hashing=HASHING,
            first_row_id=first,
            source="c",
            first_line_number=first + 1,
        )
    np.testing.assert_array_equal(part.row_ids, np.arange(first, first + count))
    np.testing.assert_array_equal(part.categorical, expected.categorical[first : first + count])
    np.testing.assert_array_equal(part.dense, expected.dense[first : first + count])


def test_decrypt_to_file_exact_and_0600(enc, plain, dataset, tmp_path):
    out = tmp_path / "plain.out"
    summary = encrypted.decrypt_to_file(enc, dataset.data_key, out)
    assert out.read_bytes() == plain.read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert (summary.lines, summary.plaintext_bytes) == (300, len(plain.read_bytes()))


def test_gzip_input_is_stored_decompressed(tmp_path, dataset):
    text = criteo_text(50, seed=3)
    source = tmp_path / "day_1.txt.gz"
    source.write_bytes(gzip.compress(text))
    info = encrypted.encrypt_file(source, tmp_path / "x.enc", dataset, chunk_size=CHUNK)
    assert info.lines == 50
    header = encrypted.read_unverified_header(info.path)
    assert header.file_name == "day_1.txt"
    with encrypted.EncryptedDataReader(info.path, dataset.data_key) as reader:
        assert b"".join(c for _, c in reader.iter_chunks()) == text


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"no final newline",
        b"a\nb",
        b"\n\n\n",
        b"x" * 5000 + b"\nshort\n" + b"y" * 3000,  # lines longer than a chunk
        b"z" * CHUNK,
        b"w" * (CHUNK - 1) + b"\n" + b"v" * 10,
    ],
)
def test_round_trip_edge_cases(tmp_path, dataset, text):
    source = tmp_path / "edge.txt"
    source.write_bytes(text)
    info = encrypted.encrypt_file(source, tmp_path / "edge.enc", dataset, chunk_size=CHUNK)
    with encrypted.EncryptedDataReader(info.path, dataset.data_key) as reader:
        chunks = [c for _, c in reader.iter_chunks()]
        assert reader.num_lines == info.lines == count_lines(text)
    assert b"".join(chunks) == text
    assert len(chunks) >= 1
    # Whole lines: only the last chunk may end without a newline.
    assert all(c.endswith(b"\n") for c in chunks[:-1])


def test_same_plaintext_twice_gives_unrelated_files(tmp_path, plain, dataset):
    a = encrypted.encrypt_file(plain, tmp_path / "a.enc", dataset, chunk_size=CHUNK)
    b = encrypted.encrypt_file(plain, tmp_path / "b.enc", dataset, chunk_size=CHUNK)
    assert a.file_id != b.file_id
    _, rec_a = records(a.path)
    _, rec_b = records(b.path)
    assert all(x[8:] != y[8:] for x, y in zip(rec_a, rec_b, strict=True))


# --- the plaintext reader's batches ------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 37, 128, 1000])
def test_encrypted_batches_equals_the_plaintext_reader(enc, plain, dataset, batch_size):
    expected = list(iter_criteo_examples([plain], hashing=HASHING, batch_size=batch_size))
    with encrypted.EncryptedDataReader(enc, dataset.data_key) as reader:
        got = list(encrypted_batches(reader, HASHING, batch_size))
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g.dense, e.dense)
        np.testing.assert_array_equal(g.categorical, e.categorical)
        np.testing.assert_array_equal(g.labels, e.labels)
        np.testing.assert_array_equal(g.row_ids, e.row_ids)


def test_encrypted_batches_skip_mode_matches_row_ids_and_counts(tmp_path, dataset):
    source = tmp_path / "bad.txt"
    source.write_bytes(criteo_text(200, seed=5, bad_every=17))
    info = encrypted.encrypt_file(source, tmp_path / "bad.enc", dataset, chunk_size=CHUNK)
    plain_counter, enc_counter = BadLineCounter(), BadLineCounter()
    expected = list(
        iter_criteo_examples(
            [source],
            hashing=HASHING,
            batch_size=50,
            on_bad_line="skip",
            counter=plain_counter,
            start_row_id=1000,
        )
    )
    with encrypted.EncryptedDataReader(info.path, dataset.data_key) as reader:
        got = list(
            encrypted_batches(
                reader, HASHING, 50, on_bad_line="skip", counter=enc_counter, start_row_id=1000
            )
        )
    assert enc_counter.skipped == plain_counter.skipped == 200 // 17
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g.row_ids, e.row_ids)
        np.testing.assert_array_equal(g.categorical, e.categorical)


def test_encrypted_batches_bad_line_names_the_plaintext_line(tmp_path, dataset):
    source = tmp_path / "bad.txt"
    source.write_bytes(criteo_text(100, seed=5, bad_every=60))
    info = encrypted.encrypt_file(source, tmp_path / "bad.enc", dataset, chunk_size=CHUNK)
    with encrypted.EncryptedDataReader(info.path, dataset.data_key) as reader:
        with pytest.raises(DataFormatError, match=r"bad\.enc:60: label must be 0 or 1"):
            list(encrypted_batches(reader, HASHING, 16))


def _rows(batches):
    merged = batches[0].concatenate(batches)
    order = np.argsort(merged.row_ids)
    return merged.take(order)


def test_shuffled_reading_is_seeded_and_complete(enc, plain, dataset):
    with encrypted.EncryptedDataReader(enc, dataset.data_key) as reader:
        first = list(encrypted_batches(reader, HASHING, 32, shuffle_seed=7))
        again = list(encrypted_batches(reader, HASHING, 32, shuffle_seed=7))
        other = list(encrypted_batches(reader, HASHING, 32, shuffle_seed=8))
    plain_rows = _rows(list(iter_criteo_examples([plain], hashing=HASHING, batch_size=300)))
    ids = np.concatenate([b.row_ids for b in first])
    assert not np.array_equal(ids, np.sort(ids))
    np.testing.assert_array_equal(ids, np.concatenate([b.row_ids for b in again]))
    assert not np.array_equal(ids, np.concatenate([b.row_ids for b in other]))
    assert [len(b) for b in first] == [32] * 9 + [300 - 9 * 32]
    shuffled_rows = _rows(first)
    np.testing.assert_array_equal(shuffled_rows.row_ids, plain_rows.row_ids)
    np.testing.assert_array_equal(shuffled_rows.dense, plain_rows.dense)
    np.testing.assert_array_equal(shuffled_rows.categorical, plain_rows.categorical)
    np.testing.assert_array_equal(shuffled_rows.labels, plain_rows.labels)


# --- keys --------------------------------------------------------------------------------


def test_owner_unwraps_the_data_key(enc, owner, dataset):
    header = encrypted.read_unverified_header(enc)
    assert encrypted.unwrap_data_key(header, owner) == dataset.data_key


def test_wrong_owner_key_refused(enc):
    header = encrypted.read_unverified_header(enc)
    with pytest.raises(IntegrityError, match="wrapped to owner key sha256:.*not to the given key"):
        encrypted.unwrap_data_key(header, keys.generate_private_key())


def test_modified_wrapped_key_refused(tmp_path, enc, owner):
    data = enc.read_bytes()
    tampered = tmp_path / "t.enc"
    tampered.write_bytes(flip(data, 84 + 70))  # inside the wrapped key's ciphertext
    header = encrypted.read_unverified_header(tampered)
    with pytest.raises(IntegrityError, match="could not unwrap"):
        encrypted.unwrap_data_key(header, owner)


def test_wrong_data_key_refused(enc):
    with pytest.raises(IntegrityError, match="failed authentication"):
        encrypted.EncryptedDataReader(enc, bytes(32))


def test_secrets_stay_out_of_reprs_and_descriptions(enc, dataset):
    text = repr(dataset) + repr(encrypted.EncryptedDataReader(enc, dataset.data_key))
    described = repr(encrypted.describe_encrypted_file(enc))
    for secret in (dataset.data_key.hex(), dataset.wrapped_key.hex(), str(dataset.data_key)):
        assert secret not in text
        assert secret not in described


# --- tampering ---------------------------------------------------------------------------


def _open_and_verify(path: Path, key: bytes) -> None:
    with encrypted.EncryptedDataReader(path, key) as reader:
        reader.verify_all()


def test_every_flipped_header_bit_after_the_version_refused(tmp_path, enc, dataset):
    data = enc.read_bytes()
    header, _ = records(enc)
    tampered = tmp_path / "t.enc"
    for index in range(10, len(header)):
        for bit in (0, 7):
            tampered.write_bytes(flip(data, index, bit))
            with pytest.raises(IntegrityError):
                _open_and_verify(tampered, dataset.data_key)


def test_flipped_bit_in_any_chunk_refused(tmp_path, enc, dataset):
    header, recs = records(enc)
    tampered = tmp_path / "t.enc"
    for k in range(len(recs)):
        changed = list(recs)
        changed[k] = flip(changed[k], 8 + len(changed[k]) // 2)
        tampered.write_bytes(header + b"".join(changed))
        with pytest.raises(IntegrityError, match="failed authentication"):
            _open_and_verify(tampered, dataset.data_key)


@pytest.mark.parametrize("field", ["length", "lines"])
def test_modified_record_prefix_refused(tmp_path, enc, dataset, field):
    header, recs = records(enc)
    changed = list(recs)
    position = 3 if field == "length" else 7
    changed[2] = flip(changed[2], position)
    tampered = tmp_path / "t.enc"
    tampered.write_bytes(header + b"".join(changed))
    with pytest.raises(IntegrityError):
        _open_and_verify(tampered, dataset.data_key)


def test_dropped_last_chunk_refused(tmp_path, enc, dataset):
    header, recs = records(enc)
    tampered = tmp_path / "t.enc"
    tampered.write_bytes(header + b"".join(recs[:-1]))
    with pytest.raises(IntegrityError, match="failed authentication"):
        encrypted.EncryptedDataReader(tampered, dataset.data_key)


def test_truncation_anywhere_refused(tmp_path, enc, dataset):
    data = enc.read_bytes()
    header, recs = records(enc)
    # Every record boundary (a cut between chunks) and the bytes around it, the whole
    # header, and a sample of cuts inside chunks.
    boundaries = [len(header) + sum(len(r) for r in recs[:k]) for k in range(len(recs))]
    lengths = set(range(len(header) + 1)) | set(range(0, len(data), 61))
    lengths |= {b + d for b in boundaries for d in (-1, 0, 1, 8, 9)}
    tampered = tmp_path / "t.enc"
    for length in sorted(n for n in lengths if n < len(data)):
        tampered.write_bytes(data[:length])
        with pytest.raises(IntegrityError):
            encrypted.EncryptedDataReader(tampered, dataset.data_key)


def test_dropped_middle_chunk_refused(tmp_path, enc, dataset):
    header, recs = records(enc)
    tampered = tmp_path / "t.enc"
    tampered.write_bytes(header + b"".join(recs[:3] + recs[4:]))
    with pytest.raises(IntegrityError):
        _open_and_verify(tampered, dataset.data_key)


def test_reordered_chunks_refused(tmp_path, enc, dataset):
    header, recs = records(enc)
    swapped = list(recs)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    tampered = tmp_path / "t.enc"
    tampered.write_bytes(header + b"".join(swapped))
    with encrypted.EncryptedDataReader(tampered, dataset.data_key) as reader:
        reader.read_chunk(0)
        with pytest.raises(IntegrityError):
            reader.read_chunk(1)
        with pytest.raises(IntegrityError):
            reader.read_chunk(2)


def test_chunk_spliced_from_another_file_of_the_data_set_refused(tmp_path, plain, dataset):
    # The same plaintext, the same data key, the same chunk boundaries: only the file id
    # differs, and that is enough.
    a = encrypted.encrypt_file(plain, tmp_path / "a.enc", dataset, chunk_size=CHUNK).path
    b = encrypted.encrypt_file(plain, tmp_path / "b.enc", dataset, chunk_size=CHUNK).path
    header_a, recs_a = records(a)
    header_b, recs_b = records(b)
    spliced = tmp_path / "s.enc"
    spliced.write_bytes(header_a + b"".join(recs_a[:2] + [recs_b[2]] + recs_a[3:]))
    with encrypted.EncryptedDataReader(spliced, dataset.data_key) as reader:
        reader.read_chunk(1)
        with pytest.raises(IntegrityError):
            reader.read_chunk(2)
    # Nor can b's header be put on a's chunks.
    spliced.write_bytes(header_b + b"".join(recs_a))
    with pytest.raises(IntegrityError):
        _open_and_verify(spliced, dataset.data_key)


def test_appended_chunk_refused(tmp_path, enc, dataset):
    header, recs = records(enc)
    tampered = tmp_path / "t.enc"
    tampered.write_bytes(header + b"".join(recs + [recs[-1]]))
    with pytest.raises(IntegrityError):
        encrypted.EncryptedDataReader(tampered, dataset.data_key)


def test_unknown_version_and_foreign_file_are_told_apart(tmp_path, enc, dataset):
    data = enc.read_bytes()
    tampered = tmp_path / "t.enc"
    tampered.write_bytes(data[:8] + b"\x00\x02" + data[10:])
    with pytest.raises(UnknownFormatError, match="version 2 is not supported"):
        encrypted.EncryptedDataReader(tampered, dataset.data_key)
    with pytest.raises(UnknownFormatError, match="version 2"):
        encrypted.describe_encrypted_file(tampered)
    tampered.write_bytes(b"label\tI1\n" * 20)
    with pytest.raises(UnknownFormatError, match="not an enclaverec encrypted data file"):
        encrypted.read_unverified_header(tampered)


def test_failed_decryption_leaves_no_plaintext(tmp_path, enc, dataset):
    header, recs = records(enc)
    changed = list(recs)
    # A late chunk, so several chunks were written to the temporary file before the failure.
    changed[-3] = flip(changed[-3], 20)
    tampered = tmp_path / "t.enc"
    tampered.write_bytes(header + b"".join(changed))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(IntegrityError):
        encrypted.decrypt_to_file(tampered, dataset.data_key, out_dir / "plain.txt")
    assert list(out_dir.iterdir()) == []


def test_decrypt_refuses_to_overwrite(tmp_path, enc, dataset):
    out = tmp_path / "existing.txt"
    out.write_bytes(b"keep me")
    with pytest.raises(UsageError, match="refusing to overwrite"):
        encrypted.decrypt_to_file(enc, dataset.data_key, out)
    assert out.read_bytes() == b"keep me"


# --- encryption inputs -------------------------------------------------------------------


def test_failed_encryption_removes_every_output(tmp_path, plain, dataset):
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(gzip.compress(criteo_text(2000))[:-100])
    out = tmp_path / "enc"
    out.mkdir()
    with pytest.raises(DataFormatError, match="damaged gzip"):
        encrypted.encrypt_files([plain, broken], out, dataset, chunk_size=CHUNK)
    assert list(out.iterdir()) == []


def test_encrypt_refuses_collisions_and_overwrites(tmp_path, plain, dataset):
    out = tmp_path / "enc"
    out.mkdir()
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / plain.name).write_bytes(b"x\n")
    with pytest.raises(UsageError, match="same file name"):
        encrypted.encrypt_files([plain, twin / plain.name], out, dataset)
    encrypted.encrypt_files([plain], out, dataset)
    with pytest.raises(UsageError, match="refusing to overwrite"):
        encrypted.encrypt_files([plain], out, dataset)


@pytest.mark.parametrize("size", [0, 63, (64 << 20) + 1])
def test_chunk_size_out_of_range_refused(tmp_path, plain, dataset, size):
    with pytest.raises(UsageError, match="chunk size"):
        encrypted.encrypt_files([plain], tmp_path, dataset, chunk_size=size)


@pytest.mark.parametrize("name", ["", "a/b", "bell\x07", "x" * 256])
def test_bad_dataset_names_refused(owner, name):
    with pytest.raises(UsageError, match="invalid data set name"):
        encrypted.DataSetKey.generate(owner.public_key(), name)


def test_describe_reports_the_header_and_layout(enc, dataset):
    info = encrypted.describe_encrypted_file(enc)
    assert info["dataset_name"] == "unit-test"
    assert info["dataset_id"] == dataset.dataset_id.hex()
    assert info["file_name"] == "day_0.txt"
    assert info["owner_fingerprint"] == dataset.owner_fingerprint
    assert info["lines"] == 300
    assert info["chunk_size"] == CHUNK
    assert info["authenticated"] is False
    assert info["file_bytes"] == enc.stat().st_size


def test_chunking_property_on_random_texts(tmp_path, dataset):
    # Random line lengths (empty lines, lines longer than a chunk, no final newline) and
    # random chunk sizes: the round trip is exact, chunks hold whole lines and respect the
    # chunk size unless they are one long line, and line counts add up.
    rng = random.Random(11)
    source = tmp_path / "random.txt"
    for case in range(40):
        chunk_size = rng.choice([64, 65, 100, 257, 1000])
        lines = [
            b"a" * rng.choice([0, 1, 5, 63, 64, 65, 200, 1500]) for _ in range(rng.randint(0, 60))
        ]
        text = b"\n".join(lines) + rng.choice([b"", b"\n"])
        source.write_bytes(text)
        target = tmp_path / f"random-{case}.enc"
        info = encrypted.encrypt_file(source, target, dataset, chunk_size=chunk_size)
        with encrypted.EncryptedDataReader(target, dataset.data_key) as reader:
            chunks = [c for _, c in reader.iter_chunks()]
            assert reader.num_lines == info.lines == count_lines(text)
        assert b"".join(chunks) == text
        for chunk in chunks[:-1]:
            assert chunk.endswith(b"\n")
            assert len(chunk) <= chunk_size or chunk.count(b"\n") == 1
        if len(chunks) > 1:
            assert all(chunks)


def test_encrypt_stream_matches_encrypt_file_format(tmp_path, plain, dataset):
    import io

    sink = io.BytesIO()
    info = encrypted.encrypt_stream(
        io.BytesIO(plain.read_bytes()), sink, dataset, file_name="day_0.txt", chunk_size=CHUNK
    )
    assert info.path is None
    target = tmp_path / "stream.enc"
    target.write_bytes(sink.getvalue())
    assert info.ciphertext_bytes == len(sink.getvalue())
    with encrypted.EncryptedDataReader(target, dataset.data_key) as reader:
        assert b"".join(c for _, c in reader.iter_chunks()) == plain.read_bytes()


def test_line_longer_than_the_chunk_limit_refused(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(encrypted_writer, "MAX_CHUNK_SIZE", 4096)
    source = tmp_path / "long.txt"
    source.write_bytes(b"short\n" * 3 + b"x" * 10_000 + b"\nafter\n")
    out = tmp_path / "long.enc"
    with pytest.raises(DataFormatError, match=r"long\.txt:4: line longer than 4096 bytes"):
        encrypted.encrypt_file(source, out, dataset, chunk_size=1024)
    assert list(tmp_path.iterdir()) == [source]


def test_header_names_with_control_characters_refused(tmp_path, enc, dataset):
    # Names are shown by `inspect`: a forged header must not carry terminal escapes.
    data = enc.read_bytes()
    assert data.count(b"unit-test") == 1
    forged = tmp_path / "forged.enc"
    forged.write_bytes(data.replace(b"unit-test", b"\x1b[2Jevil!"))
    with pytest.raises(IntegrityError):
        encrypted.describe_encrypted_file(forged)
    with pytest.raises(IntegrityError):
        encrypted.EncryptedDataReader(forged, dataset.data_key)


def test_short_foreign_file_is_not_ours_but_a_cut_one_is_damaged(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"1\t2\n")
    with pytest.raises(UnknownFormatError, match="wrong magic"):
        encrypted.describe_encrypted_file(path)
    path.write_bytes(b"ERECDA")
    with pytest.raises(IntegrityError):
        encrypted.describe_encrypted_file(path)
