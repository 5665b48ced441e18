"""The output-folder rule: new or empty, or --overwrite replacing only the command's own
entries; files, unwritable folders and folders the demo did not make are refused."""

from __future__ import annotations

import os

import pytest

from enclaverec.app.outputs import (
    DEMO_MARK,
    check_demo_folder,
    check_export_folder,
    check_output_folder,
    claim_demo_folder,
    prepare_output_folder,
)
from enclaverec.errors import OutputFolderError, UsageError


def test_a_new_or_empty_folder_is_accepted(tmp_path):
    assert check_output_folder(tmp_path / "new" / "deeper", overwrite=False)
    (tmp_path / "empty").mkdir()
    assert check_output_folder(tmp_path / "empty", overwrite=False) == tmp_path / "empty"


def test_a_non_empty_folder_needs_overwrite(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(OutputFolderError, match="non-empty folder .*--overwrite"):
        check_output_folder(tmp_path, overwrite=False)
    assert check_output_folder(tmp_path, overwrite=True) == tmp_path
    assert issubclass(OutputFolderError, UsageError)  # exit 2


def test_a_file_is_not_a_folder(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(OutputFolderError, match="is a file"):
        check_output_folder(target, overwrite=True)
    with pytest.raises(OutputFolderError, match="is not a folder"):
        check_output_folder(target / "below", overwrite=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_parent_is_refused_before_any_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(OutputFolderError, match="not writable"):
            check_output_folder(locked / "out", overwrite=False)
        with pytest.raises(OutputFolderError, match="not writable"):
            check_export_folder(locked / "model")
    finally:
        locked.chmod(0o700)


def test_overwrite_removes_only_the_commands_own_entries(tmp_path):
    (tmp_path / "metrics.json").write_text("old")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "party-0.log").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    prepare_output_folder(tmp_path, overwrite=True, owned=("metrics.json", "logs", "curves.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_an_export_goes_to_a_new_or_empty_folder(tmp_path):
    assert check_export_folder(tmp_path / "model") == tmp_path / "model"
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "saved_model.pb").write_bytes(b"x")
    with pytest.raises(OutputFolderError, match="refusing to export into the non-empty"):
        check_export_folder(tmp_path / "model")


def test_the_demo_replaces_only_what_it_marked(tmp_path):
    folder = claim_demo_folder(tmp_path / "centralized")
    assert (folder / DEMO_MARK).is_file()
    (folder / "metrics.json").write_text("previous run")
    check_demo_folder(folder)  # its own: accepted
    claim_demo_folder(folder)
    assert sorted(p.name for p in folder.iterdir()) == [DEMO_MARK]


def test_the_demo_refuses_a_folder_it_did_not_make(tmp_path):
    foreign = tmp_path / "federated-simulated"
    (foreign / "federation").mkdir(parents=True)
    (foreign / "federation" / "federation.toml").write_text("# mine")
    with pytest.raises(OutputFolderError, match="did not make") as excinfo:
        claim_demo_folder(foreign)
    assert str(foreign) in str(excinfo.value)
    assert (foreign / "federation" / "federation.toml").read_text() == "# mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputFolderError, match="not the demo's folder"):
        check_demo_folder(tmp_path / "file")
