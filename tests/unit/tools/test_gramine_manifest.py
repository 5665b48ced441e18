"""Rendered Gramine manifests: what they trust, what they fix, and what they refuse."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from enclaverec.errors import ConfigError, UnsafeManifestError, UsageError
from enclaverec.tee.measurement import (
    ENTRY_POINTS,
    MEASURED_CONFIG_PATH,
    ROLE_ISV_PROD_IDS,
    ROLES,
    canonical_config,
    measured_files,
    measured_inputs,
    package_root,
)
from enclaverec.tools.gramine.check import check_manifest, manifest_problems
from enclaverec.tools.gramine.closure import (
    DistributionIndex,
    build_layout,
    enclave_environment,
    glibc_names,
    gramine_files,
)
from enclaverec.tools.gramine.probe import (
    default_console_script,
    read_console_script,
    role_modules,
    run_probe,
    third_party_imports,
)
from enclaverec.tools.gramine.render import (
    ENCLAVE_DATA_DIR,
    ENCLAVE_ROLES,
    ENCLAVE_SEALED_DIR,
    GLIBC_FALLBACK_NAMES,
    ROLE_DEFAULTS,
    EnclaveLayout,
    ManifestOptions,
    MeasuredConfig,
    TrustedFile,
    parse_size,
    render_manifest,
)

CONFIG = b"""
# the federation's measured configuration
[plan]
rounds = 5
parties = ["a", "b"]
"""

# Keys of a rendered manifest that Gramine (v1.8's schema, python/graminelibos/
# manifest_check.py) knows, per table: a typo such as sgx.thread_num would not be one.
GRAMINE_KEYS: dict[str, set[str]] = {
    "": {"libos", "loader", "fs", "sgx", "sys"},
    "libos": {"entrypoint", "check_invalid_pointers"},
    "loader": {"entrypoint", "argv", "env", "gid", "log_file", "log_level", "uid"},
    "loader.entrypoint": {"uri", "sha256"},
    "fs": {"mounts", "root", "start_dir"},
    "sys": {
        "allowed_ioctls",
        "brk",
        "disallow_subprocesses",
        "enable_extra_runtime_domain_names_conf",
        "enable_sigterm_injection",
        "experimental__enable_flock",
        "stack",
        "fds",
    },
    "sys.stack": {"size"},
    "sgx": {
        "allowed_files",
        "cpu_features",
        "debug",
        "edmm_enable",
        "enclave_size",
        "file_check_policy",
        "isvprodid",
        "isvsvn",
        "max_threads",
        "preheat_enclave",
        "remote_attestation",
        "seal_key",
        "trusted_files",
        "trusted_files_cache_size",
    },
}
GLIBC = GLIBC_FALLBACK_NAMES


# --- helpers ------------------------------------------------------------------------------


def sha256_of(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def synthetic_layout(tmp_path: Path, role: str = "aggregator", **overrides: Any) -> EnclaveLayout:
    """A layout built by hand (no probe): for rendering and checking tests."""
    script = tmp_path / "venv" / "bin" / "enclaverec"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"#!{sys.executable}\n")
    options = ManifestOptions.for_role(
        role,
        config=MeasuredConfig.from_toml(CONFIG, tmp_path / "deploy" / f"{role}.measured.toml"),
        sealed_dir=tmp_path / "deploy" / "sealed",
        data_dir=tmp_path / "deploy" / "data" if role in ("party", "worker") else None,
        gramine_libdir=tmp_path / "gramine",
        **overrides,
    )
    files = [
        TrustedFile(str(script), sha256_of(str(script)), script.stat().st_size, "python"),
        TrustedFile("/usr/lib/x86_64-linux-gnu/libz.so.1", "ab" * 32, 10, "shared libraries"),
    ]
    gramine, installed = gramine_files(options.gramine_libdir)
    return EnclaveLayout(
        options=options,
        console_script=str(script),
        interpreter=sys.executable,
        python_version="3.11.7",
        argv=tuple(ENTRY_POINTS[role]),
        env=tuple(
            enclave_environment(
                options, ["/usr/lib/x86_64-linux-gnu"], os.path.dirname(sys.executable)
            ).items()
        ),
        trusted_files=tuple(sorted([*files, *gramine], key=lambda item: item.path)),
        directory_mounts=(str(tmp_path / "venv"), "/usr/lib/x86_64-linux-gnu"),
        library_dirs=("/usr/lib/x86_64-linux-gnu",),
        gramine_installed=installed,
    )


def valid_document(tmp_path: Path) -> dict[str, Any]:
    return tomllib.loads(render_manifest(synthetic_layout(tmp_path)).decode())


def trusted_map(document: dict[str, Any]) -> dict[str, str | None]:
    entries = {}
    for entry in document["sgx"]["trusted_files"]:
        if isinstance(entry, dict):
            entries[entry["uri"].removeprefix("file:")] = entry.get("sha256")
        else:
            entries[entry.removeprefix("file:")] = None
    return entries


# A real process of the role, independent of the code under test: it builds the CLI's
# parser (which imports every command module, as `enclaverec federated aggregator` does),
# imports every measured module of the role, and reports what it loaded.
ROLE_PROCESS = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
mapped = set()
for line in open("/proc/self/maps"):
    fields = line.split(maxsplit=5)
    if len(fields) == 6 and fields[5].startswith("/"):
        mapped.add(fields[5].strip())
modules = list(sys.modules.values())
files = {m.__file__ for m in modules if isinstance(getattr(m, "__file__", None), str)}
print(json.dumps({"files": sorted(files), "mapped": sorted(mapped)}))
"""


