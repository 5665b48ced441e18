"""The architecture's rules, checked: import layers, and no TensorFlow on the enclave side."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Modules that run inside enclaves (or beside them) and must start without TensorFlow.
ENCLAVE_SIDE = [
    "enclaverec.arrays",
    "enclaverec.logreg",
    "enclaverec.paramservice.combine",
    "enclaverec.paramservice.store",
    "enclaverec.paramservice.shards",
    "enclaverec.paramservice.optimizers",
    "enclaverec.paramservice.shard",
    "enclaverec.paramservice.shard_rpc",
    "enclaverec.paramservice.checkpoint",
    "enclaverec.schedule",
    "enclaverec.distributed.loopback",
    "enclaverec.distributed.steps",
    "enclaverec.distributed.paramserver",
    "enclaverec.gradients",
    "enclaverec.federated.aggregate",
    "enclaverec.transport.tensors",
    "enclaverec.transport.serving",
    "enclaverec.tee.sealing",
    "enclaverec.data.encrypted",
]


def test_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed (it is in the test extra)")
    result = subprocess.run([lint], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_enclave_side_imports_with_tensorflow_unavailable():
    # A None entry in sys.modules makes `import tensorflow` raise ImportError.
    code = (
        "import sys\n"
        "sys.modules['tensorflow'] = None\n"
        "sys.modules['keras'] = None\n"
        f"for name in {ENCLAVE_SIDE!r}:\n"
        "    __import__(name)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
