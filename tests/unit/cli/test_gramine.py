"""``enclaverec gramine manifest|measure|check``: files written, output, every exit code."""

from __future__ import annotations

import hashlib
import json
import stat
import tomllib
from pathlib import Path

import pytest
import tomli_w

from enclaverec.cli.commands import gramine as gramine_command
from enclaverec.tee.measurement import ENTRY_POINTS, ROLES, measured_inputs
from enclaverec.tools.gramine.closure import enclave_environment
from enclaverec.tools.gramine.render import (
    EnclaveLayout,
    ManifestOptions,
    MeasuredConfig,
    TrustedFile,
)

CONFIG = b"""
[federation]
tee = "gramine"

[plan]
rounds = 5   # comments and order do not count
parties = ["a", "b"]
"""

SIMULATED_CONFIG = CONFIG.replace(b'tee = "gramine"', b'tee = "simulated"')

SAFE_MANIFEST = {
    "libos": {"entrypoint": "/opt/venv/bin/enclaverec"},
    "loader": {
        "entrypoint": {"uri": "file:/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so"},
        "log_level": "error",
        "argv": list(ENTRY_POINTS["aggregator"]),
        "env": {"LC_ALL": "C"},
    },
    "fs": {
        "mounts": [
            {"path": "/opt/venv", "uri": "file:/opt/venv"},
            {"path": "/enclaverec/sealed", "uri": "file:/srv/sealed"},
        ]
    },
    "sgx": {
        "debug": False,
        "enclave_size": "2G",
        "max_threads": 64,
        "remote_attestation": "dcap",
        "file_check_policy": "strict",
        "allowed_files": ["file:/srv/sealed/"],
        "trusted_files": [
            {"uri": "file:/opt/venv/bin/enclaverec", "sha256": "00" * 32},
            "file:/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so",
        ],
    },
}


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "aggregator.toml"
    path.write_bytes(CONFIG)
    return path


def test_roles_are_the_measurements_roles():
    assert gramine_command._ROLES == ROLES


# --- refusals before anything is built ----------------------------------------------------


@pytest.mark.parametrize(
    "role, document",
    [
        ("party", CONFIG),  # federation.toml describes the aggregator
        ("aggregator", b'[party]\nid = "party-0"\ntee = "gramine"\n'),
        ("keybroker", b"[plan]\nrounds = 5\n"),  # describes no role at all
    ],
)
def test_manifest_of_a_role_the_configuration_does_not_describe_exits_2(
    run_cli, tmp_path, role, document
):
    config = tmp_path / "some.toml"
    config.write_bytes(document)
    output = tmp_path / "out"
    code, _, err = run_cli(
        "gramine", "manifest", "--role", role, "--config", config, "--output", output
    )
    assert code == 2
    assert f"does not describe the {role} role" in err
    assert not output.exists()  # nothing written


@pytest.mark.parametrize("command", ["manifest", "measure"])
def test_owner_has_no_manifest(run_cli, config_file, tmp_path, command):
    extra = ["--output", tmp_path / "out"] if command == "manifest" else []
    code, out, err = run_cli("gramine", command, "--role", "owner", "--config", config_file, *extra)
    assert code == 2
    assert "outside any enclave" in err
    assert out == ""
    assert not (tmp_path / "out").exists()


def test_missing_config_exits_2(run_cli, tmp_path):
    code, _, err = run_cli(
        "gramine",
        "manifest",
        "--role",
        "aggregator",
        "--config",
        tmp_path / "absent.toml",
        "--output",
        tmp_path / "out",
    )
    assert code == 2
    assert "measured configuration not found" in err


def test_invalid_config_exits_2(run_cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[plan\n")
    code, _, err = run_cli(
        "gramine", "manifest", "--role", "aggregator", "--config", bad, "--output", tmp_path
    )
    assert code == 2
    assert "not valid TOML" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--enclave-size", "3G"], "power of two"),
        (["--max-threads", "8"], "max threads must leave"),
        (["--isv-svn", "70000"], "isv_svn is 0..65535"),
    ],
)
def test_bad_sizes_exit_2(run_cli, config_file, tmp_path, flags, message):
    code, _, err = run_cli(
        "gramine",
        "manifest",
        "--role",
        "aggregator",
        "--config",
        config_file,
        "--output",
        tmp_path / "out",
        *flags,
    )
    assert code == 2
    assert message in err


def test_unknown_role_is_an_argparse_error(run_cli, config_file, tmp_path):
    with pytest.raises(SystemExit) as caught:
        run_cli(
            "gramine", "manifest", "--role", "ownr", "--config", config_file, "--output", tmp_path
        )
    assert caught.value.code == 2


# --- check --------------------------------------------------------------------------------


