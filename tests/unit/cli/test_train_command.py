"""``enclaverec train`` options and its refusals (no training: these stop before TensorFlow)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from enclaverec.app.data import default_output
from enclaverec.cli.commands.train import resolve_job
from enclaverec.cli.main import build_parser
from enclaverec.data.criteo import OnBadLine
from enclaverec.dlrm.config import OptimizerKind, Preset
from enclaverec.errors import ConfigError


def error_line(err: str) -> str:
    """The error message, after checking that stderr holds exactly that one line."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("enclaverec: error: "), err
    return lines[0]


def parse(*argv: str):
    return build_parser().parse_args(["train", *argv])


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--epochs", "ten", "--epochs must be an integer, got 'ten'"),
        ("--epochs", "0", "--epochs must be at least 1, got 0"),
        ("--batch-size", "1.5", "--batch-size must be an integer"),
        ("--lr", "fast", "--lr must be a number, got 'fast'"),
        ("--lr", "-0.1", "--lr must be a positive number"),
        ("--lr", "nan", "--lr must be a positive number"),
        ("--seed", "-1", "--seed must be at least 0"),
        ("--table-size", "1", "--table-size must be at least 2"),
        ("--model", "huge", "--model must be one of small, kaggle, got 'huge'"),
        ("--optimizer", "adam", "--optimizer must be one of sgd, adagrad"),
        ("--on-bad-line", "ignore", "--on-bad-line must be one of fail, skip"),
    ],
)
def test_a_bad_flag_value_is_one_line_and_exit_2(run_cli, flag, value, message):
    code, out, err = run_cli("train", "--dataset", "synthetic", flag, value)
    assert code == 2
    assert message in error_line(err)


def test_an_unknown_data_set_is_named_with_the_valid_ones(run_cli):
    code, _, err = run_cli("train", "--dataset", "imagenet")
    assert code == 2
    line = error_line(err)
    assert "unknown data set 'imagenet'" in line and "synthetic, movielens-100k" in line


def test_a_missing_data_file_is_exit_2(run_cli, tmp_path):
    code, _, err = run_cli("train", "--data", tmp_path / "absent.tsv")
    assert code == 2
    assert f"data file not found: {tmp_path / 'absent.tsv'}" in error_line(err)


def test_a_missing_recbole_names_the_install_command(run_cli, monkeypatch):
    real = importlib.metadata.distribution

    def without_recbole(name):
        if name == "recbole":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", without_recbole)
    code, _, err = run_cli("train", "--dataset", "movielens-100k")
    assert code == 2
    assert "pip install --no-deps recbole==1.2.1" in error_line(err)


@pytest.mark.parametrize("argv", [(), ("--dataset", "synthetic", "--data", "x.tsv")])
def test_exactly_one_data_selection(run_cli, argv):
    code, _, err = run_cli("train", *argv)
    assert code == 2
    assert "exactly one of --dataset" in error_line(err)


def test_flags_override_the_file_which_overrides_defaults(tmp_path):
    config = tmp_path / "train.toml"
    config.write_text(
        '[train]\ndataset = "synthetic"\nepochs = 4\nbatch-size = 64\nlr = 0.02\n'
        'optimizer = "sgd"\noutput = "runs/x"\n'
    )
    job = resolve_job(parse("--config", str(config), "--epochs", "7", "--model", "kaggle"))
    assert job.data.selection.dataset == "synthetic"
    assert job.epochs == 7  # the flag wins
    assert job.batch_size == 64 and job.learning_rate == 0.02  # from the file
    assert job.optimizer is OptimizerKind.SGD and job.preset is Preset.KAGGLE
    assert job.data.seed == 0 and job.data.on_bad_line is OnBadLine.FAIL  # defaults
    assert job.overwrite is False
    assert str(job.output) == "runs/x"


def test_without_flags_or_file_the_preset_decides(tmp_path):
    job = resolve_job(parse("--dataset", "movielens-100k"))
    assert (job.preset, job.epochs, job.batch_size, job.learning_rate, job.optimizer) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_a_data_flag_replaces_the_files_selection(tmp_path):
    config = tmp_path / "train.toml"
    config.write_text('[train]\ndata = ["a.tsv", "b.tsv"]\n')
    assert resolve_job(parse("--config", str(config))).data.selection.paths == (
        Path("a.tsv"),
        Path("b.tsv"),
    )
    job = resolve_job(parse("--config", str(config), "--dataset", "synthetic"))
    assert job.data.selection.dataset == "synthetic" and job.data.selection.paths == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepoch = 3\n", "unknown configuration key"),
        ('dataset = "synthetic"\n', r"under a \[train\] table"),
        (
            '[train]\ndataset = "synthetic"\nepochs = "three"\n',
            "--epochs must be an integer",
        ),
        ('[train]\ndataset = "synthetic"\nlr = true\n', "--lr must be a number"),
        ("[train]\ndata = 3\n", "--data must be a list of paths"),
        ("[train\n", "invalid TOML"),
    ],
)
def test_a_bad_configuration_file_is_refused(tmp_path, text, message):
    config = tmp_path / "train.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        resolve_job(parse("--config", str(config)))


