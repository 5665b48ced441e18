"""What a role's interpreter loads: the console script, the role's third-party imports and
a probe subprocess that imports them and reports every file it loaded or mapped."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from enclaverec.errors import (
    UsageError,
)
from enclaverec.tee.closure import parse_source
from enclaverec.tee.measurement import (
    measured_files,
    package_root,
)

PROBE_TIMEOUT_SECONDS = 600
_PROBE_MARKER = "ENCLAVEREC-GRAMINE-PROBE "


# --- the console script ---------------------------------------------------------------------


def read_console_script(script: Path) -> str:
    """The interpreter named by the ``#!`` line of ``script`` (pip's ``enclaverec`` script).

    Gramine runs a script entry point with the interpreter of its ``#!`` line (POSIX
    semantics: ``interpreter script argv[1:]``), so the script and that interpreter are
    both trusted files and ``loader.argv`` keeps the role's measured argv unchanged.
    """
    try:
        with script.open("rb") as handle:
            first = handle.readline(4096)
    except FileNotFoundError as exc:
        raise UsageError(
            f"the console script {script} does not exist: install enclaverec with pip "
            "into the environment the enclave will run"
        ) from exc
    line = first.decode("utf-8", errors="replace").rstrip("\r\n")
    interpreter = line[2:].strip() if line.startswith("#!") else ""
    if not interpreter.startswith("/") or any(ch.isspace() for ch in interpreter):
        raise UsageError(
            f"the first line of {script} must be '#!' and the absolute path of the Python "
            f"interpreter without arguments, got {line[:120]!r} (pip writes a shell "
            "trampoline when the path is too long or has spaces: use a shorter venv path)"
        )
    if not Path(interpreter).name.startswith("python"):
        raise UsageError(
            f"the first line of {script} names {interpreter}, not a Python interpreter (pip "
            "writes a /bin/sh trampoline when the venv path is too long: use a shorter one)"
        )
    if not Path(interpreter).is_file():
        raise UsageError(f"the interpreter {interpreter} named by {script} does not exist")
    if Path(interpreter).parent.resolve() != Path(interpreter).parent:
        raise UsageError(
            f"the interpreter's directory {Path(interpreter).parent} goes through a symbolic "
            "link: create the virtual environment at its real path"
        )
    return interpreter


def default_console_script() -> Path:
    """The ``enclaverec`` console script of the running environment."""
    import sysconfig

    return Path(sysconfig.get_path("scripts")) / "enclaverec"


# --- what the role imports ------------------------------------------------------------------


def role_modules(role: str) -> tuple[str, ...]:
    """Dotted names of the role's measured package modules."""
    names = []
    for item in measured_files(role):
        parts = item.path.removesuffix(".py").split("/")
        if parts[-1] == "__main__":
            continue  # importing it would run the program
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return tuple(sorted(names))


def third_party_imports(role: str, root: Path | None = None) -> tuple[str, ...]:
    """Every non-standard-library module the role's package files import, wherever the
    import statement is (module level, functions, ``try`` blocks)."""
    root = (root or package_root()).resolve()
    names: set[str] = set()
    for item in measured_files(role, root):
        source_path = root.parent / item.path
        try:
            tree = parse_source(source_path.read_bytes(), source_path)
        except SyntaxError as exc:
            raise UsageError(f"{item.path} does not parse: {exc}") from exc
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    top_self = root.name
    return tuple(
        sorted(
            name
            for name in names
            if name.split(".")[0] not in sys.stdlib_module_names
            and name.split(".")[0] not in (top_self, "__future__")
        )
    )


@dataclass(frozen=True)
class ProbeReport:
    """What a real interpreter loaded after importing the role's modules."""

    executable: str
    prefix: str
    version: str
    sys_path: tuple[str, ...]
    site_dirs: tuple[str, ...]
    module_files: tuple[str, ...]
    mapped_files: tuple[str, ...]
    failed: Mapping[str, str]


_PROBE_CODE = """
import importlib, json, site, sys
names = json.loads(sys.argv[1])
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
mapped = set()
with open("/proc/self/maps", encoding="utf-8", errors="surrogateescape") as maps:
    for line in maps:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            mapped.add(fields[5].rstrip("\\n"))
files = set()
for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None)
    if isinstance(path, str):
        files.add(path)
report = {
    "executable": sys.executable,
    "prefix": sys.prefix,
    "version": ".".join(map(str, sys.version_info[:3])),
    "sys_path": sys.path,
    "site_dirs": site.getsitepackages(),
    "module_files": sorted(files),
    "mapped_files": sorted(mapped),
    "failed": failed,
}
sys.stdout.flush()
sys.stdout.write("\\n" + MARKER + json.dumps(report) + "\\n")
""".replace("MARKER", repr(_PROBE_MARKER))


def run_probe(interpreter: str, modules: Sequence[str], env: Mapping[str, str]) -> ProbeReport:
    """Import ``modules`` in a fresh ``interpreter`` process with environment ``env`` (and
    nothing of this process's environment) and report what it loaded.

    Linux only: the mapped shared objects come from ``/proc/self/maps``.
    """
    try:
        completed = subprocess.run(
            [interpreter, "-c", _PROBE_CODE, json.dumps(list(modules))],
            env=dict(env),
            capture_output=True,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"could not run {interpreter} to list the role's files: {exc}") from exc
    stdout = completed.stdout.decode("utf-8", errors="replace")
    marker = stdout.rfind(_PROBE_MARKER)
    if completed.returncode != 0 or marker < 0:
        tail = completed.stderr.decode("utf-8", errors="replace").strip().splitlines()[-5:]
        raise UsageError(
            f"{interpreter} failed while importing the role's modules (exit "
            f"{completed.returncode}): {' | '.join(tail)}"
        )
    report = json.loads(stdout[marker + len(_PROBE_MARKER) :].splitlines()[0])
    return ProbeReport(
        executable=report["executable"],
        prefix=report["prefix"],
        version=report["version"],
        sys_path=tuple(report["sys_path"]),
        site_dirs=tuple(report["site_dirs"]),
        module_files=tuple(report["module_files"]),
        mapped_files=tuple(report["mapped_files"]),
        failed=dict(report["failed"]),
    )
