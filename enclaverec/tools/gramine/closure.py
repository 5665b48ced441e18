"""The file closure of a role's Gramine enclave: which files it loads, hashed, as the
layout a manifest fixes.

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

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from enclaverec.errors import (
    MissingDependencyError,
    StorageError,
    UsageError,
)
from enclaverec.tee.measurement import (
    ENTRY_POINTS,
    TRAINING_ROLES,
    measured_files,
    package_root,
)
from enclaverec.tools.gramine.probe import (
    default_console_script,
    read_console_script,
    role_modules,
    run_probe,
    third_party_imports,
)
from enclaverec.tools.gramine.render import (
    ENCLAVE_RUNTIME_DIR,
    ENCLAVE_TMP_DIR,
    EXCLUDED_DIR_NAMES,
    EXCLUDED_STDLIB_DIRS,
    EXCLUDED_SUFFIXES,
    GLIBC_FALLBACK_NAMES,
    LIBOS_NAME,
    NOT_FOR_PRODUCTION_ENV,
    PACKAGE_GROUP,
    PYCACHE_PREFIX,
    RESERVED_ENCLAVE_PATHS,
    RUNTIME_SUBDIR,
    EnclaveLayout,
    ManifestOptions,
    TrustedFile,
    enclave_role,
)

_ELF_MAGIC = b"\x7fELF"
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


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


def enclave_environment(
    options: ManifestOptions, library_dirs: Sequence[str], interpreter_dir: str | None = None
) -> dict[str, str]:
    """``loader.env``: fixed values, nothing from the host. ``PATH`` is the interpreter's
    directory only: argv[0] is ``python3``, and Python finds its virtual environment from it.

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
    if interpreter_dir is not None:
        env["PATH"] = interpreter_dir
    if options.config is not None and options.config.not_for_production:
        env[NOT_FOR_PRODUCTION_ENV] = options.config.not_for_production
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
        trusted[path] = TrustedFile(path, item.sha256, size, PACKAGE_GROUP)

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
                f"the {role} role loads {path}, which is not in its closure (the modules its "
                "entry imports, tee/closure.py), so it is not measured for it"
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
    env_fixed = enclave_environment(options, sorted(library_dirs), os.path.dirname(interpreter))
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
