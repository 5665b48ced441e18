"""Files, safely: writes never half-done, never silently replacing, never readable by others
before their mode is set (shared by sealing, keys, encrypted data sets and the simulation
deployment); configuration files read with one clear error for every way they can fail."""

from __future__ import annotations

import contextlib
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from enclaverec.errors import ConfigError, PathError, StorageError, UsageError


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable: it is only once the directory entry is on
    disk (POSIX)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``data``; refuse if it exists (``O_EXCL``: never overwrite by
    accident). The mode applies at creation, so the file is never readable by others,
    not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a
    part: a temporary file in the same folder (created with ``mode``), fsync, rename,
    fsync of the folder. The temporary file is removed on any failure."""
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():
        raise UsageError(f"directory does not exist: {directory}")
    try:
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise StorageError(f"cannot create a file in {directory}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
        fsync_directory(directory)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        if isinstance(exc, OSError):
            if PathError.is_path_error(exc):
                raise PathError.from_os_error(exc, path=path, what="file") from exc
            raise StorageError(f"cannot write {path}: {exc.strerror}") from exc
        raise


def read_toml(path: Path) -> tuple[dict[str, Any], bytes]:
    """A TOML file, parsed, and its exact bytes (for a measured configuration the bytes
    are what is measured). Missing or unreadable: ``UsageError``; not UTF-8 TOML:
    ``ConfigError``; both exit 2."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:  # missing, a directory, no permission, ...
        raise PathError.from_os_error(exc, path=path, what="configuration file") from exc
    try:
        return tomllib.loads(raw.decode("utf-8")), raw
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
