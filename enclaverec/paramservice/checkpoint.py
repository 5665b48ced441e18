"""Sealed checkpoints of the enclave roles that hold a model (the federated aggregator,
the parameter servers): named arrays plus a JSON document of bookkeeping, packed as one
``.npz`` archive (read without pickle) and sealed to the enclave's sealing key.

The plaintext exists only inside the enclave; on disk there is only the sealed file,
written atomically, so a crash leaves the previous checkpoint or the new one.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from enclaverec.errors import IntegrityError, MalformedInputError
from enclaverec.tee.sealing import seal_file, unseal_file

META = "meta"


def pack(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> bytes:
    """Arrays (names without the reserved ``meta``) and a JSON-able document -> bytes."""
    if META in arrays:
        raise ValueError(f"{META!r} is reserved for the bookkeeping document")
    contents = dict(arrays)
    contents[META] = np.frombuffer(json.dumps(dict(meta), sort_keys=True).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **contents)
    return buffer.getvalue()


def unpack(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The inverse of :func:`pack`; ``MalformedInputError`` for anything else."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            contents = {name: archive[name] for name in archive.files}
        meta = json.loads(contents.pop(META).tobytes())
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise MalformedInputError("the checkpoint's contents are malformed") from exc
    if not isinstance(meta, dict):
        raise MalformedInputError("the checkpoint's bookkeeping is not a document")
    return contents, meta


def section(contents: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays whose names start with ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in contents.items() if k.startswith(prefix)}


def save_sealed(path: Path, sealing_key: bytes, purpose: str, plaintext: bytes) -> None:
    """Seal and write atomically."""
    seal_file(path, sealing_key, purpose, plaintext)


def load_sealed(path: Path, sealing_key: bytes, purpose: str) -> bytes | None:
    """The unsealed checkpoint at ``path``, or None if there is none. A file that does not
    unseal (modified, or sealed by another measurement) is an ``IntegrityError``: a role
    refuses to start rather than silently starting over."""
    if not path.exists():
        return None
    return unseal_file(path, sealing_key, purpose)


def integrity(path: Path, exc: MalformedInputError) -> IntegrityError:
    """A sealed checkpoint whose authenticated contents do not parse: it was sealed by a
    role of another plan, which is an integrity failure for this one."""
    return IntegrityError(f"{path}: {exc}")
