"""The audit log keeps its file open: every line is in the file as soon as ``write``
returns (another process reads it, e.g. ``bench scale`` following the rounds), and a
second log on the same file (a restarted role in the same process) appends after it."""

from __future__ import annotations

import gc
import json

from enclaverec.audit import AuditLog


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_line_is_in_the_file_when_write_returns(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.write("started", port=1)
    assert [e["event"] for e in lines(path)] == ["started"]
    log.write("update", party_id="party-0", round=1)
    assert lines(path)[-1]["party_id"] == "party-0"
    again = AuditLog(path)  # e.g. the role restarted in this process
    again.write("resumed", completed_round=1)
    log.write("refused", party_id="party-1")
    assert [e["event"] for e in lines(path)] == ["started", "update", "resumed", "refused"]
    assert again.events() == lines(path)


def test_a_dropped_log_closes_its_file(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    log.write("started")
    handle = log._handle
    assert handle is not None and not handle.closed
    del log
    gc.collect()
    assert handle.closed