def loaded_by_role(interpreter: str, role: str) -> tuple[list[str], list[str]]:
    result = subprocess.run(
        [interpreter, "-c", ROLE_PROCESS, json.dumps(list(role_modules(role)))],
        capture_output=True,
        text=True,
        env={"PYTHONSAFEPATH": "1", "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/nonexistent"},
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    elf = []
    for path in report["mapped"]:
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                if handle.read(4) == b"\x7fELF":
                    elf.append(path)
    return report["files"], elf


def assert_covers_everything_loaded(document: dict[str, Any], interpreter: str, role: str):
    """Every module file and every shared object a real process of the role loads is a
    trusted file with its true SHA-256; glibc is Gramine's own."""
    trusted = trusted_map(document)
    files, elf = loaded_by_role(interpreter, role)
    real_interpreter = os.path.realpath(interpreter)
    missing, wrong = [], []
    for path in [*files, *elf]:
        path = os.path.normpath(path)
        if path == real_interpreter or os.path.basename(path) in GLIBC:
            continue
        names = [path]
        if path in elf:
            # The loader opens a library by its soname, a symbolic link to the mapped file.
            directory = os.path.dirname(path)
            names += [
                os.path.join(directory, name)
                for name in os.listdir(directory)
                if os.path.islink(os.path.join(directory, name))
                and os.path.realpath(os.path.join(directory, name)) == path
            ]
        for name in names:
            if name not in trusted:
                missing.append(name)
            elif trusted[name] != sha256_of(name):
                wrong.append(name)
    assert not missing, f"loaded but not trusted: {missing[:10]}"
    assert not wrong, f"trusted with a wrong hash: {wrong[:10]}"
    assert len(files) > 100  # the check above looked at a real interpreter's imports


# --- options ------------------------------------------------------------------------------


def test_parse_size():
    assert parse_size("4G") == 4 * 1024**3
    assert parse_size("256M") == 256 * 1024**2
    for bad in ("4GB", "0G", "-1M", "4", "G", 4):
        with pytest.raises(ConfigError, match="a size is"):
            parse_size(bad)  # type: ignore[arg-type]


def test_every_enclave_role_has_defaults_and_the_simulated_backends_product_id():
    assert set(ROLE_DEFAULTS) == set(ENCLAVE_ROLES)
    assert set(ROLES) - set(ENCLAVE_ROLES) == {"owner"}
    ids = [ManifestOptions.for_role(role).isv_prod_id for role in ENCLAVE_ROLES]
    assert ids == [ROLE_ISV_PROD_IDS[role] for role in ENCLAVE_ROLES]
    assert len(set(ids)) == len(ids)


def test_owner_has_no_manifest():
    with pytest.raises(UsageError, match="outside any enclave"):
        ManifestOptions.for_role("owner")


def test_unknown_role_is_refused():
    with pytest.raises(UsageError, match="unknown role 'aggregater'"):
        ManifestOptions.for_role("aggregater")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"enclave_size": "3G"}, "power of two"),
        ({"enclave_size": "128M"}, "power of two of at least 256M"),
        ({"enclave_size": "lots"}, "a size is"),
        ({"compute_threads": 0}, "compute threads must be at least 1"),
        ({"max_threads": 16}, "max threads must leave 16 slots"),
        ({"compute_threads": 64, "max_threads": 64}, "max threads must leave"),
        ({"isv_prod_id": 65536}, "isv_prod_id is 0..65535"),
        ({"isv_svn": -1}, "isv_svn is 0..65535"),
        ({"sealed_dir": Path("relative/sealed")}, "must be an absolute path"),
        ({"gramine_libdir": Path("gramine")}, "must be an absolute path"),
    ],
)
def test_bad_options_are_configuration_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        ManifestOptions.for_role("aggregator", **overrides)


