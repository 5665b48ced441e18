"""Rendered Gramine manifests for the enclave roles: which files each role loads, and the TOML
that fixes them (trusted files with hashes, argv, environment, mounts, sizes).

How the file list is found (the rule the tests check):

1. **The package**: exactly :func:`enclaverec.tee.measurement.measured_files` for the role,
   the same files (and hashes) that the simulated MRENCLAVE covers.
2. **What the role imports**: a real subprocess of the interpreter the enclave will run
   imports every measured module of the role and every third-party module those files
   import anywhere (module level or inside functions, found with :mod:`ast`); it reports
   every module file it loaded and every file mapped into its memory.
3. **Whole distributions, not single modules**: each installed distribution that owns a
   loaded file, or a ``.pth`` file that ``site`` runs at start-up, is trusted with every
   file its ``RECORD`` lists (minus headers, stubs and caches), and so are the
   distributions they require (``Requires-Dist`` without extras, installed ones only). A
   module imported lazily at run time (e.g. inside TensorFlow) is then already trusted.
4. **The standard library**: every file of its directories, minus test suites, IDLE, Tk and
   the static build files; whole, for the same reason.
5. **Shared libraries**: every ELF file the probe had mapped outside the directories above
   (libpython, libstdc++, libssl, ...), under every name the dynamic loader may open it by
   (its symbolic links in the same directory). The C library itself (``libc``, ``libm``,
   ``ld-linux``, ...) is Gramine's own patched glibc, mounted at ``/lib``.

A file missing from the list cannot be opened inside the enclave (``file_check_policy =
"strict"``): the failure is closed, never a silent load of unmeasured code.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import posixpath
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import tomli_w

from enclaverec.errors import (
    ConfigError,
    MissingDependencyError,
    StorageError,
    UnsafeManifestError,
    UsageError,
)
from enclaverec.tee.measurement import (
    ENTRY_POINTS,
    MEASURED_CONFIG_PATH,
    ROLE_ISV_PROD_IDS,
    ROLES,
    TRAINING_ROLES,
    canonical_config,
    measured_files,
    package_root,
)

# --- roles ---------------------------------------------------------------------------------

OUTSIDE_ENCLAVE_ROLES: Mapping[str, str] = {
    "owner": (
        "the owner role runs on the data owner's own machine, outside any enclave (it holds "
        "the owner's private key, encrypts the data set and decrypts the trained model), so "
        "it has no Gramine manifest"
    ),
}
"""Roles that never run in an enclave, with the reason given when a manifest is asked for."""

ENCLAVE_ROLES: tuple[str, ...] = tuple(r for r in ROLES if r not in OUTSIDE_ENCLAVE_ROLES)


@dataclass(frozen=True)
class RoleDefaults:
    """What a role's enclave gets unless a flag says otherwise."""

    enclave_size: str
    """``sgx.enclave_size``: fixed at signing (no EDMM), a power of two."""
    max_threads: int
    """``sgx.max_threads``: thread slots, fixed at signing; Gramine itself uses up to 4."""
    stack_size: str
    """``sys.stack.size`` of every thread."""
    compute_threads: int
    """Threads of the numeric libraries (OpenMP, OpenBLAS, TensorFlow's intra-op pool)."""
    reads_data: bool
    """Whether the role gets the data mount by default."""


ROLE_DEFAULTS: Mapping[str, RoleDefaults] = {
    # Aggregator and parameter servers hold the model's arrays and the updates being
    # combined (the Criteo Kaggle shape is ~170 MB of embeddings, once per pending update);
    # gRPC's thread pools need tens of slots. No BLAS-heavy work: one compute thread.
    "aggregator": RoleDefaults("2G", 64, "2M", 1, False),
    "paramserver": RoleDefaults("2G", 64, "2M", 1, False),
    # The key broker holds keys and certificates only.
    "keybroker": RoleDefaults("1G", 32, "2M", 1, False),
    # Training roles load TensorFlow (~850 MB of shared libraries) and run its thread pools.
    "party": RoleDefaults("4G", 128, "4M", 8, True),
    "worker": RoleDefaults("4G", 128, "4M", 8, True),
}

SPARE_THREADS = 16
"""Thread slots kept free beside the compute threads: Gramine's helpers (up to 4), the main
thread, gRPC's pollers and executor."""

MIN_ENCLAVE_SIZE = 256 * 1024**2

# --- fixed paths inside the enclave ---------------------------------------------------------

DEFAULT_GRAMINE_LIBDIR = Path("/usr/lib/x86_64-linux-gnu/gramine")
"""Where Gramine's Ubuntu packages install ``libsysdb.so`` and ``runtime/glibc`` (what
``gramine-manifest`` calls ``gramine.libos`` and ``gramine.runtimedir()``)."""
LIBOS_NAME = "libsysdb.so"
RUNTIME_SUBDIR = Path("runtime") / "glibc"

ENCLAVE_RUNTIME_DIR = "/lib"
"""Gramine's glibc is mounted here and comes first in ``LD_LIBRARY_PATH``."""
ENCLAVE_SEALED_DIR = "/enclaverec/sealed"
"""The sealed-state directory inside the enclave (a plain read-write mount: sealed files are
our own authenticated encryption, DESIGN.md §3)."""
ENCLAVE_DATA_DIR = "/enclaverec/data"
"""The data directory inside the enclave (encrypted data sets, encrypted model output)."""
ENCLAVE_TMP_DIR = "/enclaverec/tmp"
"""An in-enclave ``tmpfs``: scratch files never reach the host. Under ``/enclaverec`` (our
own namespace) rather than ``/tmp``, so that Python and the package may be installed
anywhere on the host, ``/tmp`` included (CI clones there); ``TMPDIR`` points at it."""
ENCLAVE_HOSTS_FILE = "/etc/hosts"

