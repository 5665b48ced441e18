"""The TEE kinds table: choices, help and refusals per command come from it."""

from __future__ import annotations

import pytest

from enclaverec.errors import UsageError
from enclaverec.tee.kinds import (
    TEE_KINDS,
    TEEKind,
    check_tee_for,
    parse_tee,
    tee_choices,
    tee_help,
    tee_info,
)


def test_every_kind_has_one_row():
    assert {info.kind for info in TEE_KINDS} == set(TEEKind)
    assert len(TEE_KINDS) == len(TEEKind)
    assert tee_info(TEEKind.NONE).attests is False


def test_simulate_accepts_only_kinds_that_run_on_one_machine():
    assert tee_choices() == ("simulated", "none", "gramine")
    assert tee_choices("simulate") == ("simulated", "none")
    assert "gramine" not in tee_help("simulate") and "SIMULATED" in tee_help("simulate")
    check_tee_for("simulate", TEEKind.NONE)
    with pytest.raises(UsageError, match="--tee simulated or none"):
        check_tee_for("simulate", TEEKind.GRAMINE)


@pytest.mark.parametrize(("value", "command"), [("sgx", None), ("gramine", "simulate")])
def test_parse_refuses_an_unknown_or_unfit_kind(value, command):
    with pytest.raises(UsageError, match="--tee must be one of"):
        parse_tee(value, command)


def test_the_cli_choices_follow_the_table(capsys):
    from enclaverec.cli.main import build_parser

    with pytest.raises(SystemExit) as excinfo:
        build_parser().parse_args(["federated", "simulate", "--tee", "gramine"])
    assert excinfo.value.code == 2
    assert "(choose from 'simulated', 'none')" in capsys.readouterr().err
