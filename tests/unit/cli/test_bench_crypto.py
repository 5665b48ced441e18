from __future__ import annotations

import json

import pytest

EXPECTED = [
    "aes-256-gcm encrypt",
    "aes-256-gcm decrypt",
    "seal (16 MiB blobs)",
    "unseal (16 MiB blobs)",
    "data file encrypt, memory to memory",
    "data file encrypt, file to file",
    "data file decrypt, file to memory",
    "data file decrypt, file to file",
]


def test_bench_crypto_prints_and_writes_figures(tmp_path, run_cli):
    # Speed is reported, never asserted (DESIGN.md §6): this checks the report's shape.
    out = tmp_path / "crypto.json"
    code, stdout, stderr = run_cli("bench", "crypto", "--size-mb", "2", "--output", out)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert report["benchmark"] == "crypto"
    assert report["size_mb"] == 2
    assert [r["name"] for r in report["results"]] == EXPECTED
    for result in report["results"]:
        if result["name"].startswith("data file"):
            # Whole lines of a generated Criteo file: at most one line short of 2 MiB.
            assert (2 << 20) - 1024 < result["bytes"] <= 2 << 20
        else:
            assert result["bytes"] == 2 << 20
        assert result["wall_seconds"] > 0
        assert result["gb_per_second"] > 0
    assert "aes-256-gcm encrypt" in stdout
    assert report["environment"]["cpu_count"] >= 1


@pytest.mark.parametrize("size", ["0", "100000"])
def test_bench_crypto_refuses_silly_sizes(run_cli, size):
    code, _, stderr = run_cli("bench", "crypto", "--size-mb", size)
    assert code == 2
    assert "--size-mb" in stderr