def test_check_accepts_a_safe_manifest(run_cli, tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(tomli_w.dumps(SAFE_MANIFEST))
    code, out, err = run_cli("gramine", "check", path)
    assert code == 0, err
    assert out.startswith(f"ok: {path}")
    assert "2 trusted files (1 without a hash yet" in out


@pytest.mark.parametrize(
    ("table", "key", "value", "message"),
    [
        ("loader", "insecure__use_cmdline_argv", True, "insecure__ option"),
        ("loader", "env", {"LD_PRELOAD": {"passthrough": True}}, "passed through"),
        ("sgx", "debug", True, "debug enclave"),
        ("sgx", "file_check_policy", "allow_all_but_log", "must be 'strict'"),
        # The host could add a package, a .pth file run at start-up, or a library.
        (
            "sgx",
            "allowed_files",
            ["file:/opt/venv/lib/python3.11/site-packages/evil/"],
            "neither the sealed-state nor the data directory",
        ),
        ("sgx", "allowed_files", ["file:/opt/venv/bin/"], "also covers trusted file"),
    ],
)
def test_check_refuses_an_unsafe_manifest_with_exit_3(
    run_cli, tmp_path, table, key, value, message
):
    document = json.loads(json.dumps(SAFE_MANIFEST))
    document[table][key] = value
    path = tmp_path / "m.toml"
    path.write_text(tomli_w.dumps(document))
    code, out, err = run_cli("gramine", "check", path)
    assert code == 3
    assert out == ""
    assert "refused (gramine_manifest)" in err
    assert message in err


def test_check_of_an_unreadable_manifest_exits_2(run_cli, tmp_path):
    bad = tmp_path / "m.toml"
    bad.write_text("sgx.debug = \n")
    assert run_cli("gramine", "check", bad)[0] == 2
    assert run_cli("gramine", "check", tmp_path / "absent.toml")[0] == 2


# --- measure's text output (on a layout built by hand) ------------------------------------


def hand_made_layout(tmp_path: Path) -> EnclaveLayout:
    options = ManifestOptions.for_role(
        "keybroker",
        config=MeasuredConfig.from_toml(CONFIG, tmp_path / "keybroker.measured.toml"),
        sealed_dir=tmp_path / "sealed",
        gramine_libdir=tmp_path / "gramine",
    )
    return EnclaveLayout(
        options=options,
        console_script="/opt/venv/bin/enclaverec",
        interpreter="/opt/venv/bin/python3",
        python_version="3.11.7",
        argv=tuple(ENTRY_POINTS["keybroker"]),
        env=tuple(enclave_environment(options, ["/usr/lib/x86_64-linux-gnu"]).items()),
        trusted_files=(
            TrustedFile("/opt/venv/bin/enclaverec", "11" * 32, 178, "python"),
            TrustedFile(
                "/opt/venv/lib/python3.11/site-packages/cbor2/x.py",
                "22" * 32,
                3 * 1024**2,
                "cbor2 6.3.0",
            ),
            TrustedFile(f"{tmp_path}/gramine/libsysdb.so", None, None, "gramine"),
        ),
        directory_mounts=("/opt/venv",),
        library_dirs=("/usr/lib/x86_64-linux-gnu",),
        gramine_installed=False,
    )


def test_measure_text_summarises_groups_and_names_the_real_mrenclave(tmp_path, capsys):
    layout = hand_made_layout(tmp_path)
    gramine_command._print_measured(
        layout, "ab" * 32, "from gramine-sgx-sigstruct-view", verbose=False, output=tmp_path
    )
    out = capsys.readouterr().out
    assert "measured inputs of the keybroker enclave (Gramine)" in out
    assert "python3 -m enclaverec.roles.keybroker --config /enclaverec/measured.toml" in out
    assert "enclave 1G, max threads 32" in out
    assert "ISVPRODID 4, ISVSVN 0" in out
    assert "cbor2 6.3.0" in out and "3.0 MiB" in out
    assert "1 Gramine entries without a hash here" in out
    assert "ab" * 32 in out
    assert "real MRENCLAVE: from gramine-sgx-sigstruct-view" in out
    assert "22" * 32 not in out  # file hashes only with --verbose


def test_measure_verbose_lists_every_file(tmp_path, capsys):
    layout = hand_made_layout(tmp_path)
    gramine_command._print_measured(layout, None, "x", verbose=True, output=None)
    out = capsys.readouterr().out
    assert f"{'22' * 32}       3145728  /opt/venv/lib/python3.11/site-packages/cbor2/x.py" in out
    assert f"(hashed by gramine-sgx-sign)             -  {tmp_path}/gramine/libsysdb.so" in out
    assert "the canonical copy `gramine manifest` writes" in out
    assert "--config adds" not in out


# --- the whole command on the real installation -------------------------------------------


@pytest.mark.slow
def test_manifest_writes_a_deterministic_manifest_and_the_canonical_config(
    run_cli, config_file, tmp_path
):
    output = tmp_path / "deploy"
    argv = (
        "gramine",
        "manifest",
        "--role",
        "aggregator",
        "--config",
        config_file,
        "--output",
        output,
    )
    code, out, err = run_cli(*argv)
    assert code == 0, err
    manifest = (output / "aggregator.manifest.toml").read_bytes()
    assert f"wrote {output}/aggregator.manifest.toml" in out
    assert "gramine-sgx-sign --manifest aggregator.manifest --output aggregator.manifest.sgx" in out
    assert run_cli(*argv)[0] == 0
    assert (output / "aggregator.manifest.toml").read_bytes() == manifest

    config_copy = (output / "aggregator.measured.toml").read_bytes()
    expected_hash = measured_inputs("aggregator", CONFIG).config_sha256
    assert hashlib.sha256(config_copy).hexdigest() == expected_hash
    document = tomllib.loads(manifest.decode())
    trusted = {
        entry["uri"]: entry["sha256"]
        for entry in document["sgx"]["trusted_files"]
        if isinstance(entry, dict)
    }
    assert trusted[f"file:{output}/aggregator.measured.toml"] == expected_hash
    assert "NOT FOR PRODUCTION" not in manifest.decode() and "WARNING" not in out
    assert "ENCLAVEREC_NOT_FOR_PRODUCTION" not in document["loader"]["env"]
    # The trusted closure, each real file once: no TensorFlow, Keras, scikit-learn, scipy,
    # matplotlib, rich or pygments in the aggregator's enclave.
    assert "trusted closure of the aggregator role: " in out
    forbidden = ("tensorflow", "keras", "sklearn", "scipy", "matplotlib", "rich", "pygments")
    assert not [u for u in trusted if any(f"/site-packages/{name}/" in u for name in forbidden)]
    sealed = output / "aggregator-sealed"
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o700
    assert document["sgx"]["allowed_files"] == [f"file:{sealed}/", "file:/etc/hosts"]
    assert not (output / "data").exists()  # the aggregator reads no data set
    assert run_cli("gramine", "check", output / "aggregator.manifest.toml")[0] == 0


@pytest.mark.slow
def test_measure_json_shows_what_the_manifest_fixes(run_cli, config_file, tmp_path):
    output = tmp_path / "deploy"
    assert (
        run_cli(
            "gramine",
            "manifest",
            "--role",
            "aggregator",
            "--config",
            config_file,
            "--output",
            output,
        )[0]
        == 0
    )
    document = tomllib.loads((output / "aggregator.manifest.toml").read_text())
    code, out, err = run_cli(
        "gramine",
        "measure",
        "--role",
        "aggregator",
        "--config",
        config_file,
        "--output",
        output,
        "--json",
    )
    assert code == 0, err
    measured = json.loads(out)
    assert (
        measured["simulated_mrenclave"] == measured_inputs("aggregator", CONFIG).mrenclave().hex()
    )
    assert (
        "gramine-sgx-sigstruct-view --output-format toml aggregator.sig"
        in measured["real_mrenclave"]
    )
    assert measured["argv"] == document["loader"]["argv"]
    assert measured["env"] == document["loader"]["env"]
    assert measured["sizes"]["enclave_size"] == document["sgx"]["enclave_size"]
    assert measured["mounts"] == document["fs"]["mounts"]
    manifest_files = [
        entry if isinstance(entry, str) else entry["uri"]
        for entry in document["sgx"]["trusted_files"]
    ]
    assert ["file:" + item["path"] for item in measured["trusted_files"]] == manifest_files
    assert sum(group["files"] for group in measured["groups"]) == len(manifest_files)
    assert (
        measured["gramine"]["installed_here"]
        is Path("/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so").is_file()
    )


@pytest.mark.slow
def test_a_simulated_configuration_renders_a_manifest_not_for_production(run_cli, tmp_path):
    config = tmp_path / "federation.toml"
    config.write_bytes(SIMULATED_CONFIG)
    output = tmp_path / "deploy"
    code, out, err = run_cli(
        "gramine", "manifest", "--role", "aggregator", "--config", config, "--output", output
    )
    assert code == 0, err
    assert "NOT FOR PRODUCTION" in out
    manifest = (output / "aggregator.manifest.toml").read_text()
    assert "NOT FOR PRODUCTION" in manifest.split("\n\n", 1)[0]  # the header comment
    document = tomllib.loads(manifest)
    assert "NOT FOR PRODUCTION" in document["loader"]["env"]["ENCLAVEREC_NOT_FOR_PRODUCTION"]
    code, out, err = run_cli("gramine", "check", output / "aggregator.manifest.toml")
    assert code == 3
    assert "ENCLAVEREC_NOT_FOR_PRODUCTION" in err and "NOT FOR PRODUCTION" in err
