"""Issue 11 items 8-11: outputs that would mix data sets, operating-system errors, messages
that point the right way, and ``attest verify --json`` for every outcome.

Every case runs the real command in-process and checks the exit code and the one line the
user reads (naming the path); none of them may end in "internal error".
"""

from __future__ import annotations

import errno
import json
import pathlib
import subprocess
import sys
from pathlib import Path

import pytest

from enclaverec.tee.measurement import measured_inputs
from enclaverec.tee.simulated_backend import SimulatedBackend
from enclaverec.tee.simulation_pki import SimulationPKI

PASSPHRASE = "clear-errors passphrase 41"
LINE = "1\t" + "\t".join(["3"] * 13) + "\t" + "\t".join(["0a1b2c3d"] * 26) + "\n"


def error_line(err: str) -> str:
    """The one line on stderr, which must be an `enclaverec: error:` line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("enclaverec: error: "), err
    assert "internal error" not in lines[0]
    return lines[0]


@pytest.fixture
def site(tmp_path, run_cli):
    """A folder with an owner key pair, its passphrase file, a Criteo file, a plain file
    and a subfolder."""
    (tmp_path / "pass.txt").write_text(PASSPHRASE + "\n")
    code, _, err = run_cli(
        "keys", "new", "--out", tmp_path / "owner.key", "--passphrase-file", tmp_path / "pass.txt"
    )
    assert code == 0, err
    (tmp_path / "a.txt").write_text(LINE * 3)
    (tmp_path / "b.txt").write_text(LINE * 2)
    (tmp_path / "plain").write_text("a file, not a folder\n")
    (tmp_path / "folder").mkdir()
    return tmp_path


@pytest.fixture(scope="module")
def evidence(tmp_path_factory):
    """A simulation deployment (with its collateral.json) and a simulated quote."""
    folder = tmp_path_factory.mktemp("evidence")
    pki = SimulationPKI.create(folder / "deployment")
    mrenclave = measured_inputs("aggregator", b"rounds = 1\n").mrenclave()
    quote = folder / "quote"
    quote.write_bytes(SimulatedBackend(pki, mrenclave, isv_prod_id=1, isv_svn=2).quote(bytes(64)))
    return folder / "deployment", quote


def deny(monkeypatch, target: Path) -> None:
    """Make opening ``target`` fail as it does for a user without read permission (the
    tests run as root here, where chmod would not stop a read)."""
    original = pathlib.Path.open

    def guarded_open(self, *args, **kwargs):
        if Path(self) == target:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", guarded_open)


# --- item 8: one data set per folder ------------------------------------------------------


def test_encrypt_refuses_a_folder_holding_another_data_set(site, run_cli):
    out = site / "enc"
    code, _, err = run_cli(
        "data", "encrypt", site / "a.txt", "--owner-key", site / "owner.key.pub", "--output", out
    )
    assert code == 0, err
    code, _, err = run_cli(
        "data", "encrypt", site / "b.txt", "--owner-key", site / "owner.key.pub", "--output", out
    )
    assert code == 2
    line = error_line(err)
    assert "already holds another encrypted data set" in line and str(out) in line
    assert sorted(p.name for p in out.iterdir()) == ["a.txt.enc"]  # nothing added


def test_encrypt_refuses_a_non_empty_folder(site, run_cli):
    out = site / "enc"
    out.mkdir()
    (out / "notes.md").write_text("mine\n")
    code, _, err = run_cli(
        "data", "encrypt", site / "a.txt", "--owner-key", site / "owner.key.pub", "--output", out
    )
    assert code == 2 and "non-empty folder" in error_line(err)
    assert sorted(p.name for p in out.iterdir()) == ["notes.md"]


def test_encrypt_shards_refuses_a_folder_holding_another_data_set(site, run_cli):
    out = site / "enc"
    code, _, err = run_cli(
        "data", "encrypt", site / "a.txt", "--owner-key", site / "owner.key.pub", "--output", out
    )
    assert code == 0, err
    code, _, err = run_cli(
        "data", "encrypt", "--shards", "2", "--dataset", "synthetic",
        "--owner-key", site / "owner.key.pub", "--output", out,
    )  # fmt: skip
    assert code == 2 and "already holds another encrypted data set" in error_line(err)


# --- item 9: operating-system errors, one line naming the path, exit 2 ----------------------

# (argv with {site} for the fixture folder, the path the message must name)
OS_ERROR_CASES = {
    "prepare --data FOLDER": (
        ["data", "prepare", "--data", "{site}/folder", "--output", "{site}/out"],
        "{site}/folder",
        "is a folder, not a file",
    ),
    "partition --data FOLDER": (
        ["data", "partition", "--data", "{site}/folder", "--parties", "2", "--partition", "iid",
         "--output", "{site}/out"],
        "{site}/folder",
        "is a folder, not a file",
    ),
    "encrypt --owner-key FOLDER": (
        ["data", "encrypt", "{site}/a.txt", "--owner-key", "{site}/folder", "--output",
         "{site}/enc"],
        "{site}/folder",
        "public key is a folder, not a file",
    ),
    "encrypt --output FILE/sub": (
        ["data", "encrypt", "{site}/a.txt", "--owner-key", "{site}/owner.key.pub", "--output",
         "{site}/plain/enc"],
        "{site}/plain",
        "not a folder",
    ),
    "keys new --passphrase-file FOLDER": (
        ["keys", "new", "--out", "{site}/k", "--passphrase-file", "{site}/folder"],
        "{site}/folder",
        "passphrase file is a folder, not a file",
    ),
    "keys new --passphrase-file not UTF-8": (
        ["keys", "new", "--out", "{site}/k", "--passphrase-file", "{site}/latin1.txt"],
        "{site}/latin1.txt",
        "passphrase file not UTF-8 text",
    ),
    "keys new --out FILE/k": (
        ["keys", "new", "--out", "{site}/plain/k", "--passphrase-file", "{site}/pass.txt"],
        "{site}/plain/k",
        "cannot be reached ({site}/plain is a file, not a folder)",
    ),
    "federated init --member ID=FOLDER": (
        ["federated", "init", "--dataset", "synthetic", "--parties", "1", "--model", "logreg",
         "--member", "p=" + "{site}/folder:10", "--output", "{site}/fed"],
        "{site}/folder",
        "is a folder, not a file",
    ),
    "federated init --output FILE/sub": (
        ["federated", "init", "--dataset", "synthetic", "--parties", "2", "--model", "logreg",
         "--output", "{site}/plain/fed"],
        "{site}/plain",
        "{site}/plain is not a folder",
    ),
    "federated simulate --data FOLDER": (
        ["federated", "simulate", "--data", "{site}/folder", "--parties", "2", "--output",
         "{site}/sim"],
        "{site}/folder",
        "is a folder, not a file",
    ),
    "bench crypto --output FOLDER": (
        ["bench", "crypto", "--size-mb", "1", "--output", "{site}/folder"],
        "{site}/folder",
        "is a folder, not a file",
    ),
    # Checked before the benchmark runs (minutes of work), not when the figures are written.
    "bench scale --output FOLDER": (
        ["bench", "scale", "--output", "{site}/folder"],
        "{site}/folder",
        "is a folder, not a file",
    ),
    "bench distributed --output FOLDER": (
        ["bench", "distributed", "--output", "{site}/folder"],
        "{site}/folder",
        "is a folder, not a file",
    ),
    "bench federated --output FOLDER": (
        ["bench", "federated", "--output", "{site}/folder"],
        "{site}/folder",
        "is a folder, not a file",
    ),
    "bench robustness --output FOLDER": (
        ["bench", "robustness", "--output", "{site}/folder"],
        "{site}/folder",
        "is a folder, not a file",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(OS_ERROR_CASES))
def test_os_errors_are_one_line_naming_the_path(case, site, run_cli):
    (site / "latin1.txt").write_bytes("pässphrase-latin-1\n".encode("latin-1"))
    argv, path, reason = OS_ERROR_CASES[case]
    code, out, err = run_cli(*[arg.format(site=site) for arg in argv])
    assert code == 2, err
    line = error_line(err)
    assert path.format(site=site) in line
    assert reason.format(site=site) in line
    assert "Errno" not in line  # said in words, not as Python's exception text


def test_attest_verify_quote_folder_is_a_usage_error(site, evidence, run_cli):
    deployment, _ = evidence
    code, _, err = run_cli(
        "attest", "verify", "--quote", site / "folder", "--collateral", deployment
    )
    assert code == 2
    assert error_line(err).endswith(f"quote file is a folder, not a file: {site / 'folder'}")


def test_attest_verify_unreadable_collateral_is_a_usage_error(evidence, run_cli, monkeypatch):
    deployment, quote = evidence
    collateral = deployment / "collateral.json"
    deny(monkeypatch, collateral)
    code, _, err = run_cli("attest", "verify", "--quote", quote, "--collateral", collateral)
    assert code == 2
    assert error_line(err) == (
        f"enclaverec: error: collateral file not accessible (permission denied): {collateral}"
    )


def test_unreadable_passphrase_file_is_a_usage_error(site, run_cli, monkeypatch):
    deny(monkeypatch, site / "pass.txt")
    code, _, err = run_cli(
        "keys", "new", "--out", site / "k", "--passphrase-file", site / "pass.txt"
    )
    assert code == 2
    assert error_line(err) == (
        f"enclaverec: error: passphrase file not accessible (permission denied): "
        f"{site / 'pass.txt'}"
    )
    assert not (site / "k").exists()


def test_a_path_error_no_command_named_is_mapped_once_in_main(site, run_cli, monkeypatch):
    """The shared mechanism: an OSError about a path that escapes any command is the same
    one line, exit 2 (here from inside `keys new`, after the passphrase was read)."""
    from enclaverec.crypto import keys

    def fail() -> None:
        raise PermissionError(errno.EACCES, "Permission denied", "/var/lib/somewhere")

    monkeypatch.setattr(keys, "generate_private_key", fail)
    code, _, err = run_cli(
        "keys", "new", "--out", site / "k", "--passphrase-file", site / "pass.txt"
    )
    assert code == 2
    assert error_line(err) == (
        "enclaverec: error: path not accessible (permission denied): /var/lib/somewhere"
    )


def test_other_os_errors_stay_runtime_errors(site, run_cli, monkeypatch):
    from enclaverec.crypto import keys

    def fail() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/var/lib/somewhere")

    monkeypatch.setattr(keys, "generate_private_key", fail)
    code, _, err = run_cli(
        "keys", "new", "--out", site / "k", "--passphrase-file", site / "pass.txt"
    )
    assert code == 1 and "No space left on device" in err


def test_attest_verify_time_beyond_the_year_9999_is_a_usage_error(evidence, run_cli):
    deployment, quote = evidence
    code, _, err = run_cli(
        "attest", "verify", "--quote", quote, "--collateral", deployment,
        "--at", "99999999999999999999",
    )  # fmt: skip
    assert code == 2
    assert "--at must be at most 253402300799" in error_line(err)


@pytest.mark.parametrize("url", ["notaurl", "ftp://pccs.example", "https://", "http://h:port/"])
def test_attest_verify_pccs_that_is_not_a_url_is_a_usage_error(url, evidence, run_cli):
    _, quote = evidence
    code, _, err = run_cli("attest", "verify", "--quote", quote, "--pccs", url)
    assert code == 2
    assert f"PCCS URL {url!r} is not an http(s) URL with a host" in error_line(err)


# --- item 10: messages that point the right way ---------------------------------------------


def test_decrypt_with_the_public_key_says_so(site, run_cli):
    out = site / "enc"
    code, _, err = run_cli(
        "data", "encrypt", site / "a.txt", "--owner-key", site / "owner.key.pub", "--output", out
    )
    assert code == 0, err
    code, _, err = run_cli(
        "data", "decrypt", out / "a.txt.enc", "--key", site / "owner.key.pub",
        "--passphrase-file", site / "pass.txt",
    )  # fmt: skip
    assert code == 2
    line = error_line(err)
    assert "is a public key" in line and "passphrase" not in line


def test_encrypt_a_folder_says_it_is_a_folder(site, run_cli):
    code, _, err = run_cli(
        "data", "encrypt", site / "folder", "--owner-key", site / "owner.key.pub",
        "--output", site / "enc",
    )  # fmt: skip
    assert code == 2
    assert error_line(err).endswith(
        f"input file is a folder; give the files in it: {site / 'folder'}"
    )
    assert not (site / "enc").exists()


def test_keys_new_out_folder_says_it_is_a_folder(site, run_cli):
    code, _, err = run_cli(
        "keys", "new", "--out", f"{site / 'folder'}/", "--passphrase-file", site / "pass.txt"
    )
    assert code == 2
    line = error_line(err)
    assert "is a folder; give a file name for the private key" in line
    assert "overwrite" not in line
    assert list((site / "folder").iterdir()) == []


def test_evaluate_model_file_says_not_a_folder(site, run_cli):
    code, _, err = run_cli("evaluate", "--model", site / "plain", "--dataset", "synthetic")
    assert code == 2
    line = error_line(err)
    assert "is a file, not a folder" in line and "not found" not in line


@pytest.mark.parametrize("table", ["party", "federation"])
def test_config_without_its_format_key_names_the_key(table, site, run_cli):
    code, _, err = run_cli(
        "federated", "init", "--dataset", "synthetic", "--parties", "2", "--rounds", "1",
        "--model", "logreg", "--no-party-data", "--output", site / "fed",
    )  # fmt: skip
    assert code == 0, err
    if table == "party":
        config, command = site / "fed" / "party-0" / "party.toml", "party"
    else:
        config, command = site / "fed" / "federation.toml", "aggregator"
    lines = config.read_text().splitlines()
    config.write_text("\n".join(line for line in lines if not line.startswith("format")) + "\n")
    # A role command replaces its process with the role's entry: run it as a process.
    role = subprocess.run(
        [sys.executable, "-m", "enclaverec.cli.main", "federated", command, "--config", config],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert role.returncode == 2, role.stderr
    line = error_line(role.stderr)
    assert f"[{table}]: missing key format (expected format = 1)" in line
    assert "None" not in line


def test_unknown_flag_shows_the_commands_own_usage(capsys):
    from enclaverec.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--foo"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: enclaverec train ")
    assert "enclaverec train: error: unrecognized arguments: --foo" in err


def test_unknown_flag_of_a_nested_command_shows_its_usage(capsys):
    from enclaverec.cli.main import main

    with pytest.raises(SystemExit):
        main(["keys", "new", "--out", "k", "--bogus"])
    err = capsys.readouterr().err
    assert err.startswith("usage: enclaverec keys new ")
    assert "unrecognized arguments: --bogus" in err


# --- item 11: attest verify --json, every outcome one JSON object on stdout -----------------

JSON_KEYS = {"accepted", "failed_check", "got", "expected", "message", "error", "exit_code"}


def json_outcome(out: str) -> dict:
    document = json.loads(out)  # the whole of stdout is one JSON document
    assert isinstance(document, dict) and JSON_KEYS <= set(document), document
    assert document["accepted"] is False
    return document


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("malformed quote", "malformed_input", "quote header"),
        ("missing quote", "usage", "quote file not found"),
        ("quote is a folder", "usage", "quote file is a folder, not a file"),
        ("bad --at", "usage", "--at must be an integer"),
        ("huge --at", "usage", "--at must be at most"),
        ("bad --mrenclave", "usage", "--mrenclave takes 64 hex digits"),
        ("no --quote nor --cert", "usage", "one of the arguments --quote --cert is required"),
        ("unknown flag", "usage", "unrecognized arguments: --foo"),
        ("bad --pccs", "usage", "is not an http(s) URL"),
        ("refused", "verification", "dcap-qvl refused the quote"),
    ],
)
def test_attest_verify_json_every_outcome(case, error, message, site, evidence, capsys):
    from enclaverec.cli.main import main

    deployment, quote = evidence
    args = {
        "malformed quote": ["--quote", site / "a.txt", "--collateral", deployment],
        "missing quote": ["--quote", site / "absent", "--collateral", deployment],
        "quote is a folder": ["--quote", site / "folder", "--collateral", deployment],
        "bad --at": ["--quote", quote, "--collateral", deployment, "--at", "xyz"],
        "huge --at": ["--quote", quote, "--collateral", deployment, "--at", "1" + "0" * 20],
        "bad --mrenclave": ["--quote", quote, "--collateral", deployment, "--mrenclave", "zz"],
        "no --quote nor --cert": ["--collateral", deployment],
        "unknown flag": ["--quote", quote, "--collateral", deployment, "--foo"],
        "bad --pccs": ["--quote", quote, "--pccs", "notaurl"],
        # SIMULATED evidence under the default policy (no simulation root): refused.
        "refused": ["--quote", quote, "--collateral", deployment],
    }[case]
    try:
        code = main(["attest", "verify", *map(str, args), "--json"])
    except SystemExit as exc:  # argparse's own errors end the process
        code = exc.code
    out = capsys.readouterr().out
    document = json_outcome(out)
    assert document["error"] == error
    assert message in document["message"]
    assert code == document["exit_code"] == (3 if error == "verification" else 2)
    if error == "verification":
        assert document["failed_check"] == "dcap"
    else:
        assert document["failed_check"] is None