def test_a_missing_configuration_file_is_exit_2(run_cli, tmp_path):
    code, _, err = run_cli("train", "--config", tmp_path / "absent.toml")
    assert code == 2
    assert "configuration file not found" in error_line(err)


def test_default_output_folder_is_safe_for_any_data_set_name():
    assert str(default_output("movielens-100k", "train")) == "runs/train-movielens-100k"
    assert (
        str(default_output("criteo:day_0.gz+day_1.gz", "train"))
        == "runs/train-criteo-day_0.gz-day_1.gz"
    )


def test_table_size_is_refused_for_a_builtin_data_set(run_cli):
    code, _, err = run_cli("train", "--dataset", "synthetic", "--table-size", "1000")
    assert code == 2
    assert "--table-size applies to --data" in error_line(err)


def test_a_misspelled_config_table_is_refused(run_cli, tmp_path):
    config = tmp_path / "train.toml"
    config.write_text("[trian]\nepochs = 0\n")
    code, _, err = run_cli("train", "--dataset", "movielens-100k", "--config", config)
    assert code == 2
    assert "unknown table(s) [trian]" in err


def test_an_unreadable_config_is_a_usage_error(run_cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe")
    code, _, err = run_cli("train", "--dataset", "movielens-100k", "--config", bad)
    assert code == 2 and "invalid TOML" in err
    code, _, err = run_cli("train", "--dataset", "movielens-100k", "--config", tmp_path)
    assert code == 2 and "configuration file is a folder, not a file" in err


# --- outputs are checked before the first step (issue 11, items 2 and 3) ---------------------


def test_a_non_empty_export_folder_stops_train_before_training(run_cli, tmp_path):
    export = tmp_path / "model"
    export.mkdir()
    (export / "saved_model.pb").write_bytes(b"a previous model")
    output = tmp_path / "out"
    code, _, err = run_cli(
        "train", "--dataset", "synthetic", "--output", output, "--export", export
    )
    assert code == 2
    assert f"refusing to export into the non-empty folder {export}" in error_line(err)
    assert not output.exists()  # nothing written, nothing trained
    assert (export / "saved_model.pb").read_bytes() == b"a previous model"


def test_an_output_that_is_a_file_stops_train_before_training(run_cli, tmp_path):
    output = tmp_path / "out"
    output.write_text("not a folder")
    code, _, err = run_cli("train", "--dataset", "synthetic", "--output", output)
    assert code == 2
    assert f"--output {output} is a file" in error_line(err)


def test_a_previous_run_is_kept_unless_overwrite_is_given(run_cli, tmp_path):
    (tmp_path / "metrics.json").write_text('{"previous": true}')
    code, _, err = run_cli("train", "--dataset", "synthetic", "--output", tmp_path)
    assert code == 2
    assert "refusing to write into the non-empty folder" in error_line(err)
    assert "--overwrite" in err
    assert (tmp_path / "metrics.json").read_text() == '{"previous": true}'


def test_overwrite_can_come_from_the_file(tmp_path):
    config = tmp_path / "train.toml"
    config.write_text('[train]\ndataset = "synthetic"\noverwrite = true\n')
    assert resolve_job(parse("--config", str(config))).overwrite is True
    config.write_text('[train]\ndataset = "synthetic"\noverwrite = "yes"\n')
    with pytest.raises(ConfigError, match="--overwrite must be true or false"):
        resolve_job(parse("--config", str(config)))


# --- values that cannot be meant (issue 11, item 7) -----------------------------------------


def test_absurd_epochs_are_refused(run_cli):
    code, _, err = run_cli("train", "--dataset", "synthetic", "--epochs", str(10**20))
    assert code == 2
    assert "--epochs must be between 1 and 1000" in error_line(err)


def test_a_batch_above_the_training_rows_is_refused_before_training(run_cli, tmp_path):
    code, _, err = run_cli(
        "train", "--dataset", "movielens-100k", "--batch-size", "100000000",
        "--output", tmp_path / "out",
    )  # fmt: skip
    assert code == 2
    assert "--batch-size 100,000,000 is larger than the 79,919 training rows" in error_line(err)
    assert not (tmp_path / "out").exists()
