"""Checking a rendered Gramine manifest: every reason it is not fit for production."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from typing import Any

from enclaverec.errors import (
    UnsafeManifestError,
)
from enclaverec.tools.gramine.render import (
    ENCLAVE_DATA_DIR,
    ENCLAVE_HOSTS_FILE,
    ENCLAVE_SEALED_DIR,
    NOT_FOR_PRODUCTION_ENV,
)


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
    env = document.get("loader", {}).get("env", {}) if isinstance(document, Mapping) else {}
    if isinstance(env, Mapping) and NOT_FOR_PRODUCTION_ENV in env:
        problems.append(f"loader.env.{NOT_FOR_PRODUCTION_ENV}: {env[NOT_FOR_PRODUCTION_ENV]}")
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


def check_manifest(document: Mapping[str, Any], *, accept_not_for_production: bool = False) -> None:
    """Refuse a manifest that weakens the enclave.

    Refused: any key containing ``insecure__`` (e.g. ``loader.insecure__use_cmdline_argv``,
    ``loader.insecure__use_host_env``, ``sys.insecure__allow_eventfd``,
    ``fs.insecure__keys``); an environment variable with ``passthrough``; argv or
    environment read from a file (``loader.argv_src_file``, ``loader.env_src_file``); no
    fixed ``loader.argv``; a log level other than ``error``/``none``; ``sgx.debug`` other
    than false or absent; ``sgx.file_check_policy`` other than ``"strict"``;
    ``sgx.remote_attestation`` other than ``"dcap"``; no explicit ``sgx.enclave_size`` or
    ``sgx.max_threads``; SGX statistics or profiling; an allowed file that covers a trusted
    one; a manifest rendered from a configuration that is not for production (a simulated
    TEE), unless ``accept_not_for_production`` (rendering it, marked so).

    Raises:
        UnsafeManifestError: listing every problem.
    """
    problems = manifest_problems(document)
    if accept_not_for_production:
        problems = [p for p in problems if not p.startswith(f"loader.env.{NOT_FOR_PRODUCTION_ENV}")]
    if problems:
        raise UnsafeManifestError(
            f"the manifest is not fit for production: {'; '.join(problems)}",
            got=f"{len(problems)} problem(s)",
            expected="none",
        )
