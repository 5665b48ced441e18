from __future__ import annotations

import stat

import pytest

from enclaverec.crypto import keys
from enclaverec.errors import IntegrityError, UsageError

PASSPHRASE = "correct horse battery"


@pytest.fixture
def passphrase_file(tmp_path):
    path = tmp_path / "pass.txt"
    path.write_text(PASSPHRASE + "\n")
    return path


def test_keys_new_writes_encrypted_private_key_0600(tmp_path, passphrase_file, run_cli):
    out = tmp_path / "owner.key"
    code, stdout, _ = run_cli("keys", "new", "--out", out, "--passphrase-file", passphrase_file)
    assert code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in out.read_bytes()
    key = keys.load_private_key(out, PASSPHRASE.encode())
    public = keys.load_public_key(tmp_path / "owner.key.pub")
    assert keys.public_key_der(key.public_key()) == keys.public_key_der(public)
    assert keys.fingerprint(public) in stdout
    assert PASSPHRASE not in stdout


def test_wrong_passphrase_is_refused_opaquely(tmp_path, passphrase_file, run_cli):
    out = tmp_path / "owner.key"
    run_cli("keys", "new", "--out", out, "--passphrase-file", passphrase_file)
    with pytest.raises(IntegrityError, match="wrong passphrase or damaged file"):
        keys.load_private_key(out, b"not the passphrase")


def test_refuses_to_overwrite_a_key(tmp_path, passphrase_file, run_cli):
    out = tmp_path / "owner.key"
    assert run_cli("keys", "new", "--out", out, "--passphrase-file", passphrase_file)[0] == 0
    before = out.read_bytes()
    code, _, err = run_cli("keys", "new", "--out", out, "--passphrase-file", passphrase_file)
    assert code == 2
    assert "refusing to overwrite" in err
    assert out.read_bytes() == before


def test_short_passphrase_refused(tmp_path, run_cli):
    short = tmp_path / "short.txt"
    short.write_text("abc\n")
    code, _, err = run_cli("keys", "new", "--out", tmp_path / "k", "--passphrase-file", short)
    assert code == 2
    assert "at least" in err
    assert not (tmp_path / "k").exists()


def test_no_terminal_and_no_file_is_a_usage_error(monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(UsageError, match="--passphrase-file"):
        keys.read_passphrase(None, confirm=True)


def test_passphrase_is_not_accepted_as_an_argument(run_cli, tmp_path):
    with pytest.raises(SystemExit) as excinfo:
        run_cli("keys", "new", "--out", tmp_path / "k", "--passphrase", PASSPHRASE)
    assert excinfo.value.code == 2
