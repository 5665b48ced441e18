"""Enclave roles run their measured sources, never byte-code caches (issue 9, finding 11):
a forged ``__pycache__/*.pyc`` with the original's mtime and size does not run."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from importlib._bootstrap_external import _code_to_timestamp_pyc  # the stdlib's own writer

import pytest

from enclaverec.tee.bytecode import source_only_command
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
