"""Enclave roles run their measured sources, never byte-code caches of ``enclaverec``.

The simulated MRENCLAVE hashes the ``.py`` files of the role's closure; Python would
otherwise load a ``__pycache__/*.pyc`` whose header matches the source's mtime and size, so
a forged cache would run unmeasured code (issue 9, finding 11). A role's process is
therefore started as ``python3 -B -c BOOTSTRAP ENTRY ARGS...``: the bootstrap, inline source
that imports nothing of ``enclaverec``, puts a finder first on ``sys.meta_path`` that loads
``enclaverec`` and ``enclaverec.*`` with a loader compiling the ``.py`` source (it never
reads a cache), then runs ENTRY as ``__main__``. Third-party packages and the standard
library are not measured and keep their installed caches (TensorFlow's import would
otherwise be compiled from source on every start). ``-B`` writes no caches.

Under Gramine the manifest runs ``python3 -m ENTRY`` with ``PYTHONDONTWRITEBYTECODE`` and
``PYTHONPYCACHEPREFIX`` in an empty tmpfs (no cache is read at all); the check accepts both.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from enclaverec.errors import UsageError

PACKAGE = "enclaverec"

FINDER_SOURCE = '''\
import sys
from importlib.machinery import SourceFileLoader


class SourceOnlyLoader(SourceFileLoader):
    """Compiles the module's .py source; never reads (nor writes) a byte-code cache."""

    def get_code(self, fullname):
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


class SourceOnlyFinder:
    """First on sys.meta_path: the other finders locate enclaverec modules (a path entry,
    an editable install's finder), this one swaps in the source-only loader."""

    package = "enclaverec"
    loader_type = SourceOnlyLoader

    def find_spec(self, name, path=None, target=None):
        if name != self.package and not name.startswith(self.package + "."):
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if type(spec.loader) is not SourceFileLoader:  # a lone .pyc, an extension, a namespace
            raise ImportError(f"{name} is not a source file ({spec.origin}): refused", name=name)
        spec.loader = SourceOnlyLoader(name, spec.origin)
        return spec
'''
"""The finder and its loader, as source: the bootstrap compiles it under a fixed name, and
:func:`check_source_only` compiles it again to recognise what is installed."""

_FINDER_FILENAME = "<enclaverec source-only finder>"

BOOTSTRAP = f"""\
import sys
exec(compile({FINDER_SOURCE!r}, {_FINDER_FILENAME!r}, "exec"))
sys.meta_path.insert(0, SourceOnlyFinder())
import runpy
del sys.argv[0]  # "-c": argv is now ENTRY ARGS...; run_module puts the entry's path first
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""
"""``python3 -B -c BOOTSTRAP ENTRY ARGS...``: installs the finder, then runs ENTRY like
``-m`` would. Inline, so nothing of ``enclaverec`` can be read from a cache before it."""

_LAUNCH_HINT = (
    "an enclave role runs from its measured sources only: start it with "
    "`enclaverec <scheme> <role>` (python3 -B -c BOOTSTRAP ENTRY, tee/bytecode.py)"
)


def source_only_command(entry: str, args: Sequence[str]) -> list[str]:
    """The command that runs module ``entry`` with ``args``, ``enclaverec`` from sources."""
    return [sys.executable, "-B", "-c", BOOTSTRAP, entry, *args]


def exec_source_only(entry: str, args: Sequence[str]) -> None:
    """Replace this process with :func:`source_only_command` (same pid, so whoever started
    us keeps waiting on the role itself)."""
    command = source_only_command(entry, args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


@functools.cache
def _reference_classes() -> tuple[type, type]:
    namespace: dict[str, Any] = {}
    # dont_inherit: this module's `from __future__` flags would change the code objects.
    exec(compile(FINDER_SOURCE, _FINDER_FILENAME, "exec", dont_inherit=True), namespace)
    return namespace["SourceOnlyFinder"], namespace["SourceOnlyLoader"]


def _same_class(installed: type, reference: type) -> bool:
    """Same name, same bases and the same compiled methods (so a look-alike finder, or one
    whose ``get_code`` reads caches, is not taken for ours)."""

    def methods(cls: type) -> dict[str, Any]:
        return {
            name: getattr(value, "__code__", value)
            for name, value in vars(cls).items()
            if not name.startswith("__")
        }

    ours, reference_methods = methods(installed), methods(reference)
    ours.pop("loader_type", None)  # a class: checked on its own by the caller
    reference_methods.pop("loader_type", None)
    return (
        installed.__name__ == reference.__name__
        and installed.__bases__ == reference.__bases__
        and ours == reference_methods
    )


def _finder_loader(meta_path: Sequence[object]) -> type | None:
    """The source-only loader class when our finder is first on ``meta_path``, else None."""
    if not meta_path:
        return None
    finder_type, loader_type = _reference_classes()
    installed = type(meta_path[0])
    if not _same_class(installed, finder_type):
        return None
    loader = getattr(installed, "loader_type", None)
    return loader if isinstance(loader, type) and _same_class(loader, loader_type) else None


def _is_ours(name: str, module: ModuleType | None) -> bool:
    spec = getattr(module, "__spec__", None)
    names = (name, getattr(spec, "name", None) or "")  # the entry runs as __main__
    return any(n == PACKAGE or n.startswith(PACKAGE + ".") for n in names)


def check_source_only(
    meta_path: Sequence[object],
    modules: Mapping[str, ModuleType | None],
    *,
    dont_write_bytecode: bool,
    pycache_prefix: str | None,
) -> None:
    """Refuse (UsageError) an interpreter that may have run, or may run, a byte-code cache
    of ``enclaverec``. Accepted: the bootstrap's finder first on ``meta_path`` with every
    ``enclaverec`` module loaded by its loader; or (Gramine) an empty cache prefix."""
    if not dont_write_bytecode:
        raise UsageError(_LAUNCH_HINT)
    loader_type = _finder_loader(meta_path)
    if loader_type is not None:
        stray = sorted(
            name
            for name, module in list(modules.items())
            if _is_ours(name, module)
            and not isinstance(
                getattr(getattr(module, "__spec__", None), "loader", None), loader_type
            )
        )
        if stray:
            raise UsageError(
                "enclaverec modules were not loaded from their sources (a byte-code cache may "
                f"have run): {', '.join(stray[:5])}" + (" ..." if len(stray) > 5 else "")
            )
        return
    if pycache_prefix is None:
        raise UsageError(_LAUNCH_HINT)
    try:
        entries = os.listdir(pycache_prefix)
    except FileNotFoundError:
        return  # no cache can be read from a directory that does not exist
    if entries:
        raise UsageError(f"the byte-code prefix {pycache_prefix} is not empty: refusing its caches")


def require_source_only() -> None:
    """:func:`check_source_only` for this process."""
    check_source_only(
        sys.meta_path,
        sys.modules,
        dont_write_bytecode=sys.dont_write_bytecode,
        pycache_prefix=sys.pycache_prefix,
    )
