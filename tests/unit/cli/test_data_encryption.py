from __future__ import annotations

import gzip
import os
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enclaverec.crypto import keys
from enclaverec.data import encrypted

PASSPHRASE = "decrypt-test passphrase 7f3a"
CHUNK = "700"


def criteo_lines(count: int, seed: int) -> bytes:
    out = []
    for i in range(count):
        ints = [str((i * 7 + k + seed) % 97) for k in range(13)]
        cats = [f"{(i * 2654435761 + k * 40503 + seed) % 2**32:08x}" for k in range(26)]
        out.append("\t".join([str((i + seed) % 2), *ints, *cats]))
    return ("\n".join(out) + "\n").encode()


@pytest.fixture
def owner(tmp_path, run_cli):
    """An owner key pair made by `keys new`, and its passphrase file."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    passphrase_file = secrets / "pass.txt"
    passphrase_file.write_text(PASSPHRASE + "\n")
    key = secrets / "owner.key"
    code, _, _ = run_cli("keys", "new", "--out", key, "--passphrase-file", passphrase_file)
    assert code == 0
    return key, Path(str(key) + ".pub"), passphrase_file


@pytest.fixture
def dataset(tmp_path, owner, run_cli):
    """Two files of one data set encrypted through the CLI: (folder, plaintexts)."""
    _, public, _ = owner
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    first = inputs / "day_0.txt"
    first.write_bytes(criteo_lines(120, 0))
    second = inputs / "day_1.txt.gz"
    second.write_bytes(gzip.compress(criteo_lines(120, 0)))  # same text: aligned chunks
    out = tmp_path / "encrypted"
    code, stdout, stderr = run_cli(
        "data", "encrypt", first, second, "--owner-key", public, "--output", out,
        "--dataset-name", "clicks", "--chunk-size", CHUNK,
    )  # fmt: skip
    assert code == 0, stderr
    assert "data set: clicks" in stdout
    assert keys.fingerprint(keys.load_public_key(public)) in stdout
    return out, {"day_0.txt.enc": first.read_bytes(), "day_1.txt.enc": criteo_lines(120, 0)}


def decrypt(run_cli, owner, path, *extra):
    key, _, passphrase_file = owner
    return unwrapped(
        run_cli("data", "decrypt", path, "--key", key, "--passphrase-file", passphrase_file, *extra)
    )


def unwrapped(result: tuple[int, str, str]) -> tuple[int, str, str]:
    """The console wraps long error lines at the terminal width: join them for matching."""
    code, stdout, stderr = result
    return code, stdout, " ".join(stderr.split())


def records(path: Path) -> tuple[bytes, list[bytes]]:
    data = path.read_bytes()
    (header_length,) = struct.unpack_from(">I", data, 10)
    offset, out = header_length, []
    while offset < len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        out.append(data[offset : offset + 8 + length])
        offset += 8 + length
    return data[:header_length], out


def flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x10
    return bytes(changed)


# --- round trips -------------------------------------------------------------------------


def test_encrypt_writes_one_file_per_input(dataset):
    out, plaintexts = dataset
    assert sorted(p.name for p in out.iterdir()) == sorted(plaintexts)
    headers = [encrypted.read_unverified_header(out / name) for name in plaintexts]
    assert {h.dataset_id for h in headers} == {headers[0].dataset_id}
    assert {h.wrapped_key for h in headers} == {headers[0].wrapped_key}
    assert len({h.file_id for h in headers}) == 2
    for name, plaintext in plaintexts.items():
        assert plaintext[:40] not in (out / name).read_bytes()


def test_decrypt_round_trip_to_a_file(tmp_path, dataset, owner, run_cli):
    out, plaintexts = dataset
    for name, plaintext in plaintexts.items():
        target = tmp_path / f"{name}.txt"
        code, stdout, stderr = decrypt(run_cli, owner, out / name, "--output", target)
        assert code == 0, stderr
        assert target.read_bytes() == plaintext
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert "120 lines" in stdout
        assert plaintext[:40].decode() not in stdout + stderr


def test_decrypt_without_output_verifies_and_writes_nothing(tmp_path, dataset, owner, run_cli):
    out, plaintexts = dataset
    before = sorted(tmp_path.rglob("*"))
    code, stdout, stderr = decrypt(run_cli, owner, out / "day_0.txt.enc")
    assert code == 0, stderr
    assert "verified" in stdout and "120 lines" in stdout
    assert plaintexts["day_0.txt.enc"][:40].decode() not in stdout + stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_decrypt_to_stdout_only_when_asked(dataset, owner, run_cli):
    out, plaintexts = dataset
    code, stdout, stderr = decrypt(run_cli, owner, out / "day_0.txt.enc", "--output", "-")
    assert code == 0, stderr
    assert stdout.encode() == plaintexts["day_0.txt.enc"]
    assert "verified" in stderr


# --- refusals: integrity exit code 4, nothing left behind ---------------------------------


def _tamper(kind: str, folder: Path) -> Path:
    """Write a tampered copy of day_0.txt.enc and return its path."""
    a = folder / "day_0.txt.enc"
    header, recs = records(a)
    if kind == "chunk-bit":
        body = list(recs)
        body[3] = flip(body[3], 30)
        data = header + b"".join(body)
    elif kind == "header-bit":
        data = flip(header, 40) + b"".join(recs)  # inside the file id
    elif kind == "dataset-name":
        data = header.replace(b"clicks", b"clickz") + b"".join(recs)
    elif kind == "drop-last-chunk":
        data = header + b"".join(recs[:-1])
    elif kind == "cut-mid-chunk":
        data = (header + b"".join(recs))[: -len(recs[-2]) - len(recs[-1]) // 2]
    elif kind == "reorder":
        body = list(recs)
        body[2], body[5] = body[5], body[2]
        data = header + b"".join(body)
    elif kind == "splice":
        # A chunk from the other file of the same data set (same data key, same plaintext,
        # same chunk boundaries): only the file id tells them apart.
        _, other = records(folder / "day_1.txt.enc")
        body = list(recs)
        body[4] = other[4]
        data = header + b"".join(body)
    else:
        raise AssertionError(kind)
    target = folder.parent / f"tampered-{kind}.enc"
    target.write_bytes(data)
    return target


TAMPERINGS = [
    "chunk-bit",
    "header-bit",
    "dataset-name",
    "drop-last-chunk",
    "cut-mid-chunk",
    "reorder",
    "splice",
]


@pytest.mark.parametrize("kind", TAMPERINGS)
@pytest.mark.parametrize("mode", ["file", "stdout", "verify"])
def test_tampered_file_refused_with_exit_4_and_nothing_left(
    tmp_path, dataset, owner, run_cli, kind, mode
):
    out, plaintexts = dataset
    tampered = _tamper(kind, out)
    target_dir = tmp_path / "plain"
    target_dir.mkdir()
    target = target_dir / "day_0.txt"
    extra = {"file": ("--output", target), "stdout": ("--output", "-"), "verify": ()}[mode]
    code, stdout, stderr = decrypt(run_cli, owner, tampered, *extra)
    assert code == 4, stderr
    assert "failed authentication" in stderr
    assert not target.exists()
    assert list(target_dir.iterdir()) == []
    assert stdout == ""  # not a byte of plaintext, even with --output -


def test_modified_wrapped_key_refused_with_exit_4(tmp_path, dataset, owner, run_cli):
    out, _ = dataset
    data = (out / "day_0.txt.enc").read_bytes()
    tampered = tmp_path / "wrapped.enc"
    tampered.write_bytes(flip(data, 84 + 100))  # the wrapped key's ciphertext
    target = tmp_path / "plain.txt"
    code, _, stderr = decrypt(run_cli, owner, tampered, "--output", target)
    assert code == 4
    assert "could not unwrap" in stderr
    assert not target.exists()


def test_wrong_owner_key_refused_with_exit_4(tmp_path, dataset, owner, run_cli):
    out, _ = dataset
    _, _, passphrase_file = owner
    other = tmp_path / "other.key"
    assert run_cli("keys", "new", "--out", other, "--passphrase-file", passphrase_file)[0] == 0
    target = tmp_path / "plain.txt"
    code, _, stderr = unwrapped(run_cli(
        "data", "decrypt", out / "day_0.txt.enc", "--key", other,
        "--passphrase-file", passphrase_file, "--output", target,
    ))  # fmt: skip
    assert code == 4
    assert "not to the given key" in stderr
    assert not target.exists()


def test_wrong_passphrase_refused_with_exit_4(tmp_path, dataset, owner, run_cli):
    out, _ = dataset
    key, _, _ = owner
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the passphrase\n")
    code, _, stderr = unwrapped(
        run_cli("data", "decrypt", out / "day_0.txt.enc", "--key", key, "--passphrase-file", wrong)
    )
    assert code == 4
    assert "wrong passphrase or damaged file" in stderr


def test_unknown_version_is_a_usage_level_error(tmp_path, dataset, owner, run_cli):
    out, _ = dataset
    data = (out / "day_0.txt.enc").read_bytes()
    newer = tmp_path / "newer.enc"
    newer.write_bytes(data[:8] + b"\x00\x09" + data[10:])
    code, _, stderr = decrypt(run_cli, owner, newer)
    assert code == 2
    assert "version 9 is not supported" in stderr


def test_decrypt_refuses_to_overwrite(tmp_path, dataset, owner, run_cli):
    out, _ = dataset
    target = tmp_path / "existing.txt"
    target.write_text("keep")
    code, _, stderr = decrypt(run_cli, owner, out / "day_0.txt.enc", "--output", target)
    assert code == 2
    assert "refusing to overwrite" in stderr
    assert target.read_text() == "keep"


def test_encrypt_errors_are_usage_errors(tmp_path, owner, run_cli):
    _, public, _ = owner
    code, _, stderr = run_cli(
        "data", "encrypt", tmp_path / "absent.txt", "--owner-key", public, "--output",
        tmp_path / "enc",
    )  # fmt: skip
    assert code == 2
    assert "not found" in stderr
    source = tmp_path / "a.txt"
    source.write_bytes(b"1\n")
    code, _, stderr = run_cli(
        "data", "encrypt", source, "--owner-key", public, "--output", tmp_path / "o",
        "--chunk-size", "10",
    )  # fmt: skip
    assert code == 2
    assert "chunk size" in stderr


def test_passphrase_is_not_accepted_as_an_argument(dataset, owner, run_cli):
    out, _ = dataset
    key, _, _ = owner
    with pytest.raises(SystemExit) as excinfo:
        run_cli("data", "decrypt", out / "day_0.txt.enc", "--key", key, "--passphrase", "x")
    assert excinfo.value.code == 2


def test_default_chunk_size_in_help_matches_the_library(capsys):
    from enclaverec.cli.main import main

    with pytest.raises(SystemExit):
        main(["data", "encrypt", "--help"])
    assert f"(default: {encrypted.DEFAULT_CHUNK_SIZE})" in capsys.readouterr().out


# --- secrets never leak ----------------------------------------------------------------


def _read_proc(pid: int, name: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return b""


@pytest.mark.parametrize("tamper", [False, True])
def test_secrets_never_appear_in_argv_environment_logs_or_files(tmp_path, dataset, owner, tamper):
    out, _ = dataset
    key, _, passphrase_file = owner
    private_pem = key.read_bytes()
    private_key = keys.load_private_key(key, PASSPHRASE.encode())
    header = encrypted.read_unverified_header(out / "day_0.txt.enc")
    data_key = encrypted.unwrap_data_key(header, private_key)
    target = tmp_path / "plain.txt"
    source = _tamper("chunk-bit", out) if tamper else out / "day_0.txt.enc"

    argv = [sys.executable, "-m", "enclaverec.cli.main", "data", "decrypt", str(source)]
    argv += ["--key", str(key), "--passphrase-file", str(passphrase_file)]
    argv += ["--output", str(target), "--log-level", "debug"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    samples: list[bytes] = []
    while process.poll() is None:
        samples.append(_read_proc(process.pid, "cmdline") + _read_proc(process.pid, "environ"))
        time.sleep(0.005)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == (4 if tamper else 0), stderr.decode()
    assert any(b"decrypt" in sample for sample in samples), "/proc was never read in time"

    secrets = [
        PASSPHRASE.encode(),
        b"PRIVATE KEY",
        private_pem[40:120],
        data_key.hex().encode(),
        data_key.hex().upper().encode(),
        data_key,
    ]
    observed = {"argv": " ".join(argv).encode(), "stdout": stdout, "stderr": stderr}
    observed.update({f"/proc sample {i}": s for i, s in enumerate(samples)})
    for path in tmp_path.rglob("*"):
        if path.is_file() and path not in (key, passphrase_file):
            observed[str(path)] = path.read_bytes()
    for where, content in observed.items():
        for secret in secrets:
            assert secret not in content, f"secret found in {where}"


def test_stdout_reader_stopping_early_is_not_an_internal_error(tmp_path, owner, run_cli):
    # `decrypt --output - | head`: a closed pipe ends the command quietly (exit 1, as
    # Python does on EPIPE), without a traceback or "internal error".
    key, public, passphrase_file = owner
    big = tmp_path / "big.txt"
    big.write_bytes(criteo_lines(8000, 1))  # well over a pipe's 64 KiB buffer
    out = tmp_path / "enc"
    assert run_cli("data", "encrypt", big, "--owner-key", public, "--output", out)[0] == 0
    argv = [sys.executable, "-m", "enclaverec.cli.main", "data", "decrypt"]
    argv += [str(out / "big.txt.enc"), "--key", str(key), "--passphrase-file"]
    argv += [str(passphrase_file), "--output", "-"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    first = process.stdout.read(100)
    process.stdout.close()
    stderr = process.stderr.read() if process.stderr else b""
    assert process.wait(timeout=60) == 1
    assert first == big.read_bytes()[:100]
    assert b"internal error" not in stderr
    assert b"Traceback" not in stderr


def test_failed_encryption_removes_the_folder_it_created(tmp_path, owner, run_cli):
    _, public, _ = owner
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(gzip.compress(criteo_lines(3000, 2))[:-50])
    out = tmp_path / "new-folder"
    code, _, stderr = unwrapped(
        run_cli("data", "encrypt", broken, "--owner-key", public, "--output", out)
    )
    assert code == 2
    assert "damaged gzip" in stderr
    assert not out.exists()