RESERVED_ENCLAVE_PATHS = ("/lib", "/enclaverec", "/etc", "/dev", "/proc", "/sys")
"""In-enclave paths the manifest uses itself; no host directory may be mounted over them."""

GLIBC_FALLBACK_NAMES = frozenset(
    {
        "ld-linux-x86-64.so.2",
        "libanl.so.1",
        "libc.so.6",
        "libdl.so.2",
        "libm.so.6",
        "libmvec.so.1",
        "libnsl.so.1",
        "libnss_dns.so.2",
        "libnss_files.so.2",
        "libpthread.so.0",
        "libresolv.so.2",
        "librt.so.1",
        "libutil.so.1",
    }
)
"""Libraries of glibc, which Gramine replaces with its own build (``runtime/glibc``). Used
only when Gramine is not installed where the manifest is rendered; otherwise the names are
read from the installed runtime directory."""

# --- what is not trusted although it sits in a trusted directory ---------------------------

EXCLUDED_SUFFIXES = frozenset(
    {
        ".pyc",
        ".pyo",
        ".h",
        ".hh",
        ".hpp",
        ".inc",
        ".c",
        ".cc",
        ".cpp",
        ".cxx",
        ".pyi",
        ".pxd",
        ".pyx",
        ".a",
        ".o",
        ".exe",
    }
)
"""Never loaded by the interpreter at run time: byte-code caches (the enclave compiles from
the trusted sources instead, see :data:`PYCACHE_PREFIX`), C/C++ headers and sources
(TensorFlow ships ~11,000), type stubs, Cython declarations, static libraries, Windows
launchers."""
EXCLUDED_DIR_NAMES = frozenset({"__pycache__", "tests"})
"""Byte-code caches, and the test suites that packages such as numpy, scipy and
scikit-learn install beside their code (a quarter of the aggregator's files otherwise)."""
EXCLUDED_STDLIB_DIRS = frozenset(
    {
        "test",
        "tests",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "site-packages",
        "dist-packages",
    }
)
"""Standard-library directories no role needs (test suites, GUI, bundled pip wheels) or that
belong to another rule (site directories)."""

PYCACHE_PREFIX = f"{ENCLAVE_TMP_DIR}/pycache"
"""``PYTHONPYCACHEPREFIX`` inside the enclave: byte-code caches are looked up in the tmpfs,
where there are none, instead of beside the trusted sources on the host."""

PROBE_TIMEOUT_SECONDS = 600
_PROBE_MARKER = "ENCLAVEREC-GRAMINE-PROBE "
_ELF_MAGIC = b"\x7fELF"
_SIZE = re.compile(r"^([1-9][0-9]*)([KMG])$")
_SIZE_FACTORS = {"K": 1024, "M": 1024**2, "G": 1024**3}
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_UINT16_MAX = 65535


def parse_size(text: str) -> int:
    """Bytes of a Gramine size such as ``"4G"`` (K, M, G are powers of 1024)."""
    match = _SIZE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"a size is a positive integer followed by K, M or G, got {text!r}")
    return int(match.group(1)) * _SIZE_FACTORS[match.group(2)]


def enclave_role(role: str) -> str:
    """``role`` if it runs in an enclave; a usage error naming the reason otherwise."""
    if role in OUTSIDE_ENCLAVE_ROLES:
        raise UsageError(
            f"{OUTSIDE_ENCLAVE_ROLES[role]}; enclave roles: {', '.join(ENCLAVE_ROLES)}"
        )
    if role not in ENCLAVE_ROLES:
        raise UsageError(f"unknown role {role!r}; enclave roles: {', '.join(ENCLAVE_ROLES)}")
    return role


# --- options --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredConfig:
    """The role's measured configuration as the enclave will read it.

    ``canonical`` is :func:`canonical_config` of the TOML file; that form is what the host
    keeps at ``host_path`` (mounted at ``/enclaverec/measured.toml``), so the trusted file's
    SHA-256 equals the ``config`` line of the simulated MRENCLAVE.
    """

    host_path: Path
    canonical: bytes

    @classmethod
    def from_toml(cls, toml_bytes: bytes, host_path: Path) -> MeasuredConfig:
        return cls(host_path=Path(host_path), canonical=canonical_config(toml_bytes))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical).hexdigest()


