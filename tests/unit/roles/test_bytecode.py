"""Enclave roles run their measured sources, never byte-code caches of ``enclaverec``
(issue 9, finding 11): a forged ``__pycache__/*.pyc`` with the original's mtime and size
does not run; third-party packages keep their caches; a role started otherwise refuses."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
from importlib._bootstrap_external import _code_to_timestamp_pyc  # the stdlib's own writer
from importlib.machinery import ModuleSpec, SourceFileLoader

import pytest

from enclaverec.errors import UsageError
from enclaverec.tee.bytecode import FINDER_SOURCE, check_source_only, source_only_command
from enclaverec.tee.measurement import package_root

MARKER = "FORGED-BYTECODE-RAN"


@pytest.fixture
def forged_package(tmp_path):
    """A copy of the package whose ``roles/aggregator.py`` has a forged cache: valid for
    the source's mtime and size, but compiled from other code."""
    copy = tmp_path / "site" / "enclaverec"
    shutil.copytree(package_root(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    source = copy / "roles" / "aggregator.py"
    stat = source.stat()
    forged = compile(f"print({MARKER!r}, flush=True)\nraise SystemExit(42)\n", str(source), "exec")
    cache = importlib.util.cache_from_source(str(source))
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache, "wb") as handle:
        handle.write(_code_to_timestamp_pyc(forged, stat.st_mtime, stat.st_size))
    return copy


def _run(command, package, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(package.parent)}
    env.pop("PYTHONPYCACHEPREFIX", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_forged_cache_runs_when_caches_are_read(forged_package, tmp_path):
    # The control: without the role's launch, Python runs the forged byte-code.
    plain = [sys.executable, "-m", "enclaverec.roles.aggregator", "--config", "x.toml"]
    result = _run(plain, forged_package, tmp_path)
    assert result.returncode == 42 and MARKER in result.stdout


def test_a_role_launched_as_the_cli_launches_it_runs_the_source(forged_package, tmp_path):
    command = source_only_command("enclaverec.roles.aggregator", ["--config", "missing.toml"])
    result = _run(command, forged_package, tmp_path)
    assert MARKER not in result.stdout + result.stderr
    # The real entry ran: it refuses the missing configuration (exit 2, one line).
    assert result.returncode == 2, result.stderr
    assert "missing.toml" in result.stderr
    assert not any(forged_package.rglob("*.pyc")) or all(
        path.name.startswith("aggregator.") for path in forged_package.rglob("*.pyc")
    )  # nothing written beside the sources either


def test_a_role_refuses_to_run_where_caches_may_be_read(tmp_path):
    plain = [sys.executable, "-m", "enclaverec.roles.keybroker", "--config", "job.toml"]
    result = subprocess.run(plain, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "measured sources only" in result.stderr


def _with_prelude(command: list[str], prelude: str) -> list[str]:
    """``command`` (the role's source-only launch) with ``prelude`` run before its bootstrap."""
    assert command[2] == "-c"
    return [*command[:3], prelude + command[3], *command[4:]]


def test_third_party_caches_are_read_and_enclaverec_caches_are_not(tmp_path):
    # Every file opened (audit event "open") in the aggregator's process; numpy is imported
    # there (by the role, or at the latest by the exit hook, after the finder is installed).
    report = tmp_path / "opened.json"
    prelude = (
        "import atexit, json, sys\n"
        "_opened = []\n"
        "sys.addaudithook(lambda event, args: event == 'open' and _opened.append(str(args[0])))\n"
        "def _dump():\n"
        "    import numpy\n"
        "    mods = {n: type(getattr(m, '__spec__', None) and m.__spec__.loader).__name__\n"
        "            for n, m in list(sys.modules.items())}\n"
        f"    with open({str(report)!r}, 'w') as f:\n"
        "        json.dump({'opened': _opened, 'loaders': mods, 'numpy': numpy.__cached__}, f)\n"
        "atexit.register(_dump)\n"
    )
    command = source_only_command("enclaverec.roles.aggregator", ["--config", "missing.toml"])
    result = subprocess.run(
        _with_prelude(command, prelude),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "missing.toml" in result.stderr, result.stderr
    seen = json.loads(report.read_text())
    caches = [path for path in seen["opened"] if path.endswith(".pyc")]
    numpy_cache = seen["numpy"]
    assert numpy_cache in caches  # numpy's own __init__ came from its installed cache
    assert not [path for path in caches if "/enclaverec/" in path]
    ours = {
        name: loader for name, loader in seen["loaders"].items() if name.startswith("enclaverec")
    }
    assert {"enclaverec", "enclaverec.roles.runner", "enclaverec.federated.aggregator"} <= set(ours)
    assert set(ours.values()) == {"SourceOnlyLoader"}
    assert seen["loaders"]["numpy"] == "SourceFileLoader"


def test_a_role_refuses_enclaverec_modules_loaded_before_the_finder(tmp_path):
    command = source_only_command("enclaverec.roles.keybroker", ["--config", "job.toml"])
    early = _with_prelude(command, "import enclaverec.errors\n")  # the plain loader, caches
    result = subprocess.run(early, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "not loaded from their sources" in result.stderr
    assert "enclaverec.errors" in result.stderr


# check_source_only itself, on the finder the bootstrap installs (compiled the same way).


def _finder_classes(source: str = FINDER_SOURCE) -> tuple[type, type]:
    namespace: dict = {}
    exec(compile(source, "<enclaverec source-only finder>", "exec", dont_inherit=True), namespace)
    return namespace["SourceOnlyFinder"], namespace["SourceOnlyLoader"]


def _module(name: str, loader: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = ModuleSpec(name, loader)
    return module


def _check(meta_path, modules, *, dont_write_bytecode=True, pycache_prefix=None):
    check_source_only(
        meta_path,
        modules,
        dont_write_bytecode=dont_write_bytecode,
        pycache_prefix=pycache_prefix,
    )


def test_the_check_accepts_every_enclaverec_module_from_the_source_only_loader():
    finder, loader = _finder_classes()
    modules = {
        "enclaverec": _module("enclaverec", loader("enclaverec", "/x/__init__.py")),
        "enclaverec.roles": _module("enclaverec.roles", loader("enclaverec.roles", "/x/r.py")),
        "numpy": _module("numpy", SourceFileLoader("numpy", "/np/__init__.py")),
    }
    _check([finder(), *sys.meta_path], modules)  # passes: nothing raised


def test_the_check_refuses_an_enclaverec_module_from_another_loader():
    finder, loader = _finder_classes()
    for name, spec_name in (
        ("enclaverec.errors", "enclaverec.errors"),
        ("__main__", "enclaverec.roles.worker"),
    ):
        modules = {
            "enclaverec": _module("enclaverec", loader("enclaverec", "/x/__init__.py")),
            name: _module(spec_name, SourceFileLoader(spec_name, "/x/e.py")),
        }
        with pytest.raises(UsageError, match=f"not loaded from their sources.*{name}"):
            _check([finder(), *sys.meta_path], modules)


def test_the_check_refuses_without_the_finder_first_or_without_b():
    finder, loader = _finder_classes()
    modules = {"enclaverec": _module("enclaverec", loader("enclaverec", "/x/__init__.py"))}
    with pytest.raises(UsageError, match="measured sources only"):
        _check([*sys.meta_path, finder()], modules)  # installed, but not first
    with pytest.raises(UsageError, match="measured sources only"):
        _check([finder(), *sys.meta_path], modules, dont_write_bytecode=False)


def test_the_check_refuses_a_look_alike_finder_whose_loader_reads_caches():
    forged = FINDER_SOURCE.replace(
        "return self.source_to_code(self.get_data(path), path)",
        "return super().get_code(fullname)",
    )
    assert forged != FINDER_SOURCE
    finder, loader = _finder_classes(forged)
    modules = {"enclaverec": _module("enclaverec", loader("enclaverec", "/x/__init__.py"))}
    with pytest.raises(UsageError, match="measured sources only"):
        _check([finder(), *sys.meta_path], modules)


def test_the_check_accepts_gramine_s_empty_cache_prefix_only(tmp_path):
    modules = {"enclaverec": _module("enclaverec", SourceFileLoader("enclaverec", "/x.py"))}
    _check(sys.meta_path, modules, pycache_prefix=str(tmp_path / "absent"))
    _check(sys.meta_path, modules, pycache_prefix=str(tmp_path))
    (tmp_path / "forged.pyc").write_bytes(b"")
    with pytest.raises(UsageError, match="not empty"):
        _check(sys.meta_path, modules, pycache_prefix=str(tmp_path))


def test_the_finder_refuses_an_enclaverec_module_without_source(tmp_path):
    # A lone ``lonely.pyc`` beside the package's sources: Python would run it (sourceless).
    package = tmp_path / "enclaverec"
    package.mkdir()
    code = compile("print('unmeasured')", str(package / "lonely.py"), "exec")
    (package / "lonely.pyc").write_bytes(_code_to_timestamp_pyc(code, 0, 0))
    finder, _ = _finder_classes()
    with pytest.raises(ImportError, match="enclaverec.lonely is not a source file"):
        finder().find_spec("enclaverec.lonely", [str(package)])
    assert finder().find_spec("numpy", None) is None  # not ours: the other finders decide
