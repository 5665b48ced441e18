from __future__ import annotations

import os
import stat

import pytest

from enclaverec.errors import IntegrityError, StorageError, UnknownFormatError, UsageError
from enclaverec.tee import sealing

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PLAINTEXT = b"checkpoint bytes \x00\x01\x02 that must survive a restart"


def _header_size(purpose: str) -> int:
    return 8 + 1 + 16 + 1 + len(purpose) + 12


def test_round_trip_is_exact():
    for plaintext in (PLAINTEXT, b"", os.urandom(1 << 20)):
        blob = sealing.seal(KEY, "checkpoint", plaintext)
        assert sealing.unseal(KEY, "checkpoint", blob) == plaintext


def test_blob_layout():
    blob = sealing.seal(KEY, "checkpoint", PLAINTEXT)
    assert blob[:8] == b"ERSEALED"
    assert blob[8] == 1
    assert blob[9:25] == sealing.key_id(KEY)
    assert blob[25] == len("checkpoint")
    assert blob[26:36] == b"checkpoint"
    assert len(blob) == _header_size("checkpoint") + len(PLAINTEXT) + 16
    assert PLAINTEXT not in blob


def test_each_seal_draws_a_fresh_nonce():
    first = sealing.seal(KEY, "checkpoint", PLAINTEXT)
    second = sealing.seal(KEY, "checkpoint", PLAINTEXT)
    assert first[36:48] != second[36:48]
    assert first[48:] != second[48:]


def test_wrong_key_refused():
    blob = sealing.seal(KEY, "checkpoint", PLAINTEXT)
    with pytest.raises(IntegrityError, match="cannot unseal"):
        sealing.unseal(OTHER_KEY, "checkpoint", blob)


def test_wrong_key_with_a_forged_key_id_refused():
    # The key id is only a hint: a blob that claims the right key id still has to
    # authenticate under the key derived from it.
    blob = bytearray(sealing.seal(OTHER_KEY, "checkpoint", PLAINTEXT))
    blob[9:25] = sealing.key_id(KEY)
    with pytest.raises(IntegrityError, match="cannot unseal"):
        sealing.unseal(KEY, "checkpoint", bytes(blob))


def test_wrong_purpose_refused():
    # A sealed checkpoint must never be accepted as a sealed TLS key.
    blob = sealing.seal(KEY, "checkpoint", PLAINTEXT)
    with pytest.raises(IntegrityError, match="cannot unseal"):
        sealing.unseal(KEY, "tls-key", blob)


def test_relabelled_purpose_refused():
    # Rewriting the purpose field (same length) does not help: the key derivation and the
    # associated data both bind it.
    blob = sealing.seal(KEY, "tls-key", PLAINTEXT)
    forged = blob.replace(b"tls-key", b"tls-kez", 1)
    with pytest.raises(IntegrityError):
        sealing.unseal(KEY, "tls-kez", forged)


def test_every_flipped_bit_after_the_version_refused():
    blob = sealing.seal(KEY, "ckpt", b"0123456789")
    for index in range(9, len(blob)):
        for bit in range(8):
            changed = bytearray(blob)
            changed[index] ^= 1 << bit
            with pytest.raises(IntegrityError, match="cannot unseal"):
                sealing.unseal(KEY, "ckpt", bytes(changed))


def test_every_truncation_refused():
    blob = sealing.seal(KEY, "ckpt", b"0123456789")
    for length in range(len(blob)):
        with pytest.raises(IntegrityError, match="cannot unseal"):
            sealing.unseal(KEY, "ckpt", blob[:length])


def test_appended_bytes_refused():
    blob = sealing.seal(KEY, "ckpt", b"0123456789")
    with pytest.raises(IntegrityError):
        sealing.unseal(KEY, "ckpt", blob + b"\x00")


def test_unknown_version_refused_with_a_clear_error():
    blob = bytearray(sealing.seal(KEY, "ckpt", PLAINTEXT))
    blob[8] = 2
    with pytest.raises(
        UnknownFormatError, match="version 2 is not supported \\(this build reads version 1\\)"
    ):
        sealing.unseal(KEY, "ckpt", bytes(blob))


def test_foreign_magic_refused_with_a_clear_error():
    blob = sealing.seal(KEY, "ckpt", PLAINTEXT)
    with pytest.raises(UnknownFormatError, match="not an enclaverec sealed blob"):
        sealing.unseal(KEY, "ckpt", b"PK\x03\x04" + blob[4:])


