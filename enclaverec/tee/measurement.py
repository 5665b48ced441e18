"""The software measurement (simulated MRENCLAVE) of what an enclave role runs.

Real SGX measures the enclave's pages as they are loaded; the simulated backend cannot, so
it measures, in software, the three things that decide an enclave role's behaviour:

1. the role's closure: its entry module and every ``enclaverec`` module it imports,
   transitively (:mod:`enclaverec.tee.closure`), each as (path relative to the package's
   parent, SHA-256 of its bytes). A module the role never imports (the CLI, Gramine
   tooling, plots) is not measured; the role runs from these sources only, never from
   byte-code caches (:mod:`enclaverec.tee.bytecode`);
2. the entry point: the role id and its fixed argv (:attr:`RoleSpec.argv`);
3. the canonical measured configuration: the role's TOML file parsed, every table's keys
   sorted, re-serialised with tomli-w, hashed with SHA-256 (:func:`canonical_config`).

MRENCLAVE is SHA-256 of :meth:`MeasuredInputs.canonical_text`, whose format
``docs/attestation.md`` defines line by line. The same file list is what a Gramine
manifest lists as the package's trusted files.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

import enclaverec
from enclaverec.errors import ConfigError, UsageError
from enclaverec.tee.closure import closure_files
from enclaverec.tee.roles import MEASURED_CONFIG_PATH as MEASURED_CONFIG_PATH
from enclaverec.tee.roles import ROLE_SPECS, role_spec
from enclaverec.tee.roles import ROLES as ROLES

MEASUREMENT_FORMAT = "enclaverec SIMULATED MRENCLAVE v2"
"""First line of the measured text; names the format so that a change of format changes
every measurement instead of colliding with an old one (v2: the role's closure, not the
whole package)."""

TRAINING_ROLES = frozenset(name for name, spec in ROLE_SPECS.items() if spec.trains)
"""Roles that run the TensorFlow trainer inside the enclave."""

ENTRY_POINTS: Mapping[str, tuple[str, ...]] = {name: spec.argv for name, spec in ROLE_SPECS.items()}
"""Each role's fixed argv (the manifest's ``loader.argv``)."""

ROLE_ISV_PROD_IDS: Mapping[str, int] = {name: spec.isv_prod_id for name, spec in ROLE_SPECS.items()}
"""ISVPRODID of each role's enclave (the manifest's ``sgx.isvprodid``)."""


@dataclass(frozen=True)
class MeasuredFile:
    path: str
    """POSIX path relative to the package's parent directory, e.g. ``enclaverec/errors.py``."""
    sha256: str
    """Lower-case hex SHA-256 of the file's bytes."""


@dataclass(frozen=True)
class MeasuredInputs:
    """Everything the simulated MRENCLAVE of one role covers."""

    role: str
    argv: tuple[str, ...]
    config_sha256: str
    files: tuple[MeasuredFile, ...]

    def canonical_text(self) -> bytes:
        """The exact bytes that are hashed into MRENCLAVE (UTF-8, LF line endings)."""
        lines = [
            MEASUREMENT_FORMAT,
            f"role {self.role}",
            "argv " + json.dumps(list(self.argv), separators=(",", ":"), ensure_ascii=True),
            f"config {self.config_sha256}",
        ]
        lines.extend(f"file {item.sha256} {item.path}" for item in self.files)
        return ("\n".join(lines) + "\n").encode("utf-8")

    def mrenclave(self) -> bytes:
        return mrenclave(self)


def _sorted_tables(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted_tables(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_tables(item) for item in value]
    return value


def canonical_config(toml_bytes: bytes) -> bytes:
    """The canonical form of a TOML document: parsed, keys of every table sorted,
    re-serialised with tomli-w. Comments, key order and formatting do not survive, so only
    the values decide the measurement."""
    try:
        document = tomllib.loads(toml_bytes.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError("the measured configuration is not UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the measured configuration is not valid TOML: {exc}") from exc
    return tomli_w.dumps(_sorted_tables(document)).encode("utf-8")


def package_root() -> Path:
    """The installed ``enclaverec`` package directory."""
    return Path(enclaverec.__file__).resolve().parent


def measured_files(role: str, root: Path | None = None) -> tuple[MeasuredFile, ...]:
    """The package files measured for ``role`` (its closure), sorted by path."""
    spec = role_spec(role)
    root = (root or package_root()).resolve()
    files = []
    for path in closure_files(spec.entry, root):
        relative = f"{root.name}/{path.relative_to(root).as_posix()}"
        if "\n" in relative or "\r" in relative:
            # One file per line in the measured text: a newline would make it ambiguous.
            raise UsageError(f"refusing to measure a file name with a line break: {relative!r}")
        files.append(MeasuredFile(relative, hashlib.sha256(path.read_bytes()).hexdigest()))
    return tuple(sorted(files, key=lambda item: item.path.encode("utf-8")))


def measured_inputs(role: str, config: bytes | Path, *, root: Path | None = None) -> MeasuredInputs:
    """The measured inputs of ``role`` with measured configuration ``config`` (the TOML
    bytes or a path to the file). ``root`` is the package directory (default: the
    installed one)."""
    if isinstance(config, Path):
        try:
            config = config.read_bytes()
        except FileNotFoundError as exc:
            raise UsageError(f"measured configuration not found: {config}") from exc
    files = measured_files(role, root)
    return MeasuredInputs(
        role=role,
        argv=ENTRY_POINTS[role],
        config_sha256=hashlib.sha256(canonical_config(config)).hexdigest(),
        files=files,
    )


def mrenclave(inputs: MeasuredInputs) -> bytes:
    """The simulated MRENCLAVE: SHA-256 of ``inputs.canonical_text()``."""
    return hashlib.sha256(inputs.canonical_text()).digest()