@dataclass(frozen=True)
class ManifestOptions:
    """Everything about one role's enclave that is not discovered from the installation.

    Host paths (``config``, ``sealed_dir``, ``data_dir``) may be left out to compute the
    measured inputs only (``gramine measure``); rendering a manifest needs the config and
    the sealed-state directory.
    """

    role: str
    enclave_size: str
    max_threads: int
    stack_size: str
    compute_threads: int
    isv_prod_id: int
    isv_svn: int
    gramine_libdir: Path = DEFAULT_GRAMINE_LIBDIR
    config: MeasuredConfig | None = None
    sealed_dir: Path | None = None
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        enclave_role(self.role)
        size = parse_size(self.enclave_size)
        if size & (size - 1) or size < MIN_ENCLAVE_SIZE:
            raise ConfigError(
                f"the enclave size must be a power of two of at least 256M (Gramine's rule "
                f"without EDMM), got {self.enclave_size}"
            )
        parse_size(self.stack_size)
        if self.compute_threads < 1:
            raise ConfigError(f"compute threads must be at least 1, got {self.compute_threads}")
        if self.max_threads < self.compute_threads + SPARE_THREADS:
            raise ConfigError(
                f"max threads must leave {SPARE_THREADS} slots beside the "
                f"{self.compute_threads} compute thread(s) for Gramine, gRPC and Python, "
                f"got {self.max_threads}"
            )
        for name in ("isv_prod_id", "isv_svn"):
            value = getattr(self, name)
            if not 0 <= value <= _UINT16_MAX:
                raise ConfigError(f"{name} is 0..{_UINT16_MAX}, got {value}")
        for name in ("gramine_libdir", "sealed_dir", "data_dir"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_absolute():
                raise ConfigError(f"{name} must be an absolute path, got {value}")
        if self.config is not None and not self.config.host_path.is_absolute():
            raise ConfigError(f"the config path must be absolute, got {self.config.host_path}")

    @classmethod
    def for_role(
        cls,
        role: str,
        *,
        enclave_size: str | None = None,
        max_threads: int | None = None,
        compute_threads: int | None = None,
        isv_prod_id: int | None = None,
        isv_svn: int = 0,
        gramine_libdir: Path = DEFAULT_GRAMINE_LIBDIR,
        config: MeasuredConfig | None = None,
        sealed_dir: Path | None = None,
        data_dir: Path | None = None,
    ) -> ManifestOptions:
        """The role's defaults (:data:`ROLE_DEFAULTS`, and the ISVPRODID that the simulated
        backend also uses, ``measurement.ROLE_ISV_PROD_IDS``) with the given values taking
        precedence."""
        defaults = ROLE_DEFAULTS[enclave_role(role)]
        return cls(
            role=role,
            enclave_size=enclave_size or defaults.enclave_size,
            max_threads=max_threads if max_threads is not None else defaults.max_threads,
            stack_size=defaults.stack_size,
            compute_threads=(
                compute_threads if compute_threads is not None else defaults.compute_threads
            ),
            isv_prod_id=isv_prod_id if isv_prod_id is not None else ROLE_ISV_PROD_IDS[role],
            isv_svn=isv_svn,
            gramine_libdir=Path(gramine_libdir),
            config=config,
            sealed_dir=Path(sealed_dir) if sealed_dir is not None else None,
            data_dir=Path(data_dir) if data_dir is not None else None,
        )


# --- the result -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedFile:
    """One ``sgx.trusted_files`` entry.

    ``path`` is the host path, which is also the path inside the enclave (the manifest
    mounts host directories at the same paths). ``sha256`` is None only for Gramine's own
    files when Gramine is not installed where the manifest is rendered: ``gramine-sgx-sign``
    hashes those on the SGX server; a path ending in ``/`` is then a directory it expands.
    """

    path: str
    sha256: str | None
    size: int | None
    group: str

    def manifest_entry(self) -> dict[str, str] | str:
        if self.sha256 is None:
            return f"file:{self.path}"
        return {"uri": f"file:{self.path}", "sha256": self.sha256}


@dataclass(frozen=True)
class Mount:
    """One ``fs.mounts`` entry: a host ``uri`` at an in-enclave ``path``, or a tmpfs."""

    path: str
    uri: str | None
    kind: str = "chroot"

    def manifest_entry(self) -> dict[str, str]:
        if self.kind == "tmpfs":
            return {"type": "tmpfs", "path": self.path}
        return {"path": self.path, "uri": str(self.uri)}


@dataclass(frozen=True)
class EnclaveLayout:
    """Everything one role's manifest fixes; :func:`render_manifest` turns it into TOML."""

    options: ManifestOptions
    console_script: str
    interpreter: str
    python_version: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    trusted_files: tuple[TrustedFile, ...]
    directory_mounts: tuple[str, ...]
    library_dirs: tuple[str, ...]
    gramine_installed: bool
    missing_imports: tuple[str, ...] = field(default=())
    """Third-party modules the package imports somewhere but that are not installed (an
    optional import); they cannot be loaded in the enclave either."""

    @property
    def role(self) -> str:
        return self.options.role

    @property
    def libos_path(self) -> str:
        return str(self.options.gramine_libdir / LIBOS_NAME)

    @property
    def runtime_dir(self) -> str:
        return str(self.options.gramine_libdir / RUNTIME_SUBDIR)

    def mounts(self) -> tuple[Mount, ...]:
        mounts = [Mount(ENCLAVE_RUNTIME_DIR, f"file:{self.runtime_dir}")]
        mounts += [Mount(path, f"file:{path}") for path in self.directory_mounts]
        if self.options.config is not None:
            mounts.append(Mount(MEASURED_CONFIG_PATH, f"file:{self.options.config.host_path}"))
        if self.options.sealed_dir is not None:
            mounts.append(Mount(ENCLAVE_SEALED_DIR, f"file:{self.options.sealed_dir}"))
        if self.options.data_dir is not None:
            mounts.append(Mount(ENCLAVE_DATA_DIR, f"file:{self.options.data_dir}"))
        mounts.append(Mount(ENCLAVE_HOSTS_FILE, f"file:{ENCLAVE_HOSTS_FILE}"))
        mounts.append(Mount(ENCLAVE_TMP_DIR, None, kind="tmpfs"))
        return tuple(mounts)

    def allowed_files(self) -> tuple[str, ...]:
        """``sgx.allowed_files``: read-write without integrity, so only our own encrypted
        formats and ``/etc/hosts`` (the host controls name resolution anyway: it controls
        the network; peers are authenticated by RA-TLS, never by name)."""
        allowed = []
        if self.options.sealed_dir is not None:
            allowed.append(f"file:{self.options.sealed_dir}/")
        if self.options.data_dir is not None:
            allowed.append(f"file:{self.options.data_dir}/")
        allowed.append(f"file:{ENCLAVE_HOSTS_FILE}")
        return tuple(allowed)

    def all_trusted_files(self) -> tuple[TrustedFile, ...]:
        """The trusted files plus the measured configuration, sorted by path."""
        files = list(self.trusted_files)
        if self.options.config is not None:
            files.append(
                TrustedFile(
                    str(self.options.config.host_path),
                    self.options.config.sha256,
                    len(self.options.config.canonical),
                    "measured configuration",
                )
            )
        return tuple(sorted(files, key=lambda item: item.path))

    def groups(self) -> list[tuple[str, int, int]]:
        """(group, files, bytes) for every group of trusted files, largest first."""
        totals: dict[str, list[int]] = {}
        for item in self.all_trusted_files():
            entry = totals.setdefault(item.group, [0, 0])
            entry[0] += 1
            entry[1] += item.size or 0
        return sorted(
            ((group, count, size) for group, (count, size) in totals.items()),
            key=lambda row: (-row[2], row[0]),
        )

    def manifest_document(self) -> dict[str, Any]:
        """The manifest as a TOML document (a dict), ready for tomli-w."""
        if self.options.config is None:
            raise UsageError("a manifest needs the measured configuration (--config)")
        if self.options.sealed_dir is None:
            raise UsageError("a manifest needs the sealed-state directory")
        libos = next((item for item in self.trusted_files if item.path == self.libos_path), None)
        loader_entrypoint: dict[str, str] = {"uri": f"file:{self.libos_path}"}
        if libos is not None and libos.sha256 is not None:
            loader_entrypoint["sha256"] = libos.sha256
        return {
            "libos": {"entrypoint": self.console_script},
            "loader": {
                "entrypoint": loader_entrypoint,
                # Only "error" is fit for production: other levels may leak data (Gramine).
                "log_level": "error",
                "argv": list(self.argv),
                "env": dict(self.env),
            },
            "sys": {
                "stack": {"size": self.options.stack_size},
                # /etc/resolv.conf and the host name, sanitised by Gramine, for gRPC.
                "enable_extra_runtime_domain_names_conf": True,
                # A child would be a second enclave from this manifest; no role forks.
                "disallow_subprocesses": True,
            },
            "fs": {"mounts": [mount.manifest_entry() for mount in self.mounts()]},
            "sgx": {
                "debug": False,
                # Without EDMM the enclave's size and layout are fixed when it is signed
                # (EDMM also needs SGX2 and Linux 6.0 or newer).
                "edmm_enable": False,
                "enclave_size": self.options.enclave_size,
                "max_threads": self.options.max_threads,
                "isvprodid": self.options.isv_prod_id,
                "isvsvn": self.options.isv_svn,
                "remote_attestation": "dcap",
                "file_check_policy": "strict",
                "allowed_files": list(self.allowed_files()),
                "trusted_files": [item.manifest_entry() for item in self.all_trusted_files()],
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """The measured inputs for ``gramine measure --json``."""
        config = self.options.config
        return {
            "role": self.role,
            "entrypoint": self.console_script,
            "interpreter": self.interpreter,
            "python_version": self.python_version,
            "argv": list(self.argv),
            "env": dict(self.env),
            "sizes": {
                "enclave_size": self.options.enclave_size,
                "max_threads": self.options.max_threads,
                "stack_size": self.options.stack_size,
                "compute_threads": self.options.compute_threads,
            },
            "isv_prod_id": self.options.isv_prod_id,
            "isv_svn": self.options.isv_svn,
            "measured_config": (
                None
                if config is None
                else {
                    "enclave_path": MEASURED_CONFIG_PATH,
                    "host_path": str(config.host_path),
                    "sha256": config.sha256,
                }
            ),
            "mounts": [mount.manifest_entry() for mount in self.mounts()],
            "allowed_files": list(self.allowed_files()),
            "gramine": {
                "libdir": str(self.options.gramine_libdir),
                "installed_here": self.gramine_installed,
            },
            "groups": [
                {"group": group, "files": count, "bytes": size}
                for group, count, size in self.groups()
            ],
            "trusted_files": [
                {"path": item.path, "sha256": item.sha256, "size": item.size, "group": item.group}
                for item in self.all_trusted_files()
            ],
            "missing_imports": list(self.missing_imports),
        }


# --- rendering and checking -----------------------------------------------------------------

_HEADER = """\
# Gramine manifest of the enclaverec role "{role}", rendered by `enclaverec gramine manifest`.
# Do not edit: regenerate it. Every trusted file carries its SHA-256; argv and environment
# are fixed here and nothing is taken from the host. See docs/gramine.md.

"""


def render_manifest(layout: EnclaveLayout) -> bytes:
    """The manifest's bytes (UTF-8 TOML written by tomli-w, after a comment header).

    The same layout always gives the same bytes. The rendered text is parsed back and
    checked with :func:`check_manifest` before it is returned.
    """
    document = layout.manifest_document()
    text = _HEADER.format(role=layout.role) + tomli_w.dumps(document)
    check_manifest(tomllib.loads(text))
    return text.encode("utf-8")


def _walk_keys(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, key) of every table key, inside arrays too."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path, str(key)
            yield from _walk_keys(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk_keys(item, f"{prefix}[{index}]")


def _uri_path(entry: Any) -> str | None:
    uri = entry.get("uri") if isinstance(entry, dict) else entry
    if isinstance(uri, str) and uri.startswith("file:"):
        return uri[len("file:") :]
    return None


def manifest_problems(document: Mapping[str, Any]) -> list[str]:
    """Every reason ``document`` (a parsed manifest) is not fit for production; empty when
    it is. See :func:`check_manifest`."""
    problems: list[str] = []
    for path, key in _walk_keys(dict(document)):
        if "insecure__" in key:
            problems.append(f"{path}: an insecure__ option")
        if key == "passthrough":
            problems.append(f"{path}: an environment variable passed through from the host")
    loader = document.get("loader", {})
    loader = loader if isinstance(loader, dict) else {}
    for key, why in (
        ("argv_src_file", "argv must be fixed in the manifest, not read from a file"),
        ("env_src_file", "the environment must be fixed in the manifest, not read from a file"),
    ):
        if key in loader:
            problems.append(f"loader.{key}: {why}")
    if not isinstance(loader.get("argv"), list) or not loader.get("argv"):
        problems.append("loader.argv: missing (the role's argv must be fixed in the manifest)")
    env = loader.get("env", {})
    if isinstance(env, dict):
        for name, value in env.items():
            if not isinstance(value, str) and not (
                isinstance(value, dict) and set(value) == {"value"}
            ):
                problems.append(f"loader.env.{name}: not a fixed value")
    if loader.get("log_level", "error") not in ("error", "none"):
        problems.append(
            f"loader.log_level: {loader.get('log_level')!r} may leak enclave data "
            "(only 'error' or 'none')"
        )
    sgx = document.get("sgx", {})
    sgx = sgx if isinstance(sgx, dict) else {}
    if sgx.get("debug", False) is not False:
        problems.append("sgx.debug: a debug enclave (its memory is readable by the host)")
    if sgx.get("file_check_policy") != "strict":
        problems.append(
            f"sgx.file_check_policy: must be 'strict', got {sgx.get('file_check_policy')!r}"
        )
    if sgx.get("remote_attestation") != "dcap":
        problems.append(
            f"sgx.remote_attestation: must be 'dcap', got {sgx.get('remote_attestation')!r}"
        )
    for key in ("enclave_size", "max_threads"):
        if key not in sgx:
            problems.append(f"sgx.{key}: missing (must be explicit)")
    if sgx.get("enable_stats", False):
        problems.append("sgx.enable_stats: debug statistics")
    if sgx.get("vtune_profile", False):
        problems.append("sgx.vtune_profile: profiling")
    profile = sgx.get("profile", {})
    if isinstance(profile, dict) and profile.get("enable", "none") != "none":
        problems.append("sgx.profile.enable: profiling")
    trusted = [_uri_path(entry) for entry in sgx.get("trusted_files", [])]
    trusted_paths = [path for path in trusted if path]
    # Directories the enclave loads code from (modules, .pth files, shared libraries): an
    # allowed entry inside one would let the host add code. A data file's directory (the
    # measured configuration's) is not one.
    trusted_dirs = {
        posixpath.dirname(path)
        for path in trusted_paths
        if path.endswith((".py", ".pyc", ".pth", ".so")) or ".so." in posixpath.basename(path)
    }
    # Allowed (unchecked) files are an allow-list: the sealed-state and data directories,
    # whose contents are our own authenticated ciphertext, and /etc/hosts. Anything else
    # could let the host add code (a package on sys.path, a .pth file, a library).
    fs = document.get("fs", {})
    mounts = fs.get("mounts", []) if isinstance(fs, dict) else []
    permitted = {
        (_uri_path(mount) or "").rstrip("/")
        for mount in mounts
        if isinstance(mount, dict) and mount.get("path") in (ENCLAVE_SEALED_DIR, ENCLAVE_DATA_DIR)
    } - {""}
    for entry in sgx.get("allowed_files", []):
        allowed = _uri_path(entry)
        if allowed is None:
            problems.append(f"sgx.allowed_files: not a file: URI: {entry!r}")
            continue
        if allowed == ENCLAVE_HOSTS_FILE:
            continue
        normalised = allowed.rstrip("/")
        prefix = normalised + "/"
        covered = [p for p in trusted_paths if p == allowed or p.startswith(prefix)]
        if covered:
            problems.append(
                f"sgx.allowed_files: {allowed} also covers trusted file {covered[0]} "
                "(allowed files are not integrity-checked)"
            )
            continue
        overlapping = sorted(
            d for d in trusted_dirs if d == normalised or normalised.startswith(d + "/")
        )
        if overlapping:
            problems.append(
                f"sgx.allowed_files: {allowed} lies in {overlapping[0]}, a directory of trusted "
                "files: the host could add files the enclave would load"
            )
            continue
        if normalised not in permitted:
            problems.append(
                f"sgx.allowed_files: {allowed} is neither the sealed-state nor the data "
                f"directory nor {ENCLAVE_HOSTS_FILE}"
            )
    return problems


def check_manifest(document: Mapping[str, Any]) -> None:
    """Refuse a manifest that weakens the enclave.

    Refused: any key containing ``insecure__`` (e.g. ``loader.insecure__use_cmdline_argv``,
    ``loader.insecure__use_host_env``, ``sys.insecure__allow_eventfd``,
    ``fs.insecure__keys``); an environment variable with ``passthrough``; argv or
    environment read from a file (``loader.argv_src_file``, ``loader.env_src_file``); no
    fixed ``loader.argv``; a log level other than ``error``/``none``; ``sgx.debug`` other
    than false or absent; ``sgx.file_check_policy`` other than ``"strict"``;
    ``sgx.remote_attestation`` other than ``"dcap"``; no explicit ``sgx.enclave_size`` or
    ``sgx.max_threads``; SGX statistics or profiling; an allowed file that covers a trusted
    one.

    Raises:
        UnsafeManifestError: listing every problem.
    """
    problems = manifest_problems(document)
    if problems:
        raise UnsafeManifestError(
            f"the manifest is not fit for production: {'; '.join(problems)}",
            got=f"{len(problems)} problem(s)",
            expected="none",
        )


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
            tree = ast.parse(source_path.read_bytes(), filename=str(source_path))
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


# --- installed distributions ----------------------------------------------------------------


def normalise_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class InstalledDistribution:
    name: str
    version: str
    site_dir: str
    files: tuple[str, ...]
    """Absolute, normalised paths from ``RECORD`` that lie inside ``site_dir``."""
    requires: tuple[str, ...]
    """Normalised names of the requirements without an ``extra`` marker."""


class DistributionIndex:
    """The distributions installed in a list of site directories, and who owns which file."""

    def __init__(self, site_dirs: Iterable[str]):
        self.by_name: dict[str, InstalledDistribution] = {}
        self.owner: dict[str, str] = {}
        for site_dir in site_dirs:
            found = sorted(
                metadata.distributions(path=[site_dir]),
                key=lambda dist: str(dist.metadata["Name"] or ""),
            )
            for dist in found:
                name = normalise_name(dist.metadata["Name"] or "")
                if not name or name in self.by_name:
                    continue  # the first on sys.path wins, as for imports
                if dist.files is None:
                    raise UsageError(
                        f"the distribution {name} in {site_dir} has no RECORD, so its files "
                        "cannot be listed: reinstall it with pip"
                    )
                prefix = site_dir.rstrip("/") + "/"
                files = []
                for record_path in dist.files:
                    path = os.path.normpath(os.path.join(site_dir, str(record_path)))
                    if path.startswith(prefix):
                        files.append(path)
                        self.owner.setdefault(path, name)
                requires = []
                for requirement in dist.requires or []:
                    requirement_name, _, marker = requirement.partition(";")
                    match = _REQUIREMENT_NAME.match(requirement_name)
                    if match and "extra" not in marker:
                        requires.append(normalise_name(match.group(1)))
                self.by_name[name] = InstalledDistribution(
                    name=name,
                    version=str(dist.version),
                    site_dir=site_dir,
                    files=tuple(sorted(files)),
                    requires=tuple(sorted(set(requires))),
                )

    def closure(self, roots: Iterable[str], *, no_expand: Iterable[str] = ()) -> list[str]:
        """``roots`` and, transitively, the installed distributions they require. Names in
        ``no_expand`` are included but their requirements are not followed."""
        keep_closed = set(no_expand)
        seen: set[str] = set()
        stack = [name for name in roots if name in self.by_name]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in keep_closed:
                continue
            stack.extend(
                required
                for required in self.by_name[name].requires
                if required in self.by_name and required not in seen
            )
        return sorted(seen)


# --- building the layout --------------------------------------------------------------------


def _is_excluded(path: str, base: str) -> bool:
    """Whether ``path`` (inside directory ``base``) falls under the exclusions; only the part
    below ``base`` is judged, so a venv under a folder named ``tests`` is not excluded."""
    relative = os.path.relpath(path, base)
    if any(part in EXCLUDED_DIR_NAMES for part in relative.split(os.sep)[:-1]):
        return True
    return os.path.splitext(path)[1].lower() in EXCLUDED_SUFFIXES


def _within(path: str, directory: str) -> bool:
    directory = directory.rstrip("/")
    return path == directory or path.startswith(directory + "/")


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == _ELF_MAGIC
    except OSError:
        return False


class _Hasher:
    """SHA-256 and size of files, each read once per build."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[str, int]] = {}

    def __call__(self, path: str) -> tuple[str, int]:
        if path not in self._cache:
            try:
                with open(path, "rb") as handle:
                    digest = hashlib.file_digest(handle, "sha256").hexdigest()
                    size = os.fstat(handle.fileno()).st_size
            except OSError as exc:
                raise StorageError(f"cannot read {path} to hash it: {exc}") from exc
            self._cache[path] = (digest, size)
        return self._cache[path]


def _stdlib_files(directory: str) -> Iterator[str]:
    for current, dirs, files in os.walk(directory):
        # Never descend into excluded or symlinked directories (as gramine-manifest does).
        dirs[:] = sorted(
            name
            for name in dirs
            if name not in EXCLUDED_STDLIB_DIRS
            and name not in EXCLUDED_DIR_NAMES
            and not name.startswith("config-")
            and not os.path.islink(os.path.join(current, name))
        )
        for name in sorted(files):
            path = os.path.join(current, name)
            if os.path.isfile(path) and not _is_excluded(path, directory):
                yield path


def _library_aliases(real_path: str, cache: dict[str, dict[str, list[str]]]) -> list[str]:
    """``real_path`` and every symbolic link in its directory that resolves to it: the
    dynamic loader opens a library by its soname (``libz.so.1``), a link to the file
    (``libz.so.1.2.13``) that ``/proc/self/maps`` names."""
    directory = os.path.dirname(real_path)
    if directory not in cache:
        links: dict[str, list[str]] = {}
        try:
            entries = sorted(os.listdir(directory))
        except OSError:
            entries = []
        for name in entries:
            candidate = os.path.join(directory, name)
            if os.path.islink(candidate):
                links.setdefault(os.path.realpath(candidate), []).append(candidate)
        cache[directory] = links
    return sorted({real_path, *cache[directory].get(os.path.realpath(real_path), [])})


def gramine_files(libdir: Path, hasher: _Hasher | None = None) -> tuple[list[TrustedFile], bool]:
    """Gramine's LibOS and glibc runtime as trusted files, and whether Gramine is installed
    at ``libdir``. Installed: every file hashed here. Not installed (e.g. on a laptop or in
    CI): unhashed entries that ``gramine-sgx-sign`` hashes on the SGX server, the runtime
    as a directory it expands."""
    hasher = hasher or _Hasher()
    libos = libdir / LIBOS_NAME
    runtime = libdir / RUNTIME_SUBDIR
    if not (libos.is_file() and runtime.is_dir()):
        return [
            TrustedFile(str(libos), None, None, "gramine"),
            TrustedFile(f"{runtime}/", None, None, "gramine"),
        ], False
    files = []
    for path in [str(libos), *_stdlib_files(str(runtime))]:
        digest, size = hasher(path)
        files.append(TrustedFile(path, digest, size, "gramine"))
    return files, True


def glibc_names(libdir: Path) -> frozenset[str]:
    """File names Gramine's runtime provides (so host copies are never trusted)."""
    runtime = libdir / RUNTIME_SUBDIR
    if runtime.is_dir():
        return frozenset(entry.name for entry in runtime.iterdir())
    return GLIBC_FALLBACK_NAMES


def enclave_environment(options: ManifestOptions, library_dirs: Sequence[str]) -> dict[str, str]:
    """``loader.env``: fixed values, nothing from the host.

    ``PYTHONHASHSEED`` is deliberately unset: randomised string hashing (the default) keeps
    hash-flooding attacks on dicts of peer-supplied names expensive.
    """
    threads = str(options.compute_threads)
    env = {
        "HOME": ENCLAVE_TMP_DIR,  # libraries that write under ~ (Keras) stay in the tmpfs
        "TMPDIR": ENCLAVE_TMP_DIR,  # tempfile and TensorFlow's scratch files too
        "LC_ALL": "C",  # the built-in locale: no locale files to trust
        "LD_LIBRARY_PATH": ":".join([ENCLAVE_RUNTIME_DIR, *library_dirs]),
        # glibc makes an arena per thread; bound them in a fixed-size enclave.
        "MALLOC_ARENA_MAX": "4",
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "PYTHONCOERCECLOCALE": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        # Byte-code caches are looked up in the tmpfs (always missing), not next to the
        # trusted sources on the host: the enclave compiles the trusted sources.
        "PYTHONPYCACHEPREFIX": PYCACHE_PREFIX,
        "PYTHONSAFEPATH": "1",
        "PYTHONUTF8": "1",
    }
    if options.role in TRAINING_ROLES:
        env["TF_NUM_INTRAOP_THREADS"] = threads
        env["TF_NUM_INTEROP_THREADS"] = "1"
    return dict(sorted(env.items()))


def build_layout(options: ManifestOptions, *, console_script: Path | None = None) -> EnclaveLayout:
    """Find every file ``options.role`` loads and everything its manifest fixes.

    Runs the role's interpreter once (see :func:`run_probe`) and hashes every trusted file.

    Raises:
        UsageError: the console script or interpreter is unusable, a role module fails to
            import, the role loads a file from an unknown place or a package file that is
            not measured for it, or a host path collides with the manifest's own paths.
        MissingDependencyError: the probe could not import a role module because a
            dependency is missing.
    """
    role = enclave_role(options.role)
    script = Path(console_script) if console_script is not None else default_console_script()
    interpreter = read_console_script(script)
    package = package_root()
    modules = role_modules(role)
    third_party = third_party_imports(role)

    with tempfile.TemporaryDirectory(prefix="enclaverec-probe-") as scratch:
        # The enclave's own environment, with HOME (Keras writes there) in scratch space on
        # this host and without the byte-code prefix, so that the probe may read the
        # existing caches (faster; the modules it loads are the same).
        env = enclave_environment(options, [])
        env.pop("LD_LIBRARY_PATH")
        env.pop("PYTHONPYCACHEPREFIX")
        env["HOME"] = scratch
        probe = run_probe(interpreter, [*modules, *third_party], env)

    own_failures = {name: error for name, error in probe.failed.items() if name in modules}
    if own_failures:
        name, error = sorted(own_failures.items())[0]
        if error.startswith(("ModuleNotFoundError", "ImportError")):
            raise MissingDependencyError(
                f"the {role} role's module {name} cannot be imported by {interpreter}: {error}"
            )
        raise UsageError(f"the {role} role's module {name} fails to import: {error}")
    missing = tuple(sorted(probe.failed))
    loaded = [os.path.normpath(p) for p in probe.module_files]
    if str(package / "__init__.py") not in loaded:
        raise UsageError(
            f"{interpreter} loads enclaverec from another place than {package}, which this "
            "process measures: run `enclaverec gramine` from the environment the enclave "
            "will run"
        )

    hasher = _Hasher()
    trusted: dict[str, TrustedFile] = {}

    def trust(path: str, group: str) -> None:
        if path not in trusted:
            digest, size = hasher(path)
            trusted[path] = TrustedFile(path, digest, size, group)

    # 1. The package: the measured files, and nothing else from its directory.
    for item in measured_files(role):
        path = str(package.parent / item.path)
        _, size = hasher(path)
        trusted[path] = TrustedFile(path, item.sha256, size, "enclaverec (measured package)")

    # 2. The entry point, its interpreter, and the virtual environment's marker file.
    trust(str(script), "python")
    trust(interpreter, "python")
    pyvenv = os.path.join(probe.prefix, "pyvenv.cfg")
    if os.path.isfile(pyvenv):
        trust(pyvenv, "python")

    mapped = [p for p in map(os.path.normpath, probe.mapped_files) if os.path.isfile(p)]
    code = [*loaded, *(p for p in mapped if _is_elf(p))]

    # 3. Site directories: whole distributions.
    site_dirs = tuple(
        os.path.normpath(p) for p in probe.site_dirs if p in probe.sys_path and os.path.isdir(p)
    )
    index = DistributionIndex(site_dirs)
    pth_files = [
        os.path.join(site_dir, name)
        for site_dir in site_dirs
        for name in sorted(os.listdir(site_dir))
        if name.endswith(".pth")
    ]
    roots = {index.owner[p] for p in [*pth_files, *code] if p in index.owner}
    groups = {name: f"{dist.name} {dist.version}" for name, dist in index.by_name.items()}
    for name in index.closure(sorted(roots), no_expand=[normalise_name(package.name)]):
        dist = index.by_name[name]
        for path in dist.files:
            # The package's own files are exactly the measured ones (step 1).
            if not _within(path, str(package)) and not _is_excluded(path, dist.site_dir):
                if os.path.isfile(path):
                    trust(path, groups[name])
    for pth in pth_files:
        if pth not in index.owner:
            trust(pth, "site .pth (no distribution)")

    # 4. The standard library: every other directory on sys.path.
    stdlib_dirs = tuple(
        path
        for path in map(os.path.normpath, probe.sys_path)
        if os.path.isdir(path) and path not in site_dirs and not _within(path, str(package))
    )
    for directory in stdlib_dirs:
        for path in _stdlib_files(directory):
            trust(path, "python standard library")

    # 5. Shared libraries outside those directories, under all their names; glibc is
    # Gramine's own.
    provided = glibc_names(options.gramine_libdir)
    real_interpreter = os.path.realpath(interpreter)
    aliases_by_dir: dict[str, dict[str, list[str]]] = {}
    library_dirs: set[str] = set()
    for path in code:
        if path in trusted or path == real_interpreter:
            continue
        if any(_within(path, d) for d in (str(package), *site_dirs, *stdlib_dirs)):
            continue  # the rules above (or step 6) decide
        aliases = _library_aliases(path, aliases_by_dir)
        if any(os.path.basename(alias) in provided for alias in aliases):
            continue
        for alias in aliases:
            trust(alias, "shared libraries")
        library_dirs.add(os.path.dirname(path))

    # 6. Everything the probe loaded is trusted, even where a rule above excluded it (a
    # test module imported at run time, say); a file of unknown origin is refused.
    unknown = []
    for path in code:
        if path in trusted or path == real_interpreter:
            continue
        if _within(path, str(package)):
            raise UsageError(
                f"the {role} role loads {path}, which is not measured for it (measurement.py "
                "leaves enclaverec/model/ out of the roles that do not train): import it "
                "lazily where only training roles run it"
            )
        if path in index.owner:
            trust(path, groups[index.owner[path]])
        elif any(_within(path, d) for d in stdlib_dirs):
            trust(path, "python standard library")
        elif os.path.basename(path) not in provided:
            unknown.append(path)
    if unknown:
        raise UsageError(
            f"the {role} role loads file(s) that belong to no installed distribution and no "
            f"standard-library directory, so they cannot be trusted: "
            f"{', '.join(sorted(set(unknown))[:5])}"
        )

    # 7. Gramine's own files.
    gramine, installed = gramine_files(options.gramine_libdir, hasher)
    for item in gramine:
        trusted.setdefault(item.path, item)

    mounts = _directory_mounts([item.path for item in trusted.values() if item.group != "gramine"])
    _check_host_paths(options, mounts)
    env_fixed = enclave_environment(options, sorted(library_dirs))
    return EnclaveLayout(
        options=options,
        console_script=str(script),
        interpreter=interpreter,
        python_version=probe.version,
        argv=tuple(ENTRY_POINTS[role]),
        env=tuple(env_fixed.items()),
        trusted_files=tuple(sorted(trusted.values(), key=lambda item: item.path)),
        directory_mounts=mounts,
        library_dirs=tuple(sorted(library_dirs)),
        gramine_installed=installed,
        missing_imports=missing,
    )


def _directory_mounts(paths: Iterable[str]) -> tuple[str, ...]:
    """The fewest host directories (mounted at the same paths) that hold ``paths``."""
    directories = sorted({os.path.dirname(path) for path in paths}, key=lambda d: (len(d), d))
    kept: list[str] = []
    for directory in directories:
        if not any(_within(directory, parent) for parent in kept):
            kept.append(directory)
    return _merge_siblings(sorted(kept))


def _merge_siblings(directories: list[str]) -> tuple[str, ...]:
    # Directories of one tree (e.g. every site-packages subdirectory) are mounted through
    # their common ancestor when it is a known root: the site directory, the stdlib, a
    # prefix. Without a known root, each stays a mount of its own (no host path is exposed
    # beyond what is needed).
    roots = sorted({_mount_root(d) for d in directories}, key=lambda d: (len(d), d))
    kept: list[str] = []
    for root in roots:
        if not any(_within(root, parent) for parent in kept):
            kept.append(root)
    return tuple(sorted(kept))


def _mount_root(directory: str) -> str:
    # .../lib/pythonX.Y/site-packages/<pkg>/... -> .../lib/pythonX.Y/site-packages
    # .../lib/pythonX.Y/<sub>/...               -> .../lib/pythonX.Y
    parts = directory.split("/")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return "/".join(parts[: parts.index(marker) + 1])
    for index, part in enumerate(parts):
        if (
            re.fullmatch(r"python3\.[0-9]+", part)
            and index > 0
            and parts[index - 1]
            in (
                "lib",
                "lib64",
            )
        ):
            return "/".join(parts[: index + 1])
    return directory


def _check_host_paths(options: ManifestOptions, mounts: Sequence[str]) -> None:
    for mount in mounts:
        for reserved in RESERVED_ENCLAVE_PATHS:
            if reserved == ENCLAVE_RUNTIME_DIR and mount != reserved and _within(mount, reserved):
                # e.g. /lib/x86_64-linux-gnu where /usr is not merged: a mount inside
                # Gramine's runtime mount, as Gramine's own examples do.
                continue
            if _within(mount, reserved) or _within(reserved, mount):
                raise UsageError(
                    f"the host directory {mount} would be mounted over the enclave's own "
                    f"{reserved}: install Python and enclaverec elsewhere"
                )
    writable = {
        "sealed-state directory": options.sealed_dir,
        "data directory": options.data_dir,
    }
    for what, directory in writable.items():
        if directory is None:
            continue
        text = str(directory)
        for mount in mounts:
            if _within(text, mount) or _within(mount, text):
                raise UsageError(
                    f"the {what} {text} overlaps the trusted directory {mount}: trusted code "
                    "and writable state must live apart"
                )
    if options.sealed_dir is not None and options.data_dir is not None:
        a, b = str(options.sealed_dir), str(options.data_dir)
        if _within(a, b) or _within(b, a):
            raise UsageError(f"the sealed-state directory {a} and data directory {b} overlap")