def test_flags_override_role_defaults():
    options = ManifestOptions.for_role(
        "worker", enclave_size="8G", max_threads=256, compute_threads=32, isv_svn=3
    )
    assert (options.enclave_size, options.max_threads, options.compute_threads) == ("8G", 256, 32)
    assert options.isv_svn == 3
    assert options.stack_size == ROLE_DEFAULTS["worker"].stack_size


# --- the console script -------------------------------------------------------------------


def test_console_script_names_its_interpreter(tmp_path):
    script = tmp_path / "enclaverec"
    script.write_text(f"#!{sys.executable}\nimport sys\n")
    assert read_console_script(script) == sys.executable


def test_installed_console_script_is_usable():
    interpreter = read_console_script(default_console_script())
    assert Path(interpreter).is_file()


@pytest.mark.parametrize(
    "first_line",
    [
        "#!/bin/sh",  # pip's trampoline for long paths: the interpreter is not named here
        "#!/usr/bin/env python3",
        "#!python3",
        "import sys",
    ],
)
def test_console_script_without_an_absolute_interpreter_is_refused(tmp_path, first_line):
    script = tmp_path / "enclaverec"
    script.write_text(first_line + "\n")
    with pytest.raises(UsageError, match="absolute path of the Python interpreter|not a Python"):
        read_console_script(script)


def test_console_script_naming_a_missing_interpreter_is_refused(tmp_path):
    script = tmp_path / "enclaverec"
    script.write_text(f"#!{tmp_path}/python3\n")
    with pytest.raises(UsageError, match="does not exist"):
        read_console_script(script)


def test_missing_console_script_is_refused(tmp_path):
    with pytest.raises(UsageError, match="install enclaverec with pip"):
        read_console_script(tmp_path / "enclaverec")


# --- what a role imports ------------------------------------------------------------------


def test_role_modules_follow_the_measurement():
    aggregator = role_modules("aggregator")
    party = role_modules("party")
    assert "enclaverec.roles.aggregator" in aggregator
    assert "enclaverec.errors" in aggregator
    assert not any(name.startswith(("enclaverec.cli", "enclaverec.tools")) for name in aggregator)
    assert not any(name.startswith("enclaverec.model") for name in aggregator)
    assert "enclaverec.model" in party
    assert len(party) == len(measured_files("party"))
    assert not any(name.endswith("__main__") for name in party)


def test_third_party_imports_are_found_anywhere_in_a_file(tmp_path):
    package = tmp_path / "enclaverec"
    package.mkdir()
    (package / "__init__.py").write_text("import json\nfrom . import sibling\n")
    (package / "sibling.py").write_text("")
    (package / "errors.py").write_text("class UsageError(Exception): pass\n")
    (package / "roles").mkdir()
    (package / "roles" / "__init__.py").write_text("")
    (package / "roles" / "aggregator.py").write_text("from enclaverec import a\n")
    (package / "roles" / "party.py").write_text("from enclaverec import a, model\n")
    (package / "unused.py").write_text("import scipy\n")  # in no closure: not probed
    (package / "a.py").write_text(
        "from __future__ import annotations\n"
        "import os, numpy as np\n"
        "from enclaverec.errors import UsageError\n"
        "def later():\n"
        "    from cryptography.hazmat.primitives import hashes\n"
        "    try:\n"
        "        import grpc.aio\n"
        "    except ImportError:\n"
        "        pass\n"
    )
    (package / "model").mkdir()
    (package / "model" / "__init__.py").write_text("import tensorflow\n")
    assert third_party_imports("aggregator", root=package) == (
        "cryptography.hazmat.primitives",
        "grpc.aio",
        "numpy",
    )
    assert "tensorflow" in third_party_imports("party", root=package)


def test_unparsable_package_file_is_refused(tmp_path):
    package = tmp_path / "enclaverec"
    package.mkdir()
    (package / "__init__.py").write_text("def broken(:\n")
    (package / "roles").mkdir()
    (package / "roles" / "__init__.py").write_text("")
    (package / "roles" / "aggregator.py").write_text("")
    with pytest.raises(UsageError, match="does not parse"):
        third_party_imports("aggregator", root=package)


