"""The job's result (the best model and its metrics), encrypted to the owner's public key
by the key broker and decrypted on the owner's machine.

Format (canonical CBOR map, version 1)::

    {"v": 1, "job": NAME, "wrapped_key": ECIES(content key -> owner), "nonce": 12 bytes,
     "ciphertext": AES-256-GCM(content key, nonce, payload, aad)}

with ``aad`` = canonical CBOR ``["enclaverec result v1", NAME, wrapped_key]`` and the
payload the canonical CBOR map ``{"metrics": JSON bytes, "model": ArrayBundle bytes}``.
The content key is wrapped with ``crypto.keywrap`` under the context
``enclaverec/result/v1/NAME``, so a result cannot be passed off as another job's. The host
that stores or relays the blob learns its size and the job's name, nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from enclaverec.arrays import Arrays
from enclaverec.crypto import keywrap
from enclaverec.crypto.aead import AES256GCM, random_key, random_nonce
from enclaverec.errors import IntegrityError, MalformedInputError, UnknownFormatError
from enclaverec.transport import tensors
from enclaverec.transport.proto import tensors_pb2

LABEL = "enclaverec result v1"
MAX_RESULT_BYTES = 2 << 30


@dataclass(frozen=True)
class JobResult:
    """The decrypted result: metrics (a JSON object) and the best model's arrays."""

    metrics: Mapping[str, Any]
    model: Arrays = field(repr=False)


def _context(job: str) -> bytes:
    return f"enclaverec/result/v1/{job}".encode()


def _aad(job: str, wrapped_key: bytes) -> bytes:
    return cbor2.dumps([LABEL, job, wrapped_key], canonical=True)


def seal_result(
    job: str, metrics: Mapping[str, Any], model: Arrays, owner: ec.EllipticCurvePublicKey
) -> bytes:
    """Encrypt ``metrics`` and ``model`` so that only ``owner``'s private key opens them."""
    payload = cbor2.dumps(
        {
            "metrics": json.dumps(metrics, sort_keys=True).encode(),
            "model": tensors.encode_bundle(model).SerializeToString(),
        },
        canonical=True,
    )
    content_key = random_key()
    wrapped = keywrap.wrap_key(content_key, owner, context=_context(job))
    nonce = random_nonce()
    ciphertext = AES256GCM(content_key).encrypt(nonce, payload, _aad(job, wrapped))
    return cbor2.dumps(
        {"v": 1, "job": job, "wrapped_key": wrapped, "nonce": nonce, "ciphertext": ciphertext},
        canonical=True,
    )


def result_job(blob: bytes) -> str:
    """The job a result blob names (unauthenticated until :func:`open_result`)."""
    return _parse(blob)["job"]


def _parse(blob: bytes) -> dict[str, Any]:
    try:
        value = cbor2.loads(blob)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise UnknownFormatError("not an enclaverec job result (not CBOR)") from exc
    if not isinstance(value, dict) or value.get("v") != 1:
        raise UnknownFormatError("not a version 1 enclaverec job result")
    for key, kind in (
        ("job", str),
        ("wrapped_key", bytes),
        ("nonce", bytes),
        ("ciphertext", bytes),
    ):
        if not isinstance(value.get(key), kind):
            raise IntegrityError("the job result is damaged")
    return value


def open_result(blob: bytes, owner: ec.EllipticCurvePrivateKey, *, job: str) -> JobResult:
    """Decrypt a result for ``job`` with the owner's private key. ``IntegrityError`` for
    another job's result, another owner's, or any modified byte."""
    value = _parse(blob)
    if value["job"] != job:
        raise IntegrityError(f"the result is for job {value['job']!r}, not {job!r}")
    content_key = keywrap.unwrap_key(value["wrapped_key"], owner, context=_context(job))
    payload = AES256GCM(content_key).decrypt(
        value["nonce"], value["ciphertext"], _aad(job, value["wrapped_key"])
    )
    try:
        inner = cbor2.loads(payload)
        metrics = json.loads(inner["metrics"])
        bundle = tensors_pb2.ArrayBundle()
        bundle.ParseFromString(inner["model"])
        model, sparse = tensors.decode_bundle(bundle)
    except (cbor2.CBORDecodeError, KeyError, TypeError, ValueError) as exc:
        raise MalformedInputError("the authenticated job result does not parse") from exc
    if sparse:
        raise MalformedInputError("a job result holds whole arrays only")
    return JobResult(metrics=metrics, model=model)
