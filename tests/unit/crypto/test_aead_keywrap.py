from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from enclaverec.crypto import keys
from enclaverec.crypto.aead import random_key
from enclaverec.crypto.keywrap import WRAPPED_KEY_SIZE, unwrap_key, wrap_key
from enclaverec.errors import IntegrityError, UsageError

CONTEXT = b"enclaverec/test/context"


@pytest.fixture(scope="module")
def owner():
    return keys.generate_private_key()


def test_round_trip(owner):
    key = random_key()
    wrapped = wrap_key(key, owner.public_key(), context=CONTEXT)
    assert len(wrapped) == WRAPPED_KEY_SIZE
    assert key not in wrapped
    assert unwrap_key(wrapped, owner, context=CONTEXT) == key


def test_each_wrap_uses_a_fresh_ephemeral_key(owner):
    key = random_key()
    first = wrap_key(key, owner.public_key(), context=CONTEXT)
    second = wrap_key(key, owner.public_key(), context=CONTEXT)
    assert first[:65] != second[:65]
    assert first[65:] != second[65:]


def test_wrong_private_key_refused(owner):
    wrapped = wrap_key(random_key(), owner.public_key(), context=CONTEXT)
    with pytest.raises(IntegrityError, match="could not unwrap"):
        unwrap_key(wrapped, keys.generate_private_key(), context=CONTEXT)


def test_wrong_context_refused(owner):
    wrapped = wrap_key(random_key(), owner.public_key(), context=CONTEXT)
    with pytest.raises(IntegrityError, match="could not unwrap"):
        unwrap_key(wrapped, owner, context=b"enclaverec/test/other")


def test_every_modified_byte_refused(owner):
    wrapped = wrap_key(random_key(), owner.public_key(), context=CONTEXT)
    for index in range(len(wrapped)):
        changed = bytearray(wrapped)
        changed[index] ^= 0x01
        with pytest.raises(IntegrityError, match="could not unwrap"):
            unwrap_key(bytes(changed), owner, context=CONTEXT)


def test_point_off_the_curve_refused(owner):
    wrapped = wrap_key(random_key(), owner.public_key(), context=CONTEXT)
    # x = y = 1 is not on P-256: an invalid-curve point must never reach ECDH.
    bogus = b"\x04" + (1).to_bytes(32, "big") * 2
    with pytest.raises(IntegrityError, match="could not unwrap"):
        unwrap_key(bogus + wrapped[65:], owner, context=CONTEXT)


def test_wrong_length_refused(owner):
    wrapped = wrap_key(random_key(), owner.public_key(), context=CONTEXT)
    for bad in (wrapped[:-1], wrapped + b"\x00", b""):
        with pytest.raises(IntegrityError):
            unwrap_key(bad, owner, context=CONTEXT)


def test_only_p256_and_32_byte_keys(owner):
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(UsageError, match="P-256"):
        wrap_key(random_key(), p384.public_key(), context=CONTEXT)
    with pytest.raises(UsageError, match="32-byte"):
        wrap_key(bytes(16), owner.public_key(), context=CONTEXT)
