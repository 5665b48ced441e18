"""Enclave roles run their measured sources, never byte-code caches.

The simulated MRENCLAVE hashes ``.py`` files; Python would otherwise load a
``__pycache__/*.pyc`` whose header matches the source's mtime and size, so a forged cache
would run unmeasured code (issue 9, finding 11). A role's process is therefore started with
``-B`` (write no caches) and ``-X pycache_prefix=DIR`` with DIR a fresh, private, empty
directory: Python then looks for caches only there, finds none, and compiles the sources
it measured. Under Gramine the manifest does the same with ``PYTHONPYCACHEPREFIX`` in a
tmpfs.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence

from enclaverec.errors import UsageError

_PREFIX_NAME = "enclaverec-no-bytecode-"


def source_only_command(entry: str, args: Sequence[str]) -> list[str]:
    """The command that runs module ``entry`` with ``args`` from sources only."""
    prefix = tempfile.mkdtemp(prefix=_PREFIX_NAME)  # mode 0700, empty, ours
    return [sys.executable, "-B", "-X", f"pycache_prefix={prefix}", "-m", entry, *args]


def exec_source_only(entry: str, args: Sequence[str]) -> None:
    """Replace this process with :func:`source_only_command` (same pid, so whoever started
    us keeps waiting on the role itself)."""
    command = source_only_command(entry, args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def require_source_only() -> None:
    """Refuse to run a role whose interpreter may read byte-code caches."""
    prefix = sys.pycache_prefix
    if not sys.dont_write_bytecode or prefix is None:
        raise UsageError(
            "an enclave role runs from its measured sources only: start it with "
            "`enclaverec <scheme> <role>` (or python3 -B -X pycache_prefix=EMPTY_DIR -m ...)"
        )
    try:
        entries = os.listdir(prefix)
    except FileNotFoundError:
        return  # no cache can be read from a directory that does not exist
    if entries:
        raise UsageError(f"the byte-code prefix {prefix} is not empty: refusing its caches")
