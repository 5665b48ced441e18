"""``federated init`` refuses what the aggregator would refuse (issue 11 item 5, issue 9):
a port above 65535, --min-parties above the parties, a host that is not one, one key for
two members, a member named twice, a member without its row bound: exit 2, nothing
written, before any data is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclaverec.cli.main import main
from enclaverec.crypto import keys


@pytest.fixture(scope="module")
def public_keys(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("keys")
    paths = []
    for name in ("a", "b"):
        path = folder / f"{name}.pub"
        path.write_bytes(keys.public_key_pem(keys.generate_private_key().public_key()))
        paths.append(path)
    return paths


def init(tmp_path: Path, *extra: str) -> int:
    return main(
        [
            "federated", "init", "--dataset", "synthetic", "--model", "logreg",
            "--parties", "2", "--output", str(tmp_path / "out"), *extra,
        ]
    )  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--port", "70000"], "a port is 1 to 65535, got 70000"),
        (["--enrollment-port", "65536"], "a port is 1 to 65535, got 65536"),
        (["--min-parties", "3"], "min_parties 3 exceeds the 2 members"),
        (["--host", "not_a_host!"], "neither an IP address nor a host name"),
    ],
)
def test_init_refuses_what_the_aggregator_would(tmp_path, capsys, extra, message):
    assert init(tmp_path, *extra) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "out").exists()


def test_init_refuses_one_key_for_two_members(tmp_path, capsys, public_keys):
    key = public_keys[0]
    code = init(tmp_path, "--member", f"party-0={key}:10", "--member", f"party-1={key}:10")
    assert code == 2
    assert "party-0 and party-1 have the same public key" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_init_refuses_a_member_named_twice(tmp_path, capsys, public_keys):
    a, b = public_keys
    assert init(tmp_path, "--member", f"party-0={a}:10", "--member", f"party-0={b}:10") == 2
    assert "--member names party-0 twice" in capsys.readouterr().err


def test_init_without_data_needs_each_members_rows(tmp_path, capsys, public_keys):
    a, b = public_keys
    code = init(tmp_path, "--no-party-data", "--member", f"party-0={a}", "--member", f"party-1={b}")
    assert code == 2
    assert "ID=FILE.pub:ROWS" in capsys.readouterr().err


def test_init_writes_each_members_row_bound(tmp_path, public_keys):
    from enclaverec.federated.config import FederationConfig

    a, b = public_keys
    code = init(
        tmp_path, "--no-party-data", "--member", f"party-0={a}:123", "--member", f"party-1={b}:45"
    )
    assert code == 0
    config = FederationConfig.load(tmp_path / "out" / "federation.toml")
    assert dict(config.max_rows) == {"party-0": 123, "party-1": 45}
