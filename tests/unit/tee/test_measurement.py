"""The software measurement (simulated MRENCLAVE)."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import sys

import pytest

from enclaverec.errors import ConfigError, UsageError
from enclaverec.tee.measurement import (
    ENTRY_POINTS,
    MEASUREMENT_FORMAT,
    ROLES,
    canonical_config,
    measured_files,
    measured_inputs,
    mrenclave,
    package_root,
)

CONFIG = b"""
# the federation's measured configuration
[plan]
rounds = 5
parties = ["a", "b"]

[policy]
tcb_statuses = ["UpToDate"]
min_isv_svn = 1
"""

SAME_VALUES_REORDERED = b"""
[policy]
min_isv_svn    = 1   # whitespace and comments do not count
tcb_statuses = [ "UpToDate" ]
[plan]
parties = ["a",
           "b"]
rounds = 5
"""


@pytest.fixture
def package_copy(tmp_path):
    copy = tmp_path / "enclaverec"
    shutil.copytree(package_root(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_stable_across_calls():
    assert mrenclave(measured_inputs("aggregator", CONFIG)) == mrenclave(
        measured_inputs("aggregator", CONFIG)
    )


def test_stable_across_processes():
    code = (
        "import sys; from enclaverec.tee.measurement import measured_inputs;"
        "print(measured_inputs('aggregator', sys.stdin.buffer.read()).mrenclave().hex())"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], input=CONFIG, capture_output=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert runs == {mrenclave(measured_inputs("aggregator", CONFIG)).hex().encode()}


def test_copy_of_the_package_measures_the_same(package_copy):
    assert mrenclave(measured_inputs("aggregator", CONFIG, root=package_copy)) == mrenclave(
        measured_inputs("aggregator", CONFIG)
    )


def test_changes_when_a_package_file_changes(package_copy):
    before = mrenclave(measured_inputs("aggregator", CONFIG, root=package_copy))
    errors_py = package_copy / "errors.py"
    errors_py.write_bytes(errors_py.read_bytes() + b"\n# one more line\n")
    assert mrenclave(measured_inputs("aggregator", CONFIG, root=package_copy)) != before


def test_an_unimported_file_is_not_measured_until_the_closure_imports_it(package_copy):
    before = mrenclave(measured_inputs("keybroker", CONFIG, root=package_copy))
    (package_copy / "tee" / "extra.py").write_text("X = 1\n")
    assert mrenclave(measured_inputs("keybroker", CONFIG, root=package_copy)) == before
    entry = package_copy / "roles" / "keybroker.py"
    entry.write_text(entry.read_text() + "\nfrom enclaverec.tee import extra  # noqa\n")
    after = measured_inputs("keybroker", CONFIG, root=package_copy)
    assert "enclaverec/tee/extra.py" in {item.path for item in after.files}
    assert mrenclave(after) != before


def test_aggregator_unchanged_by_cli_help_text_or_gramine_tooling(package_copy):
    before = mrenclave(measured_inputs("aggregator", CONFIG, root=package_copy))
    for tool in ("cli/commands/federated.py", "cli/commands/gramine.py", "tools/fake_device.py"):
        path = package_copy / tool
        text = path.read_text()
        assert "help=" in text or tool.endswith("fake_device.py")
        path.write_text(text.replace('help="', 'help="edited: ', 1) + "\n# edited\n")
    for tool in (package_copy / "tools").rglob("*.py"):
        tool.write_text(tool.read_text() + "\n# edited\n")
    assert mrenclave(measured_inputs("aggregator", CONFIG, root=package_copy)) == before


def test_aggregator_changed_by_an_edit_to_any_module_of_its_closure(package_copy):
    before = measured_inputs("aggregator", CONFIG, root=package_copy)
    text = before.canonical_text().decode()
    # Every module of the closure is hashed into the measured text...
    for item in before.files:
        digest = hashlib.sha256((package_copy.parent / item.path).read_bytes()).hexdigest()
        assert f"file {digest} {item.path}\n" in text
    # ...so an edit to any of them changes MRENCLAVE: the entry, a package __init__, a
    # module reached only through another, and the proto stubs.
    paths = {item.path for item in before.files}
    for relative in (
        "roles/aggregator.py",
        "transport/__init__.py",
        "crypto/aead.py",
        "transport/proto/federated_pb2.py",
    ):
        assert f"enclaverec/{relative}" in paths
        path = package_copy / relative
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        after = mrenclave(measured_inputs("aggregator", CONFIG, root=package_copy))
        path.write_bytes(original)
        assert after != mrenclave(before), relative


def test_changes_when_the_entry_point_changes():
    inputs = measured_inputs("aggregator", CONFIG)
    other_argv = dataclasses.replace(inputs, argv=(*inputs.argv, "--unmeasured-flag"))
    assert mrenclave(other_argv) != mrenclave(inputs)
    assert mrenclave(measured_inputs("keybroker", CONFIG)) != mrenclave(inputs)


def test_changes_when_a_measured_config_value_changes():
    changed = CONFIG.replace(b"rounds = 5", b"rounds = 6")
    assert mrenclave(measured_inputs("aggregator", changed)) != mrenclave(
        measured_inputs("aggregator", CONFIG)
    )


def test_same_when_only_order_whitespace_or_comments_change():
    assert canonical_config(SAME_VALUES_REORDERED) == canonical_config(CONFIG)
    assert mrenclave(measured_inputs("aggregator", SAME_VALUES_REORDERED)) == mrenclave(
        measured_inputs("aggregator", CONFIG)
    )


def test_canonical_config_sorts_nested_tables():
    assert canonical_config(b"b = 1\na = {d = 1, c = 2}\n") == b"b = 1\n\n[a]\nc = 2\nd = 1\n"


def test_invalid_measured_config_is_a_config_error():
    with pytest.raises(ConfigError, match="not valid TOML"):
        canonical_config(b"rounds = = 5")


def test_model_code_is_measured_only_for_training_roles():
    aggregator = {item.path for item in measured_files("aggregator")}
    worker = {item.path for item in measured_files("party")}
    assert "enclaverec/model/__init__.py" in worker
    assert not any(path.startswith("enclaverec/model/") for path in aggregator)
    assert "enclaverec/tee/measurement.py" in aggregator
    assert all(path.endswith(".py") and "__pycache__" not in path for path in worker)


def test_canonical_text_is_the_documented_format():
    inputs = measured_inputs("party", CONFIG)
    lines = inputs.canonical_text().decode("utf-8").split("\n")
    assert lines[0] == MEASUREMENT_FORMAT
    assert lines[1] == "role party"
    assert lines[2] == (
        'argv ["python3","-m","enclaverec.roles.party","--config","/enclaverec/measured.toml"]'
    )
    assert lines[3] == "config " + hashlib.sha256(canonical_config(CONFIG)).hexdigest()
    file_lines = lines[4:-1]
    assert lines[-1] == ""
    assert file_lines == sorted(file_lines, key=lambda line: line.split(" ", 2)[2].encode())
    sha, path = file_lines[0].split(" ")[1:]
    assert hashlib.sha256((package_root().parent / path).read_bytes()).hexdigest() == sha
    assert mrenclave(inputs) == hashlib.sha256(inputs.canonical_text()).digest()


def test_every_role_has_an_entry_point():
    assert set(ENTRY_POINTS) == set(ROLES)


def test_unknown_role_is_refused():
    with pytest.raises(UsageError, match="unknown role"):
        measured_inputs("admin", CONFIG)


def test_config_may_be_a_path(tmp_path):
    path = tmp_path / "measured.toml"
    path.write_bytes(CONFIG)
    assert measured_inputs("party", path) == measured_inputs("party", CONFIG)
