"""Shared fixtures: the real DCAP test vectors, and helpers to run the CLI in-process."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

VECTORS_ENV = "ENCLAVEREC_TEST_VECTORS"
SGX_DEVICE = Path("/dev/attestation/quote")


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Real-hardware tests run only inside an SGX enclave with Gramine's attestation device.
    if item.get_closest_marker("sgx_hw") is not None and not SGX_DEVICE.exists():
        pytest.skip(f"needs real SGX hardware ({SGX_DEVICE} does not exist)")


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """A CLI run in-process points the root logger at the test's captured stderr; put the
    previous handlers back, or later tests log into a closed stream ("--- Logging error
    ---" in the output of an unrelated test)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def dcap_vectors() -> Path:
    """The folder of real Intel DCAP quotes and collateral (``shared/vectors/dcap``).

    Without ``ENCLAVEREC_TEST_VECTORS`` the tests that need it skip, since a user's
    checkout has no vectors; under CI (``CI=true``) a missing folder is a failure.
    """
    value = os.environ.get(VECTORS_ENV)
    in_ci = os.environ.get("CI", "").lower() == "true"
    if not value:
        message = f"{VECTORS_ENV} is not set: the real DCAP vectors are not available"
        if in_ci:
            pytest.fail(message)
        pytest.skip(message)
    folder = Path(value)
    if not (folder / "sgx_quote").is_file():
        message = f"{VECTORS_ENV}={value} does not hold the DCAP vectors (no sgx_quote)"
        if in_ci:
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture
def run_cli(capsys):
    """Run ``enclaverec`` in-process; returns (exit code, stdout, stderr)."""
    from enclaverec.cli.main import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