def test_refusals_share_one_message():
    blob = sealing.seal(KEY, "ckpt", PLAINTEXT)
    messages = set()
    for key, purpose, data in (
        (OTHER_KEY, "ckpt", blob),
        (KEY, "other", blob),
        (KEY, "ckpt", blob[:-1]),
        (KEY, "ckpt", blob[:-1] + bytes([blob[-1] ^ 1])),
    ):
        with pytest.raises(IntegrityError) as excinfo:
            sealing.unseal(key, purpose, data)
        messages.add(str(excinfo.value))
    assert len(messages) == 1


def test_key_id_tells_keys_apart_and_reveals_no_key():
    kid = sealing.key_id(KEY)
    assert len(kid) == 16
    assert kid != sealing.key_id(OTHER_KEY)
    assert kid not in KEY
    assert sealing.sealed_key_id(sealing.seal(KEY, "ckpt", b"")) == kid


def test_rotation_finds_the_old_key_and_reports_it():
    old_blob = sealing.seal(OTHER_KEY, "ckpt", PLAINTEXT)
    plaintext, index = sealing.unseal_with_any([KEY, OTHER_KEY], "ckpt", old_blob)
    assert (plaintext, index) == (PLAINTEXT, 1)
    resealed = sealing.seal(KEY, "ckpt", plaintext)
    assert sealing.unseal_with_any([KEY, OTHER_KEY], "ckpt", resealed) == (PLAINTEXT, 0)


def test_rotation_without_a_matching_key_refused():
    blob = sealing.seal(OTHER_KEY, "ckpt", PLAINTEXT)
    with pytest.raises(IntegrityError, match="cannot unseal"):
        sealing.unseal_with_any([KEY, bytes(32)], "ckpt", blob)
    with pytest.raises(UsageError, match="no sealing keys"):
        sealing.unseal_with_any([], "ckpt", blob)


@pytest.mark.parametrize("purpose", ["", "Upper", "with space", "x" * 65, "-lead", "é"])
def test_invalid_purpose_refused(purpose):
    with pytest.raises(UsageError, match="invalid sealing purpose"):
        sealing.seal(KEY, purpose, PLAINTEXT)


def test_short_sealing_key_refused():
    with pytest.raises(UsageError, match="at least 16 bytes"):
        sealing.seal(bytes(15), "ckpt", PLAINTEXT)


def test_gramine_sized_128_bit_key_accepted():
    blob = sealing.seal(bytes(16), "ckpt", PLAINTEXT)
    assert sealing.unseal(bytes(16), "ckpt", blob) == PLAINTEXT


# --- files ------------------------------------------------------------------------------


def test_seal_file_round_trip_mode_0600(tmp_path):
    path = tmp_path / "state.sealed"
    sealing.seal_file(path, KEY, "ckpt", PLAINTEXT)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sealing.unseal_file(path, KEY, "ckpt") == PLAINTEXT
    assert [p.name for p in tmp_path.iterdir()] == ["state.sealed"]


def test_seal_file_replaces_atomically(tmp_path):
    path = tmp_path / "state.sealed"
    sealing.seal_file(path, KEY, "ckpt", b"old")
    sealing.seal_file(path, KEY, "ckpt", b"new")
    assert sealing.unseal_file(path, KEY, "ckpt") == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.sealed"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "state.sealed"
    sealing.seal_file(path, KEY, "ckpt", b"old")

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    from enclaverec import files

    monkeypatch.setattr(files.os, "fsync", failing_fsync)
    with pytest.raises(StorageError, match="No space left"):
        sealing.seal_file(path, KEY, "ckpt", b"new")
    monkeypatch.undo()
    assert sealing.unseal_file(path, KEY, "ckpt") == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.sealed"]


def test_truncated_file_refused(tmp_path):
    path = tmp_path / "state.sealed"
    sealing.seal_file(path, KEY, "ckpt", PLAINTEXT)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(IntegrityError, match="cannot unseal"):
        sealing.unseal_file(path, KEY, "ckpt")


def test_missing_file_and_folder_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        sealing.unseal_file(tmp_path / "absent", KEY, "ckpt")
    with pytest.raises(UsageError, match="does not exist"):
        sealing.seal_file(tmp_path / "no" / "state", KEY, "ckpt", PLAINTEXT)


def test_short_foreign_blob_is_not_ours_but_a_cut_one_is_damaged():
    with pytest.raises(UnknownFormatError, match="wrong magic"):
        sealing.unseal(KEY, "ckpt", b"hi")
    with pytest.raises(IntegrityError, match="cannot unseal"):
        sealing.unseal(KEY, "ckpt", b"ERSEA")