def test_probe_reports_modules_libraries_and_failures():
    report = run_probe(
        sys.executable, ["tomli_w", "enclaverec_no_such_module"], {"PYTHONSAFEPATH": "1"}
    )
    assert any(path.endswith("tomli_w/__init__.py") for path in report.module_files)
    assert any("libpython" in path or "python3" in path for path in report.mapped_files)
    assert report.failed["enclaverec_no_such_module"].startswith("ModuleNotFoundError")
    assert "tomli_w" not in report.failed
    assert report.prefix == sys.prefix


def test_probe_with_a_broken_interpreter_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="could not run"):
        run_probe(str(tmp_path / "no-python"), ["json"], {})


# --- distributions ------------------------------------------------------------------------


def fake_distribution(site: Path, name: str, version: str, files: dict[str, str], requires=()):
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"]
    lines += [f"Requires-Dist: {requirement}\n" for requirement in requires]
    (info / "METADATA").write_text("".join(lines))
    record = []
    for relative, content in files.items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        record.append(f"{relative},,")
    record.append(f"{info.name}/METADATA,,")
    record.append(f"{info.name}/RECORD,,")
    record.append("../../../bin/tool,,")  # a script outside the site directory
    (info / "RECORD").write_text("\n".join(record) + "\n")


def test_distribution_closure_follows_requirements_without_extras(tmp_path):
    site = tmp_path / "site-packages"
    fake_distribution(
        site,
        "Alpha_Pkg",
        "1.0",
        {"alpha/__init__.py": "", "alpha/tests/test_a.py": "", "alpha/core.h": ""},
        requires=["beta>=1", 'gamma; extra == "docs"', 'delta; python_version < "3.9"'],
    )
    fake_distribution(site, "beta", "2.0", {"beta.py": "", "beta.pth": "import beta\n"})
    fake_distribution(site, "gamma", "3.0", {"gamma.py": ""})
    fake_distribution(site, "epsilon", "1.0", {"epsilon.py": ""}, requires=["alpha-pkg"])
    index = DistributionIndex([str(site)])
    assert set(index.by_name) == {"alpha-pkg", "beta", "gamma", "epsilon"}
    # Extras are not followed; a requirement that is not installed is skipped.
    assert index.closure(["alpha-pkg"]) == ["alpha-pkg", "beta"]
    assert index.closure(["epsilon"], no_expand=["epsilon"]) == ["epsilon"]
    assert index.owner[str(site / "beta.pth")] == "beta"
    alpha = index.by_name["alpha-pkg"]
    # Only files inside the site directory are listed (not ../../../bin/tool).
    assert all(path.startswith(str(site) + "/") for path in alpha.files)
    assert str(site / "alpha" / "core.h") in alpha.files


def test_distribution_without_record_is_refused(tmp_path):
    site = tmp_path / "site-packages"
    info = site / "legacy-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: legacy\nVersion: 1.0\n")
    with pytest.raises(UsageError, match="has no RECORD"):
        DistributionIndex([str(site)])


# --- Gramine's own files ------------------------------------------------------------------


def fake_gramine(libdir: Path) -> None:
    (libdir / "runtime" / "glibc").mkdir(parents=True)
    (libdir / "libsysdb.so").write_bytes(b"\x7fELF libos")
    for name in ("libc.so.6", "ld-linux-x86-64.so.2", "libgcc_s.so.1"):
        (libdir / "runtime" / "glibc" / name).write_bytes(name.encode())


def test_installed_gramine_is_hashed_here(tmp_path):
    fake_gramine(tmp_path)
    files, installed = gramine_files(tmp_path)
    assert installed
    by_path = {item.path: item for item in files}
    libos = by_path[str(tmp_path / "libsysdb.so")]
    assert libos.sha256 == hashlib.sha256(b"\x7fELF libos").hexdigest()
    assert str(tmp_path / "runtime" / "glibc" / "libc.so.6") in by_path
    assert all(item.sha256 for item in files)
    assert glibc_names(tmp_path) == {"libc.so.6", "ld-linux-x86-64.so.2", "libgcc_s.so.1"}


def test_missing_gramine_is_left_to_the_signer(tmp_path):
    files, installed = gramine_files(tmp_path / "absent")
    assert not installed
    assert [item.sha256 for item in files] == [None, None]
    assert files[1].path.endswith("/runtime/glibc/")  # a directory gramine-sgx-sign expands
    assert glibc_names(tmp_path / "absent") == GLIBC_FALLBACK_NAMES


