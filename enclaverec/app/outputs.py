"""Where commands write: the one rule for output folders, checked before any work starts.

The rule (README, "Output folders"): a command writes into a new or empty folder; a folder
that holds anything is refused unless the caller says ``overwrite``, and then the command
replaces only the entries it writes itself (its ``owned`` names), never anything else. A
path that is a file, or a folder that cannot be written, is refused at once, so that a
long run never ends in a failure to save its results.

``demo`` goes one step further: it marks each folder it makes (:data:`DEMO_MARK`) and
replaces on a rerun only folders holding that mark.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from enclaverec.errors import OutputFolderError

DEMO_MARK = ".enclaverec-demo"
"""The file that marks a folder as made by ``enclaverec demo`` (which may replace it)."""


def _writable_parent(path: Path) -> Path:
    """The nearest existing ancestor of ``path``, which must be a writable folder."""
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise OutputFolderError(f"cannot create {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputFolderError(f"cannot create {path}: {parent} is not writable")
    return parent


def check_output_folder(path: Path, *, overwrite: bool, flag: str = "--output") -> Path:
    """Refuse ``path`` unless the command may write there; nothing is created or removed.

    Raises:
        OutputFolderError: ``path`` is a file, not writable, or holds entries and
            ``overwrite`` is false (the message names the folder and ``--overwrite``).
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise OutputFolderError(f"{flag} {path} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputFolderError(f"{flag} {path} is not writable")
        if not overwrite and any(path.iterdir()):
            raise OutputFolderError(
                f"refusing to write into the non-empty folder {path} "
                "(give --overwrite to replace what this command writes there)"
            )
    else:
        _writable_parent(path)
    return path


def prepare_output_folder(path: Path, *, overwrite: bool, owned: Iterable[str]) -> Path:
    """Check ``path`` (as :func:`check_output_folder`), create it, and with ``overwrite``
    remove the entries named in ``owned`` that a previous run left there."""
    path = check_output_folder(path, overwrite=overwrite)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"cannot create {path}: {exc.strerror}") from exc
    if overwrite:
        for name in owned:
            entry = path / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
    return path


def check_output_file(path: Path, *, flag: str = "--output") -> Path:
    """A file a command writes at its end (figures as JSON): checked before the work, so
    that a folder given for it, or a folder that cannot be written, costs no run."""
    path = Path(path)
    if path.is_dir():
        raise OutputFolderError(
            f"{flag} {path} is a folder, not a file: give a file name (e.g. {path}/figures.json)"
        )
    if not path.parent.is_dir():
        # The report writers create no folders (files.write_atomically).
        raise OutputFolderError(f"directory does not exist: {path.parent}")
    if not path.exists():
        _writable_parent(path)
    elif not os.access(path, os.W_OK):
        raise OutputFolderError(f"{flag} {path} is not writable")
    return path


def check_export_folder(path: Path, *, flag: str = "--export") -> Path:
    """A model export goes to a new or empty folder (it is never merged or replaced)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise OutputFolderError(f"{flag} {path} is a file, not a folder")
        if any(path.iterdir()):
            raise OutputFolderError(f"refusing to export into the non-empty folder {path}")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputFolderError(f"{flag} {path} is not writable")
    else:
        _writable_parent(path)
    return path


def check_demo_folder(path: Path) -> None:
    """A demo mode's folder is new, empty, or marked as the demo's own; anything else is
    somebody's work, and the demo stops naming it."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        _writable_parent(path)
        return
    if not path.is_dir() or path.is_symlink():
        raise OutputFolderError(f"{path} is in the demo's way and is not the demo's folder")
    if any(path.iterdir()) and not (path / DEMO_MARK).is_file():
        raise OutputFolderError(
            f"{path} holds files the demo did not make; move it away or choose another --output"
        )


def claim_demo_folder(path: Path) -> Path:
    """Empty a folder :func:`check_demo_folder` accepted and mark it as the demo's."""
    check_demo_folder(path)
    if path.exists():
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True)
        (path / DEMO_MARK).write_text("made by `enclaverec demo`, which replaces it on a rerun\n")
    except OSError as exc:
        raise OutputFolderError(f"cannot create {path}: {exc.strerror}") from exc
    return path
