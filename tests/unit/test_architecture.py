"""The architecture's rules, checked: import layers, and no TensorFlow on the enclave side."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from enclaverec.tee.roles import ROLE_SPECS

REPO = Path(__file__).resolve().parents[2]

# Modules that run inside enclaves (or beside them) and must start without TensorFlow.
ENCLAVE_SIDE = [
    "enclaverec.roles.aggregator",
    "enclaverec.roles.keybroker",
    "enclaverec.roles.paramserver",
    "enclaverec.federated.aggregator",
    "enclaverec.evaluation",
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


FORBIDDEN_OUTSIDE_TRAINING = (
    "tensorflow",
    "keras",
    "sklearn",
    "scipy",
    "matplotlib",
    "rich",
    "pygments",
)
"""What a role that does not train must never load (a smaller enclave; DESIGN §5 exception
recorded in docs/decisions.md)."""

ENCLAVE_ENTRIES = [
    spec
    for spec in ROLE_SPECS.values()
    if spec.in_enclave and spec.entry.startswith("enclaverec.roles.")
]


def test_import_contracts_hold():
    # import-linter is in the test extra: without it the rules are not checked, which is a
    # failure, not a skip.
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is missing: pip install -e '.[test]'"
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


def test_every_enclave_role_runs_its_own_entry_module():
    # What a role imports is what it runs and what is measured: no enclave role may start
    # a module of a scheme package (which would pull in more than the role needs).
    for spec in ROLE_SPECS.values():
        if spec.in_enclave:
            assert spec.entry == f"enclaverec.roles.{spec.name}", spec


def test_every_enclave_role_entry_has_an_import_contract():
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
    sources = {
        module
        for contract in contracts
        if contract["type"] == "forbidden"
        for module in contract["source_modules"]
    }
    assert ENCLAVE_ENTRIES, "no role entry modules found"
    for spec in ENCLAVE_ENTRIES:
        assert spec.entry in sources, f"no import-linter contract for {spec.entry}"


@pytest.mark.parametrize(
    "entry", [spec.entry for spec in ENCLAVE_ENTRIES if not spec.trains], ids=lambda e: e
)
def test_a_non_training_role_loads_no_forbidden_module(entry):
    # A fresh interpreter, as the role's process starts: import the entry, list what is
    # loaded. Function-level imports are covered by the import-linter contracts.
    code = (
        "import json, sys\n"
        f"import {entry}\n"
        f"print(json.dumps(sorted(name for name in sys.modules if name.split('.')[0] in "
        f"{list(FORBIDDEN_OUTSIDE_TRAINING)!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