def test_installed_gramine_puts_the_libos_hash_in_the_manifest(tmp_path):
    fake_gramine(tmp_path / "gramine")
    document = tomllib.loads(render_manifest(synthetic_layout(tmp_path)).decode())
    entry = document["loader"]["entrypoint"]
    assert entry["uri"] == f"file:{tmp_path}/gramine/libsysdb.so"
    assert entry["sha256"] == hashlib.sha256(b"\x7fELF libos").hexdigest()
    assert all(isinstance(item, dict) for item in document["sgx"]["trusted_files"])


# --- rendering ----------------------------------------------------------------------------


def test_rendering_is_deterministic(tmp_path):
    assert render_manifest(synthetic_layout(tmp_path)) == render_manifest(
        synthetic_layout(tmp_path)
    )


def test_rendered_manifest_uses_only_gramine_keys(tmp_path):
    document = valid_document(tmp_path)
    for table, keys in GRAMINE_KEYS.items():
        value = document
        for part in filter(None, table.split(".")):
            value = value[part]
        unknown = set(value) - keys
        assert not unknown, f"[{table}] has keys Gramine does not know: {unknown}"
    for mount in document["fs"]["mounts"]:
        assert set(mount) <= {"type", "path", "uri"}
        assert mount["path"].startswith("/")
    assert all(isinstance(value, str) for value in document["loader"]["env"].values())


def test_rendered_manifest_fixes_argv_environment_and_attestation(tmp_path):
    layout = synthetic_layout(tmp_path)
    document = tomllib.loads(render_manifest(layout).decode())
    assert document["loader"]["argv"] == list(ENTRY_POINTS["aggregator"])
    assert document["libos"]["entrypoint"] == layout.interpreter
    assert document["loader"]["env"]["PATH"] == os.path.dirname(layout.interpreter)
    assert document["loader"]["log_level"] == "error"
    sgx = document["sgx"]
    assert sgx["remote_attestation"] == "dcap"
    assert sgx["file_check_policy"] == "strict"
    assert sgx["debug"] is False
    assert (sgx["enclave_size"], sgx["max_threads"]) == ("2G", 64)
    assert (sgx["isvprodid"], sgx["isvsvn"]) == (ROLE_ISV_PROD_IDS["aggregator"], 0)
    env = document["loader"]["env"]
    assert env["LD_LIBRARY_PATH"] == "/lib:/usr/lib/x86_64-linux-gnu"
    assert "PYTHONHASHSEED" not in env
    assert env["OMP_NUM_THREADS"] == "1"
    assert not any(key.startswith("TF_") for key in env)
    assert manifest_problems(document) == []


def test_training_roles_cap_tensorflow_threads(tmp_path):
    document = tomllib.loads(
        render_manifest(synthetic_layout(tmp_path, "party", compute_threads=6)).decode()
    )
    env = document["loader"]["env"]
    assert env["TF_NUM_INTRAOP_THREADS"] == env["OMP_NUM_THREADS"] == "6"
    assert env["TF_NUM_INTEROP_THREADS"] == "1"
    assert document["sgx"]["enclave_size"] == "4G"


def test_measured_config_is_a_trusted_file_at_the_fixed_path(tmp_path):
    layout = synthetic_layout(tmp_path)
    document = tomllib.loads(render_manifest(layout).decode())
    config = layout.options.config
    mounts = {mount["path"]: mount for mount in document["fs"]["mounts"]}
    assert mounts[MEASURED_CONFIG_PATH]["uri"] == f"file:{config.host_path}"
    # Its hash is the `config` line of the simulated MRENCLAVE: one measurement, two TEEs.
    assert (
        trusted_map(document)[str(config.host_path)]
        == measured_inputs("aggregator", CONFIG).config_sha256
    )
    assert canonical_config(config.canonical) == config.canonical


