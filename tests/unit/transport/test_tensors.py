from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from enclaverec.arrays import SparseRows
from enclaverec.errors import MalformedInputError
from enclaverec.transport import tensors
from enclaverec.transport.proto import tensors_pb2

REPO = Path(__file__).resolve().parents[3]


def test_bundle_round_trip_is_exact():
    rng = np.random.default_rng(0)
    dense = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": np.arange(5, dtype=np.int64)}
    rows = SparseRows(np.array([1, 7, 9], np.int64), rng.normal(size=(3, 16)).astype(np.float32))
    bundle = tensors.encode_bundle(dense, {"t": rows}, {"t": (10, 16)})
    wire = tensors_pb2.ArrayBundle.FromString(bundle.SerializeToString())
    got_dense, got_sparse = tensors.decode_bundle(wire)
    assert list(got_dense) == ["a", "b"]
    for name in dense:
        assert got_dense[name].dtype == dense[name].dtype
        assert np.array_equal(got_dense[name], dense[name])
    assert np.array_equal(got_sparse["t"].row_ids, rows.row_ids)
    assert np.array_equal(got_sparse["t"].values, rows.values)
    got_dense["a"][0, 0] = 1.0  # decoded arrays are owned, writable copies


def test_refuses_byte_count_that_does_not_match_shape():
    message = tensors.encode_tensor("a", np.zeros((2, 2), np.float32))
    message.data = message.data[:-1]
    with pytest.raises(MalformedInputError, match="15 bytes, expected 16"):
        tensors.decode_tensor(message)


def test_refuses_unknown_dtype():
    message = tensors_pb2.Tensor(name="a", dtype="object", shape=[1], data=b"x" * 8)
    with pytest.raises(MalformedInputError, match="not allowed"):
        tensors.decode_tensor(message)


def test_refuses_duplicate_names():
    bundle = tensors.encode_bundle({"a": np.zeros(1, np.float32)})
    bundle.dense.append(tensors.encode_tensor("a", np.zeros(1, np.float32)))
    with pytest.raises(MalformedInputError, match="sent twice"):
        tensors.decode_bundle(bundle)


def test_chunks_round_trip_a_message_larger_than_a_frame():
    big = {"w": np.random.default_rng(1).normal(size=(300_000,)).astype(np.float32)}
    bundle = tensors.encode_bundle(big)
    frames = list(tensors.to_chunks(bundle, chunk_bytes=100_000))
    assert len(frames) > 10 and frames[-1].last and not frames[0].last
    again = tensors.from_chunks(iter(frames), tensors_pb2.ArrayBundle)
    assert np.array_equal(tensors.decode_bundle(again)[0]["w"], big["w"])


def test_empty_message_is_one_frame():
    frames = list(tensors.to_chunks(tensors_pb2.ArrayBundle()))
    assert len(frames) == 1 and frames[0].last


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f[:-1], "ended before its last frame"),
        (lambda f: [f[1], f[0], *f[2:]], "out of order"),
        (lambda f: [*f, f[-1]], "after the last"),
    ],
)
def test_refuses_broken_frame_streams(mutate, message):
    bundle = tensors.encode_bundle({"w": np.zeros(50_000, np.float32)})
    frames = list(tensors.to_chunks(bundle, chunk_bytes=20_000))
    with pytest.raises(MalformedInputError, match=message):
        tensors.from_chunks(iter(mutate(frames)), tensors_pb2.ArrayBundle)


def test_refuses_message_above_the_size_limit():
    bundle = tensors.encode_bundle({"w": np.zeros(10_000, np.float32)})
    with pytest.raises(MalformedInputError, match="larger than"):
        tensors.from_chunks(
            tensors.to_chunks(bundle, 1000), tensors_pb2.ArrayBundle, max_bytes=5000
        )


def test_regenerating_the_protobuf_code_changes_nothing(tmp_path):
    pytest.importorskip("grpc_tools")
    proto_dir = REPO / "enclaverec" / "transport" / "proto"
    copy = tmp_path / "enclaverec" / "transport" / "proto"
    copy.mkdir(parents=True)
    protos = sorted(proto_dir.glob("*.proto"))
    for proto in protos:
        shutil.copy(proto, copy)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            "--python_out=.",
            "--grpc_python_out=.",
            "--pyi_out=.",
            *[f"enclaverec/transport/proto/{p.name}" for p in protos],
        ],
        cwd=tmp_path,
        check=True,
    )
    generated = sorted(p.name for p in copy.iterdir() if p.suffix in (".py", ".pyi"))
    committed = sorted(
        p.name
        for p in proto_dir.iterdir()
        if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))
    )
    assert generated == committed
    for name in generated:
        assert filecmp.cmp(copy / name, proto_dir / name, shallow=False), (
            f"{name} is stale: run scripts/gen_protos"
        )


def test_refuses_a_forged_huge_shape_without_overflow():
    message = tensors_pb2.Tensor(name="a", dtype="float32", shape=[2**62, 4], data=b"")
    with pytest.raises(MalformedInputError, match="0 bytes, expected"):
        tensors.decode_tensor(message)
