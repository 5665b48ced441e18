"""Rendering a Gramine manifest: each role's enclave defaults, the fixed paths inside the
enclave, the options and the layout that fixes a manifest, and its TOML.

Host-side tooling: no enclave role imports this package (tests/unit/test_architecture.py).
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from enclaverec.errors import (
    ConfigError,
    UsageError,
)
from enclaverec.tee.measurement import (
    MEASURED_CONFIG_PATH,
    ROLE_ISV_PROD_IDS,
    ROLES,
    canonical_config,
)
from enclaverec.tee.roles import ROLE_SPECS, role_spec

PACKAGE_GROUP = "enclaverec (measured package)"
"""The group of the role's closure among the trusted files."""

NOT_FOR_PRODUCTION_ENV = "ENCLAVEREC_NOT_FOR_PRODUCTION"
"""``loader.env`` key of a manifest rendered from a configuration that is not for production
(it survives ``gramine-manifest`` and ``gramine-sgx-sign``, where comments do not), so that
``gramine check`` refuses the signed manifest too."""

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

_SIZE = re.compile(r"^([1-9][0-9]*)([KMG])$")
_SIZE_FACTORS = {"K": 1024, "M": 1024**2, "G": 1024**3}
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


def _production_problem(role: str, document: Mapping[str, Any], path: Path) -> str | None:
    spec = role_spec(role)
    table = document.get(spec.config_table)
    if not isinstance(table, dict):
        described = [
            name
            for name, other in ROLE_SPECS.items()
            if other.in_enclave and isinstance(document.get(other.config_table), dict)
        ]
        raise UsageError(
            f"{path} does not describe the {role} role: it has no [{spec.config_table}] table"
            + (f" (it describes the {', '.join(described)} role)" if described else "")
            + f"; give the role's {spec.config_file}"
        )
    tee = table.get("tee")
    if tee == "gramine":
        return None
    return (
        f'rendered from a tee = "{tee}" configuration: NOT FOR PRODUCTION (its peers trust '
        "no SGX evidence from it; init with --tee gramine)"
    )


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
    not_for_production: str | None = None
    """Why an enclave built from it must not serve production (a ``tee`` other than
    ``gramine``), or None. The manifest then says so, and ``gramine check`` refuses it."""

    @classmethod
    def from_toml(
        cls, toml_bytes: bytes, host_path: Path, role: str | None = None
    ) -> MeasuredConfig:
        """The canonical configuration; with ``role``, refused unless it describes that
        role (its own table, e.g. ``[federation]`` for the aggregator), and marked not for
        production unless its ``tee`` is ``gramine``."""
        canonical = canonical_config(toml_bytes)
        reason = None
        if role is not None:
            reason = _production_problem(role, tomllib.loads(canonical.decode()), host_path)
        return cls(Path(host_path), canonical, reason)

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

    def closure_totals(self) -> tuple[int, int]:
        """(files, bytes) of the trusted files with each real file counted once: a shared
        library listed under its symbolic links, or the interpreter's links, count once."""
        real: dict[str, int] = {}
        for item in self.all_trusted_files():
            real.setdefault(os.path.realpath(item.path), item.size or 0)
        return len(real), sum(real.values())

    def package_modules(self) -> int:
        """How many ``enclaverec`` files (the role's closure) are trusted."""
        return sum(1 for item in self.trusted_files if item.group == PACKAGE_GROUP)

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
            # The interpreter itself runs ``python3 -m ENTRY`` (argv); PATH in loader.env names
            # its directory, so Python finds its virtual environment from argv[0].
            "libos": {"entrypoint": self.interpreter},
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
{warning}
"""


def render_manifest(layout: EnclaveLayout) -> bytes:
    """The manifest's bytes (UTF-8 TOML written by tomli-w, after a comment header).

    The same layout always gives the same bytes. The rendered text is parsed back and
    checked with :func:`check_manifest` before it is returned.
    """
    document = layout.manifest_document()
    config = layout.options.config
    reason = config.not_for_production if config is not None else None
    warning = f"# {reason}\n" if reason else ""
    text = _HEADER.format(role=layout.role, warning=warning) + tomli_w.dumps(document)
    from enclaverec.tools.gramine.check import check_manifest  # check imports render's paths

    check_manifest(tomllib.loads(text), accept_not_for_production=reason is not None)
    return text.encode("utf-8")