def test_only_sealed_state_data_and_hosts_are_allowed(tmp_path):
    document = valid_document(tmp_path)
    assert document["sgx"]["allowed_files"] == [
        f"file:{tmp_path}/deploy/sealed/",
        "file:/etc/hosts",
    ]
    worker = tomllib.loads(render_manifest(synthetic_layout(tmp_path, "party")).decode())
    assert worker["sgx"]["allowed_files"] == [
        f"file:{tmp_path}/deploy/sealed/",
        f"file:{tmp_path}/deploy/data/",
        "file:/etc/hosts",
    ]
    mounts = {mount["path"]: mount for mount in worker["fs"]["mounts"]}
    assert mounts[ENCLAVE_SEALED_DIR]["uri"] == f"file:{tmp_path}/deploy/sealed"
    assert mounts[ENCLAVE_DATA_DIR]["uri"] == f"file:{tmp_path}/deploy/data"
    assert mounts["/lib"]["uri"] == f"file:{tmp_path}/gramine/runtime/glibc"
    assert mounts["/enclaverec/tmp"] == {"type": "tmpfs", "path": "/enclaverec/tmp"}
    assert worker["loader"]["env"]["TMPDIR"] == "/enclaverec/tmp"
    # No encrypted mounts: data and checkpoints are our own encrypted formats.
    assert all(mount.get("type", "chroot") in ("chroot", "tmpfs") for mount in mounts.values())


def test_a_manifest_needs_the_config_and_the_sealed_dir(tmp_path):
    layout = synthetic_layout(tmp_path)
    no_config = dataclasses.replace(layout, options=ManifestOptions.for_role("aggregator"))
    with pytest.raises(UsageError, match="measured configuration"):
        render_manifest(no_config)
    no_sealed = dataclasses.replace(
        layout, options=dataclasses.replace(layout.options, sealed_dir=None)
    )
    with pytest.raises(UsageError, match="sealed-state directory"):
        render_manifest(no_sealed)


# --- the check ----------------------------------------------------------------------------


def test_check_accepts_a_rendered_manifest(tmp_path):
    check_manifest(valid_document(tmp_path))


UNSAFE_CHANGES = [
    ("loader.insecure__use_cmdline_argv", True, "insecure__"),
    ("loader.insecure__use_host_env", True, "insecure__"),
    ("loader.insecure__disable_aslr", True, "insecure__"),
    ("sys.insecure__allow_eventfd", True, "insecure__"),
    ("fs.insecure__keys", {"default": "00" * 16}, "insecure__"),
    ("sgx.insecure__rpc_thread_num", 4, "insecure__"),
    ("loader.env.LD_PRELOAD", {"passthrough": True}, "passed through from the host"),
    ("loader.argv_src_file", "file:argv", "argv must be fixed"),
    ("loader.env_src_file", "file:env", "environment must be fixed"),
    ("loader.log_level", "debug", "may leak"),
    ("sgx.debug", True, "debug enclave"),
    ("sgx.file_check_policy", "allow_all_but_log", "must be 'strict'"),
    ("sgx.remote_attestation", "none", "must be 'dcap'"),
    ("sgx.enable_stats", True, "statistics"),
    ("sgx.vtune_profile", True, "profiling"),
    ("sgx.profile", {"enable": "main"}, "profiling"),
]


def set_key(document: dict[str, Any], dotted: str, value: Any) -> None:
    *tables, last = dotted.split(".")
    for table in tables:
        document = document.setdefault(table, {})
    document[last] = value


@pytest.mark.parametrize(("key", "value", "message"), UNSAFE_CHANGES)
def test_check_refuses_an_unsafe_option(tmp_path, key, value, message):
    document = valid_document(tmp_path)
    set_key(document, key, value)
    with pytest.raises(UnsafeManifestError, match=message) as caught:
        check_manifest(document)
    assert caught.value.check == "gramine_manifest"
    assert key.split(".")[-1] in str(caught.value) or key in str(caught.value)


@pytest.mark.parametrize(
    ("removed", "message"),
    [
        ("loader.argv", "argv must be fixed|loader.argv: missing"),
        ("sgx.file_check_policy", "must be 'strict', got None"),
        ("sgx.remote_attestation", "must be 'dcap', got None"),
        ("sgx.enclave_size", "sgx.enclave_size: missing"),
        ("sgx.max_threads", "sgx.max_threads: missing"),
    ],
)
def test_check_refuses_a_missing_explicit_setting(tmp_path, removed, message):
    document = valid_document(tmp_path)
    table, key = removed.rsplit(".", 1)
    del document[table][key]
    with pytest.raises(UnsafeManifestError, match=message):
        check_manifest(document)


def test_check_refuses_an_insecure_key_inside_an_array(tmp_path):
    document = valid_document(tmp_path)
    document["fs"]["mounts"].append({"path": "/x", "uri": "file:/x", "insecure__ok": True})
    with pytest.raises(UnsafeManifestError, match=r"fs.mounts\[\d+\].insecure__ok"):
        check_manifest(document)


