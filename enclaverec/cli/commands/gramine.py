"""``enclaverec gramine``: each enclave role's rendered Gramine manifest, its measured inputs,
and a check that a manifest weakens nothing."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from enclaverec.cli.output import stderr_console, stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.errors import StorageError, UsageError
from enclaverec.tee.roles import ROLES as _ROLES

_MANIFEST_DESCRIPTION = """\
Write ROLE.manifest.toml, the rendered Gramine manifest of one enclave role, into DIR, with
ROLE.measured.toml (the canonical form of --config, which the enclave reads at
/enclaverec/measured.toml) and the role's sealed-state (and, for party and worker, data)
directory.

The manifest fixes argv and environment, lists every file the role loads as a trusted file
with its SHA-256 (the interpreter, the standard library, the installed distributions the
role uses, shared libraries, the role's closure of package files), and sets
sgx.remote_attestation = "dcap", sgx.enclave_size and sgx.max_threads; it has no insecure__
option and takes nothing from the host. Run it on the SGX server, in the environment the
enclave will run: every path in the manifest is part of the real MRENCLAVE.

The owner role runs on the data owner's own machine, outside any enclave: it has no
manifest. The whole procedure (signing, MRENCLAVE, policies) is in docs/gramine.md."""

_MEASURE_DESCRIPTION = """\
Print what the role's enclave measures: the entry point and argv, the fixed environment,
sizes and thread slots, ISVPRODID/ISVSVN, the trusted files and their SHA-256 (a summary by
group; every file with --verbose or --json), and with --config the simulated MRENCLAVE that
the simulated TEE backend puts in this role's quotes.

The real MRENCLAVE also covers Gramine, the manifest itself and the enclave's memory
layout: it is computed by gramine-sgx-sign on the SGX server and read with
gramine-sgx-sigstruct-view (docs/gramine.md)."""

_CHECK_DESCRIPTION = """\
Check a Gramine manifest (ours, or the .manifest.sgx that gramine-sgx-sign writes) for
options that weaken the enclave: any insecure__ key, environment passed through from the
host, argv or environment read from a file, no fixed loader.argv, a log level other than
error, sgx.debug, a file check policy other than strict, attestation other than dcap, no
explicit enclave size or thread count, SGX statistics or profiling, and allowed files that
cover trusted ones.

Exit codes: 0 fit for production, 3 refused (every problem is listed), 2 unreadable file."""


def register(subparsers: argparse._SubParsersAction) -> None:
    group = add_command(
        subparsers, "gramine", help="Gramine manifests and measured inputs of the enclave roles"
    )
    sub = group.add_subparsers(dest="gramine_command", metavar="SUBCOMMAND")

    manifest = add_command(
        sub,
        "manifest",
        help="write a role's rendered Gramine manifest",
        description=_MANIFEST_DESCRIPTION,
        handler=_manifest,
    )
    manifest.add_argument("--role", required=True, choices=_ROLES, help="the role id")
    manifest.add_argument(
        "--config",
        required=True,
        type=Path,
        metavar="FILE",
        help="the role's measured configuration (TOML)",
    )
    manifest.add_argument(
        "--output", required=True, type=Path, metavar="DIR", help="where to write the files"
    )
    _layout_options(manifest, output_defaults=True)

    measure = add_command(
        sub,
        "measure",
        help="print a role's measured inputs (files and hashes, argv, environment, sizes)",
        description=_MEASURE_DESCRIPTION,
        handler=_measure,
    )
    measure.add_argument("--role", required=True, choices=_ROLES, help="the role id")
    measure.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the role's measured configuration; adds its hash and the simulated MRENCLAVE",
    )
    measure.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="the DIR given to `gramine manifest`: show the host paths its manifest names",
    )
    _layout_options(measure, output_defaults=True)
    measure.add_argument("--verbose", action="store_true", help="list every trusted file")
    measure.add_argument("--json", action="store_true", help="print JSON (every file)")

    check = add_command(
        sub,
        "check",
        help="check that a manifest has no option that weakens the enclave",
        description=_CHECK_DESCRIPTION,
        handler=_check,
    )
    check.add_argument("file", type=Path, metavar="FILE", help="a manifest (TOML)")


def _layout_options(parser: argparse.ArgumentParser, *, output_defaults: bool) -> None:
    where = " (default: DIR/ROLE-sealed)" if output_defaults else ""
    data_where = " (default for party and worker: DIR/data)" if output_defaults else ""
    parser.add_argument(
        "--gramine-libdir",
        type=Path,
        metavar="DIR",
        help=(
            "Gramine's library directory holding libsysdb.so and runtime/glibc; must be the "
            "SGX server's (default: /usr/lib/x86_64-linux-gnu/gramine)"
        ),
    )
    parser.add_argument(
        "--sealed-dir", type=Path, metavar="DIR", help=f"host sealed-state directory{where}"
    )
    parser.add_argument(
        "--data-dir", type=Path, metavar="DIR", help=f"host data directory{data_where}"
    )
    parser.add_argument(
        "--enclave-size",
        metavar="SIZE",
        help="sgx.enclave_size, a power of two such as 2G (default per role)",
    )
    parser.add_argument(
        "--max-threads", type=int, metavar="N", help="sgx.max_threads (default per role)"
    )
    parser.add_argument(
        "--compute-threads",
        type=int,
        metavar="N",
        help="OpenMP/OpenBLAS/TensorFlow intra-op threads (default: 1, or 8 for party/worker)",
    )
    parser.add_argument(
        "--isv-prod-id", type=int, metavar="N", help="sgx.isvprodid (default per role)"
    )
    parser.add_argument(
        "--isv-svn",
        type=int,
        default=0,
        metavar="N",
        help="sgx.isvsvn, the security version; raise it with every security fix (default 0)",
    )


# --- helpers ------------------------------------------------------------------------------


def _absolute(path: Path) -> Path:
    # Absolute and normalised, without resolving symbolic links: these are the paths the
    # manifest names.
    return Path(os.path.normpath(os.path.abspath(path)))


def _read_config(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise UsageError(f"measured configuration not found: {path}") from exc
    except IsADirectoryError as exc:
        raise UsageError(f"measured configuration is a directory: {path}") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc


def _options(args: argparse.Namespace, **paths: Any) -> Any:
    from enclaverec.tools.gramine.render import DEFAULT_GRAMINE_LIBDIR, ManifestOptions

    libdir = args.gramine_libdir or DEFAULT_GRAMINE_LIBDIR
    return ManifestOptions.for_role(
        args.role,
        enclave_size=args.enclave_size,
        max_threads=args.max_threads,
        compute_threads=args.compute_threads,
        isv_prod_id=args.isv_prod_id,
        isv_svn=args.isv_svn,
        gramine_libdir=_absolute(libdir),
        **paths,
    )


def _deployment(
    args: argparse.Namespace,
    role: str,
    output: Path | None,
    config_bytes: bytes | None,
    *,
    check_role: bool = False,
) -> dict[str, Any]:
    """The host paths the manifest names: the canonical config copy, sealed-state and data
    directories, with their defaults under ``output``."""
    from enclaverec.tools.gramine.render import ROLE_DEFAULTS, MeasuredConfig

    config = None
    if config_bytes is not None:
        # Without an output directory (measure only) the given file stands for the copy.
        host = output / f"{role}.measured.toml" if output else _absolute(args.config)
        config = MeasuredConfig.from_toml(config_bytes, host, role if check_role else None)
    sealed = args.sealed_dir or (output / f"{role}-sealed" if output else None)
    data = args.data_dir or (
        output / "data" if output is not None and ROLE_DEFAULTS[role].reads_data else None
    )
    return {
        "config": config,
        "sealed_dir": _absolute(sealed) if sealed is not None else None,
        "data_dir": _absolute(data) if data is not None else None,
    }


def _build(options: Any) -> Any:
    from enclaverec.tools.gramine.closure import build_layout

    with stderr_console().status(
        f"listing and hashing the files the {options.role} role loads", spinner="dots"
    ):
        return build_layout(options)


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


def _warn_about(layout: Any) -> None:
    console = stderr_console()
    if not layout.gramine_installed:
        console.print(
            f"note: Gramine is not installed at {layout.options.gramine_libdir}: libsysdb.so "
            "and the glibc runtime are listed without hashes, and gramine-sgx-sign hashes "
            "them on the SGX server (give --gramine-libdir if Gramine lives elsewhere there)",
            markup=False,
            soft_wrap=True,
        )
    if layout.missing_imports:
        console.print(
            "note: imported somewhere by the package but not installed, so not loadable in "
            f"the enclave either: {', '.join(layout.missing_imports)}",
            markup=False,
            soft_wrap=True,
        )


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc}") from exc


def _make_private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc}") from exc


# --- handlers -----------------------------------------------------------------------------


def _manifest(args: argparse.Namespace) -> int:
    from enclaverec.tee.measurement import MEASURED_CONFIG_PATH
    from enclaverec.tools.gramine.render import (
        ENCLAVE_DATA_DIR,
        ENCLAVE_SEALED_DIR,
        enclave_role,
        render_manifest,
    )

    role = enclave_role(args.role)
    output = _absolute(args.output)
    paths = _deployment(args, role, output, _read_config(args.config), check_role=True)
    config, sealed_dir, data_dir = paths["config"], paths["sealed_dir"], paths["data_dir"]
    options = _options(args, **paths)
    layout = _build(options)
    manifest = render_manifest(layout)

    _make_private_dir(output)
    manifest_path = output / f"{role}.manifest.toml"
    _write(config.host_path, config.canonical)
    _write(manifest_path, manifest)
    _make_private_dir(sealed_dir)
    if data_dir is not None:
        _make_private_dir(data_dir)

    _warn_about(layout)
    files, total = layout.closure_totals()
    console = stdout_console()
    lines = []
    if config.not_for_production:
        lines.append(f"WARNING: {config.not_for_production}; `gramine check` refuses it")
    lines += [
        f"wrote {manifest_path}: enclave {options.enclave_size}, {options.max_threads} threads, "
        f"ISVPRODID {options.isv_prod_id}, ISVSVN {options.isv_svn}",
        f"trusted closure of the {role} role: {files} files, {_mib(total)} (each real file "
        f"counted once), {layout.package_modules()} of them enclaverec modules",
        f"wrote {config.host_path} (canonical measured configuration, sha256 "
        f"{config.sha256}), mounted at {MEASURED_CONFIG_PATH}",
        f"sealed-state directory {sealed_dir}, mounted at {ENCLAVE_SEALED_DIR}",
    ]
    if data_dir is not None:
        lines.append(f"data directory {data_dir}, mounted at {ENCLAVE_DATA_DIR}")
    lines += [
        "next, in that directory on the SGX server (docs/gramine.md):",
        f"  gramine-manifest {role}.manifest.toml {role}.manifest",
        f"  gramine-sgx-sign --manifest {role}.manifest --output {role}.manifest.sgx",
        f"  gramine-sgx-sigstruct-view --output-format toml {role}.sig",
    ]
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)
    return 0


def _measure(args: argparse.Namespace) -> int:
    from enclaverec.tee.measurement import measured_inputs
    from enclaverec.tools.gramine.render import enclave_role

    role = enclave_role(args.role)
    raw = _read_config(args.config) if args.config is not None else None
    simulated = measured_inputs(role, raw).mrenclave().hex() if raw is not None else None
    output = _absolute(args.output) if args.output is not None else None
    layout = _build(_options(args, **_deployment(args, role, output, raw)))
    real = (
        "computed by gramine-sgx-sign on the SGX server; read it with "
        f"`gramine-sgx-sigstruct-view --output-format toml {role}.sig`"
    )
    if args.json:
        document = layout.to_dict()
        document["simulated_mrenclave"] = simulated
        document["real_mrenclave"] = real
        # Plain print: rich would wrap long paths and hashes and break the JSON.
        print(json.dumps(document, indent=2))
        return 0
    _warn_about(layout)
    _print_measured(layout, simulated, real, verbose=args.verbose, output=output)
    return 0


def _print_measured(
    layout: Any, simulated: str | None, real: str, *, verbose: bool, output: Path | None
) -> None:
    from rich.table import Table

    from enclaverec.tee.measurement import MEASURED_CONFIG_PATH

    console = stdout_console()
    options = layout.options

    def field(name: str, value: str) -> None:
        console.print(f"{name:<16}{value}", markup=False, soft_wrap=True)

    console.print(f"measured inputs of the {layout.role} enclave (Gramine)", markup=False)
    field("entry point", f"{layout.interpreter} (Python {layout.python_version})")
    field("argv", " ".join(layout.argv))
    for index, (name, value) in enumerate(layout.env):
        field("environment" if index == 0 else "", f"{name}={value}")
    field(
        "sizes",
        f"enclave {options.enclave_size}, max threads {options.max_threads}, stack "
        f"{options.stack_size}, compute threads {options.compute_threads}",
    )
    field("identity", f"ISVPRODID {options.isv_prod_id}, ISVSVN {options.isv_svn}")
    if options.config is not None:
        field(
            "config",
            f"{MEASURED_CONFIG_PATH} sha256 {options.config.sha256} (the canonical form of "
            "the --config file)",
        )
    else:
        field("config", "not given (--config adds its hash and the simulated MRENCLAVE)")
    for index, mount in enumerate(layout.mounts()):
        source = mount.uri or "(in-enclave tmpfs)"
        if mount.path == MEASURED_CONFIG_PATH and output is None:
            source = "DIR/ROLE.measured.toml, the canonical copy `gramine manifest` writes"
        field("mounts" if index == 0 else "", f"{mount.path} <- {source}")
    for index, allowed in enumerate(layout.allowed_files()):
        field("allowed files" if index == 0 else "", f"{allowed} (read-write, not measured)")

    files = layout.all_trusted_files()
    unhashed = [item for item in files if item.sha256 is None]
    real_files, real_total = layout.closure_totals()
    field(
        "trusted files",
        f"{real_files} files, {_mib(real_total)} (each real file counted once; "
        f"{layout.package_modules()} enclaverec modules)",
    )
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("group")
    table.add_column("files", justify="right")
    table.add_column("size", justify="right")
    for group, count, size in layout.groups():
        table.add_row(group, str(count), _mib(size) if size else "-")
    console.print(table)
    if unhashed:
        console.print(
            f"{len(unhashed)} Gramine entries without a hash here: gramine-sgx-sign hashes "
            "them on the SGX server",
            markup=False,
            soft_wrap=True,
        )
    if verbose:
        for item in files:
            digest = item.sha256 or "(hashed by gramine-sgx-sign)"
            size = "-" if item.size is None else str(item.size)
            print(f"{digest}  {size:>12}  {item.path}")
    if simulated is not None:
        field("simulated MRENCLAVE", "")
        console.print(
            f"  {simulated} (what the simulated backend puts in this role's quotes for this "
            "configuration; it covers the role's closure, argv and configuration only)",
            markup=False,
            soft_wrap=True,
        )
    console.print(f"real MRENCLAVE: {real}", markup=False, soft_wrap=True)


def _check(args: argparse.Namespace) -> int:
    from enclaverec.cli.config import load_toml
    from enclaverec.tools.gramine.check import check_manifest

    document = load_toml(args.file)
    check_manifest(document)
    trusted = document.get("sgx", {}).get("trusted_files", [])
    unhashed = sum(1 for entry in trusted if not (isinstance(entry, dict) and "sha256" in entry))
    message = (
        f"ok: {args.file}: no insecure option, fixed argv and environment, strict file "
        f"checks, DCAP attestation, explicit enclave size and threads; {len(trusted)} trusted "
        "files"
    )
    if unhashed:
        message += f" ({unhashed} without a hash yet: gramine-sgx-sign adds them)"
    stdout_console().print(message, markup=False, soft_wrap=True)
    return 0
