from __future__ import annotations

import pytest

from enclaverec.crypto.aead import (
    AES256GCM,
    KEY_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    hkdf_sha256,
    random_key,
    random_nonce,
)
from enclaverec.errors import IntegrityError, UsageError


def _flip(data: bytes, index: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 1 << bit
    return bytes(changed)


def test_aes_gcm_known_answer():
    # McGrew and Viega, "The Galois/Counter Mode of Operation", test case 14 (AES-256,
    # zero key, zero IV, one zero block): checks that the recipe is plain AES-256-GCM.
    cipher = AES256GCM(bytes(32))
    out = cipher.encrypt(bytes(12), bytes(16), b"")
    assert out.hex() == "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"


def test_hkdf_sha256_known_answer():
    # RFC 5869, appendix A.1.
    okm = hkdf_sha256(
        bytes.fromhex("0b" * 22),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        length=42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hkdf_labels_give_independent_keys():
    ikm = random_key()
    assert hkdf_sha256(ikm, info=b"a") != hkdf_sha256(ikm, info=b"b")
    assert len(hkdf_sha256(ikm, info=b"a")) == KEY_SIZE


def test_hkdf_refuses_empty_key_material():
    with pytest.raises(UsageError, match="non-empty"):
        hkdf_sha256(b"", info=b"x")


def test_round_trip():
    cipher = AES256GCM(random_key())
    nonce = random_nonce()
    out = cipher.encrypt(nonce, b"plaintext", b"aad")
    assert len(out) == len(b"plaintext") + TAG_SIZE
    assert cipher.decrypt(nonce, out, b"aad") == b"plaintext"


def test_wrong_key_refused():
    nonce = random_nonce()
    out = AES256GCM(random_key()).encrypt(nonce, b"plaintext", b"")
    with pytest.raises(IntegrityError, match="authentication failed"):
        AES256GCM(random_key()).decrypt(nonce, out, b"")


@pytest.mark.parametrize("part", ["ciphertext", "tag", "aad", "nonce"])
def test_any_flipped_bit_refused(part):
    cipher = AES256GCM(random_key())
    nonce, aad = random_nonce(), b"associated"
    out = cipher.encrypt(nonce, b"some plaintext", aad)
    if part == "ciphertext":
        out = _flip(out, 0)
    elif part == "tag":
        out = _flip(out, len(out) - 1, 7)
    elif part == "aad":
        aad = _flip(aad, 3)
    else:
        nonce = _flip(nonce, NONCE_SIZE - 1)
    with pytest.raises(IntegrityError):
        cipher.decrypt(nonce, out, aad)


def test_truncated_ciphertext_refused():
    cipher = AES256GCM(random_key())
    nonce = random_nonce()
    out = cipher.encrypt(nonce, b"some plaintext", b"")
    for length in range(len(out)):
        with pytest.raises(IntegrityError):
            cipher.decrypt(nonce, out[:length], b"")


def test_failures_share_one_message():
    cipher = AES256GCM(random_key())
    nonce = random_nonce()
    out = cipher.encrypt(nonce, b"x", b"")
    messages = set()
    for args in ((nonce, _flip(out, 0), b""), (nonce, out[:3], b""), (nonce, out, b"y")):
        with pytest.raises(IntegrityError) as excinfo:
            cipher.decrypt(*args)
        messages.add(str(excinfo.value))
    assert len(messages) == 1


def test_bad_key_and_nonce_sizes_refused():
    with pytest.raises(UsageError, match="32 bytes"):
        AES256GCM(bytes(16))
    with pytest.raises(UsageError, match="12 bytes"):
        AES256GCM(random_key()).encrypt(bytes(8), b"x", b"")


def test_repr_hides_the_key():
    key = random_key()
    text = repr(AES256GCM(key))
    assert key.hex() not in text
    assert "hidden" in text


class _OldAESGCM:
    """cryptography before 45: encrypt and decrypt only."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._inner = AESGCM(key)
        self.encrypt = self._inner.encrypt
        self.decrypt = self._inner.decrypt


@pytest.mark.parametrize("old_library", [False, True])
def test_into_variants_match_and_refuse(old_library):
    key, nonce = random_key(), random_nonce()
    cipher = AES256GCM(key)
    if old_library:
        cipher._aead = _OldAESGCM(key)
    plaintext = bytearray(b"x" * 1000)
    out = bytearray(1016)
    cipher.encrypt_into(nonce, memoryview(plaintext)[:1000], b"aad", out)
    assert bytes(out) == AES256GCM(key).encrypt(nonce, bytes(plaintext), b"aad")
    back = bytearray(1000)
    cipher.decrypt_into(nonce, out, b"aad", back)
    assert back == plaintext
    out[5] ^= 1
    with pytest.raises(IntegrityError):
        cipher.decrypt_into(nonce, out, b"aad", back)
    with pytest.raises(UsageError, match="1016 bytes"):
        cipher.encrypt_into(nonce, plaintext, b"", bytearray(1000))
    with pytest.raises(UsageError, match="1000 bytes"):
        cipher.decrypt_into(nonce, out, b"", bytearray(10))