def test_check_refuses_an_allowed_file_covering_a_trusted_one(tmp_path):
    document = valid_document(tmp_path)
    library = "/usr/lib/x86_64-linux-gnu/libz.so.1"
    assert library in trusted_map(document)
    document["sgx"]["allowed_files"].append(f"file:{os.path.dirname(library)}/")
    with pytest.raises(UnsafeManifestError, match="also covers trusted file"):
        check_manifest(document)


def test_check_refuses_an_environment_value_that_is_not_fixed(tmp_path):
    document = valid_document(tmp_path)
    document["loader"]["env"]["OMP_NUM_THREADS"] = {"from": "host"}
    with pytest.raises(UnsafeManifestError, match="loader.env.OMP_NUM_THREADS: not a fixed"):
        check_manifest(document)
    document["loader"]["env"]["OMP_NUM_THREADS"] = {"value": "4"}
    check_manifest(document)  # Gramine's table form of a fixed value


def test_check_refuses_an_allowed_entry_that_is_not_a_file(tmp_path):
    document = valid_document(tmp_path)
    document["sgx"]["allowed_files"].append("dev:/dev/tty")
    with pytest.raises(UnsafeManifestError, match="not a file: URI"):
        check_manifest(document)


def test_check_lists_every_problem(tmp_path):
    document = valid_document(tmp_path)
    document["sgx"]["debug"] = True
    document["loader"]["insecure__use_host_env"] = True
    assert len(manifest_problems(document)) == 2
    with pytest.raises(UnsafeManifestError, match="got 2 problem"):
        check_manifest(document)


def test_render_refuses_to_write_an_unsafe_manifest(tmp_path, monkeypatch):
    layout = synthetic_layout(tmp_path)
    original = EnclaveLayout.manifest_document

    def with_debug(self):
        document = copy.deepcopy(original(self))
        document["sgx"]["debug"] = True
        return document

    monkeypatch.setattr(EnclaveLayout, "manifest_document", with_debug)
    with pytest.raises(UnsafeManifestError, match="debug enclave"):
        render_manifest(layout)


# --- host paths ---------------------------------------------------------------------------


def test_sealed_dir_inside_trusted_code_is_refused(tmp_path):
    from enclaverec.tools.gramine.closure import _check_host_paths

    options = ManifestOptions.for_role("aggregator", sealed_dir=Path("/opt/venv/state"))
    with pytest.raises(UsageError, match="overlaps the trusted directory /opt/venv"):
        _check_host_paths(options, ("/opt/venv",))


def test_host_directory_over_the_enclaves_own_paths_is_refused():
    from enclaverec.tools.gramine.closure import _check_host_paths

    options = ManifestOptions.for_role("aggregator")
    for mount in ("/enclaverec/venv", "/enclaverec", "/lib", "/"):
        with pytest.raises(UsageError, match="would be mounted over the enclave's own"):
            _check_host_paths(options, (mount,))
    # The scratch tmpfs is ours (/enclaverec/tmp): an installation under /tmp is fine.
    _check_host_paths(options, ("/tmp/clone/.venv",))
    # Inside Gramine's /lib mount is fine (a distribution without merged /usr).
    _check_host_paths(options, ("/lib/x86_64-linux-gnu", "/opt/venv"))


def test_mounts_are_the_fewest_directories(tmp_path):
    from enclaverec.tools.gramine.closure import _directory_mounts

    site = "/opt/venv/lib/python3.11/site-packages"
    assert _directory_mounts(
        [
            f"{site}/numpy/core/x.so",
            f"{site}/grpc/__init__.py",
            "/opt/venv/bin/enclaverec",
            "/usr/lib/python3.12/json/__init__.py",
            "/usr/lib/python3.12/lib-dynload/_ssl.so",
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/srv/app/enclaverec/errors.py",
            "/srv/app/enclaverec/cli/main.py",
        ]
    ) == (
        "/opt/venv/bin",
        site,
        "/srv/app/enclaverec",
        "/usr/lib/python3.12",
        "/usr/lib/x86_64-linux-gnu",
    )


def test_library_aliases_include_every_link_to_the_file(tmp_path):
    from enclaverec.tools.gramine.closure import _library_aliases

    real = tmp_path / "libz.so.1.2.13"
    real.write_bytes(b"\x7fELF")
    (tmp_path / "libz.so.1").symlink_to("libz.so.1.2.13")
    (tmp_path / "libz.so").symlink_to("libz.so.1")
    (tmp_path / "libother.so.1").write_bytes(b"\x7fELF")
    assert _library_aliases(str(real), {}) == [
        str(tmp_path / "libz.so"),
        str(tmp_path / "libz.so.1"),
        str(real),
    ]


