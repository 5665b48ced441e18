"""Encrypted worker shards: the same keyed split as train, every row in exactly one shard,
round trip in memory, and refusal of modified or swapped shards."""

from __future__ import annotations

import json

import numpy as np
import pytest

from enclaverec.crypto import keys
from enclaverec.data import encrypted
from enclaverec.data.schema import Examples, FeatureSpec, split_sha256
from enclaverec.data.shards import MANIFEST_FILE, ShardManifest, encrypt_shards, load_shard
from enclaverec.data.split import split_examples
from enclaverec.errors import IntegrityError, UsageError


@pytest.fixture(scope="module")
def dataset():
    from enclaverec.data.schema import DataSet

    rng = np.random.default_rng(3)
    rows = 900
    examples = Examples(
        rng.normal(size=(rows, 3)).astype(np.float32),
        rng.integers(0, 30, size=(rows, 2)).astype(np.int32),
        (rng.random(rows) < 0.4).astype(np.float32),
        np.arange(rows, dtype=np.int64),
    )
    train, validation, test = split_examples(examples, seed=5)
    return DataSet(
        "synthetic", FeatureSpec(("a", "b", "c"), ("x", "y"), (30, 30)), train, validation, test
    )


@pytest.fixture(scope="module")
def owner():
    return keys.generate_private_key()


@pytest.fixture(scope="module")
def sharded(dataset, owner, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    manifest = encrypt_shards(
        dataset, workers=3, seed=5, owner=owner.public_key(), output_dir=folder, dataset_name="t"
    )
    return folder, manifest


def _open(folder, manifest, owner, index):
    shard = manifest.shards[index]
    header = encrypted.read_unverified_header(folder / shard.file)
    key = encrypted.unwrap_data_key(header, owner)
    return load_shard(
        folder / shard.file,
        key,
        expected_header_sha256=bytes.fromhex(shard.header_sha256),
        spec=manifest.spec,
    )


def test_every_row_is_in_one_shard_with_its_split_and_values(dataset, owner, sharded):
    folder, manifest = sharded
    assert ShardManifest.load(folder) == manifest
    shards = [_open(folder, manifest, owner, i) for i in range(3)]
    for name in ("train", "validation", "test"):
        whole = getattr(dataset, name)
        ids = np.concatenate([s.split(name).row_ids for s in shards])
        assert sorted(ids.tolist()) == whole.row_ids.tolist()
        for shard in shards:
            mine = shard.split(name)
            reference = whole.take(shard.positions[name])
            assert np.array_equal(mine.row_ids, reference.row_ids)
            assert np.array_equal(mine.dense, reference.dense)  # float32, bit for bit
            assert np.array_equal(mine.categorical, reference.categorical)
            assert np.array_equal(mine.labels, reference.labels)
    assert manifest.test_split_sha256 == split_sha256(dataset.test.row_ids)


def test_the_manifest_and_files_hold_no_row_in_the_clear(dataset, sharded):
    folder, _ = sharded
    blob = b"".join(path.read_bytes() for path in folder.iterdir())
    first = dataset.train.slice(0, 1)
    value = format(float(first.dense[0, 0]), ".9g").encode()
    assert value not in blob
    assert json.loads((folder / MANIFEST_FILE).read_text())["format"] == "enclaverec-shards-v1"


def test_refuses_a_modified_or_swapped_shard(owner, sharded, tmp_path):
    folder, manifest = sharded
    key = encrypted.unwrap_data_key(
        encrypted.read_unverified_header(folder / manifest.shards[0].file), owner
    )
    expected = bytes.fromhex(manifest.shards[0].header_sha256)
    modified = tmp_path / "shard-0.enc"
    data = bytearray((folder / "shard-0.enc").read_bytes())
    data[-20] ^= 0x01
    modified.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        load_shard(modified, key, expected_header_sha256=expected, spec=manifest.spec)
    with pytest.raises(IntegrityError, match="not the shard"):
        load_shard(folder / "shard-1.enc", key, expected_header_sha256=expected, spec=manifest.spec)


def test_refuses_to_overwrite_and_leaves_nothing_on_failure(dataset, owner, sharded, tmp_path):
    folder, _ = sharded
    with pytest.raises(UsageError, match="overwrite"):
        encrypt_shards(
            dataset,
            workers=3,
            seed=5,
            owner=owner.public_key(),
            output_dir=folder,
            dataset_name="t",
        )
    with pytest.raises(UsageError):
        encrypt_shards(
            dataset, workers=0, seed=5, owner=owner.public_key(), output_dir=tmp_path / "x",
            dataset_name="t",
        )  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_data_encrypt_shards_command(run_cli, tmp_path):
    code, _, err = run_cli("keys", "new", "--out", tmp_path / "owner.key", "--passphrase-file",
                           _passphrase(tmp_path))  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli(
        "data", "encrypt", "--shards", "2", "--dataset", "synthetic", "--seed", "3",
        "--owner-key", tmp_path / "owner.key.pub", "--output", tmp_path / "shards",
    )  # fmt: skip
    assert code == 0, err
    manifest = ShardManifest.load(tmp_path / "shards")
    from enclaverec.data.sources import DataSelection, load_dataset

    reference = load_dataset(DataSelection(dataset="synthetic"), seed=3)
    # The same test rows as `train --seed 3`.
    assert manifest.test_split_sha256 == split_sha256(reference.test.row_ids)
    assert manifest.workers == 2 and "shard-1.enc" in out
    code, _, err = run_cli(
        "data", "encrypt", "--seed", "3", "--owner-key", tmp_path / "owner.key.pub",
        "--output", tmp_path / "x", "--dataset", "synthetic",
    )  # fmt: skip
    assert code == 2 and "--shards" in err


def _passphrase(folder):
    path = folder / "pass"
    path.write_text("correct horse battery\n")
    return path
