"""Private keys kept across restarts only in sealed state."""

from __future__ import annotations

import stat

import pytest

from enclaverec.crypto.keys import fingerprint
from enclaverec.errors import IntegrityError, UsageError
from enclaverec.tee.sealed_keys import load_or_create_sealed_key, sealed_key_path
from enclaverec.tee.simulated_backend import SimulatedBackend


def test_made_once_then_unsealed(tmp_path, sim_backend):
    made = load_or_create_sealed_key(sim_backend, tmp_path / "state", "tls")
    again = load_or_create_sealed_key(sim_backend, tmp_path / "state", "tls")
    assert (made.created, again.created) == (True, False)
    assert fingerprint(again.private_key.public_key()) == made.fingerprint
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700


def test_the_file_is_sealed_not_a_key(tmp_path, sim_backend):
    made = load_or_create_sealed_key(sim_backend, tmp_path, "ca")
    data = made.path.read_bytes()
    scalar = made.private_key.private_numbers().private_value.to_bytes(32, "big")
    assert data.startswith(b"ERSEALED")
    assert b"PRIVATE KEY" not in data and scalar not in data
    assert stat.S_IMODE(made.path.stat().st_mode) == 0o600


def test_keys_of_different_names_differ(tmp_path, sim_backend):
    one = load_or_create_sealed_key(sim_backend, tmp_path, "tls")
    two = load_or_create_sealed_key(sim_backend, tmp_path, "ca")
    assert one.fingerprint != two.fingerprint


def test_another_measurement_cannot_unseal(tmp_path, sim_pki, sim_backend):
    load_or_create_sealed_key(sim_backend, tmp_path, "tls")
    other = SimulatedBackend(sim_pki, bytes.fromhex("66" * 32))
    with pytest.raises(IntegrityError, match="move it away"):
        load_or_create_sealed_key(other, tmp_path, "tls")


def test_a_sealed_key_cannot_be_swapped_for_another_name(tmp_path, sim_backend):
    # The purpose (p256-key/<name>) is authenticated: the host cannot rename ca.sealed to
    # tls.sealed to make the server use its CA key for TLS.
    load_or_create_sealed_key(sim_backend, tmp_path, "ca")
    sealed_key_path(tmp_path, "ca").rename(sealed_key_path(tmp_path, "tls"))
    with pytest.raises(IntegrityError):
        load_or_create_sealed_key(sim_backend, tmp_path, "tls")


def test_a_modified_file_is_refused(tmp_path, sim_backend):
    made = load_or_create_sealed_key(sim_backend, tmp_path, "tls")
    data = bytearray(made.path.read_bytes())
    data[40] ^= 0x80
    made.path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        load_or_create_sealed_key(sim_backend, tmp_path, "tls")


@pytest.mark.parametrize("name", ["", "TLS", "../tls", "a" * 33])
def test_refuses_bad_names(tmp_path, sim_backend, name):
    with pytest.raises(UsageError):
        load_or_create_sealed_key(sim_backend, tmp_path, name)


def test_two_processes_starting_at_once_end_with_one_key(tmp_path, sim_backend):
    import threading

    results = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        results.append(load_or_create_sealed_key(sim_backend, tmp_path / "state", "tls"))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fingerprints = {fingerprint(r.private_key.public_key()) for r in results}
    # Every starter holds the key that is on disk: none was silently replaced.
    assert len(fingerprints) == 1
    again = load_or_create_sealed_key(sim_backend, tmp_path / "state", "tls")
    assert fingerprint(again.private_key.public_key()) in fingerprints
    assert sum(r.created for r in results) == 1
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["tls.sealed"]