# --- a real role --------------------------------------------------------------------------


def real_layout(tmp_path: Path, role: str) -> tuple[EnclaveLayout, dict[str, Any]]:
    options = ManifestOptions.for_role(
        role,
        config=MeasuredConfig.from_toml(CONFIG, tmp_path / f"{role}.measured.toml"),
        sealed_dir=tmp_path / "sealed",
        data_dir=tmp_path / "data" if ROLE_DEFAULTS[role].reads_data else None,
        gramine_libdir=tmp_path / "gramine",
    )
    layout = build_layout(options)
    return layout, tomllib.loads(render_manifest(layout).decode())


@pytest.fixture(scope="module")
def aggregator(tmp_path_factory):
    return real_layout(tmp_path_factory.mktemp("aggregator"), "aggregator")


def test_aggregator_manifest_trusts_everything_the_role_loads(aggregator):
    layout, document = aggregator
    assert_covers_everything_loaded(document, layout.interpreter, "aggregator")


def test_aggregator_manifest_trusts_exactly_the_measured_package_files(aggregator):
    layout, document = aggregator
    root = package_root()
    trusted = {
        path: digest
        for path, digest in trusted_map(document).items()
        if path.startswith(str(root) + "/")
    }
    expected = {str(root.parent / item.path): item.sha256 for item in measured_files("aggregator")}
    assert trusted == expected
    assert not any("/enclaverec/model/" in path for path in trusted)


def test_aggregator_manifest_has_no_tensorflow_and_hashes_are_true(aggregator):
    layout, document = aggregator
    trusted = trusted_map(document)
    for name in ("tensorflow", "keras", "sklearn", "scipy", "matplotlib", "rich", "pygments"):
        assert not any(f"/site-packages/{name}/" in path for path in trusted), name
    # The target for the aggregator's trusted closure (each real file once).
    files, size = layout.closure_totals()
    assert size <= 200 * 1024**2, f"{files} files, {size / 1024**2:.1f} MiB"
    # Hashes are the files' (a sample across groups; the coverage test checks the rest).
    sample = [path for path, digest in trusted.items() if digest][:: max(1, len(trusted) // 50)]
    for path in sample:
        if path != str(layout.options.config.host_path):
            assert trusted[path] == sha256_of(path), path
    assert not [p for p in trusted if p.endswith((".pyc", ".h")) or "/__pycache__/" in p]
    check_manifest(document)


def test_aggregator_manifest_runs_the_measured_entry_point(aggregator):
    layout, document = aggregator
    interpreter = document["libos"]["entrypoint"]
    assert interpreter == read_console_script(default_console_script())
    trusted = trusted_map(document)
    assert trusted[interpreter] == sha256_of(interpreter)
    # python3 -m enclaverec.roles.aggregator: the argv the simulated MRENCLAVE measures.
    assert document["loader"]["argv"] == list(measured_inputs("aggregator", CONFIG).argv)
    assert document["loader"]["argv"][:3] == ["python3", "-m", "enclaverec.roles.aggregator"]
    assert document["loader"]["env"]["PATH"] == os.path.dirname(interpreter)
    mounted = [mount["path"] for mount in document["fs"]["mounts"]]
    assert any(interpreter.startswith(path + "/") for path in mounted)


@pytest.mark.slow
def test_building_twice_gives_the_same_manifest(aggregator):
    layout, _ = aggregator
    again = build_layout(layout.options)
    assert render_manifest(again) == render_manifest(layout)


@pytest.mark.slow
def test_party_manifest_trusts_tensorflow_and_everything_it_loads(tmp_path):
    layout, document = real_layout(tmp_path, "party")
    trusted = trusted_map(document)
    assert any("/tensorflow/" in path for path in trusted)
    root = package_root()
    assert {p for p in trusted if p.startswith(str(root) + "/")} == {
        str(root.parent / item.path) for item in measured_files("party")
    }
    assert document["loader"]["env"]["TF_NUM_INTEROP_THREADS"] == "1"
    assert document["sgx"]["allowed_files"] == [
        f"file:{tmp_path}/sealed/",
        f"file:{tmp_path}/data/",
        "file:/etc/hosts",
    ]
    check_manifest(document)
    assert_covers_everything_loaded(document, layout.interpreter, "party")
