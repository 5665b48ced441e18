"""Issue 11 item 15: the log samples of ``docs/federated.md`` are what the code prints.

Each sample line must have the form the logging set-up gives (``cli.output.LOG_FORMAT``:
the level padded to 8, the logger's name, the message), name a logger that is a module
logging under its own name, and carry a message that module's source can produce. The
slow test ``tests/integration/test_federated_log_samples.py`` matches the walk-through's
samples against a real run's logs.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

import pytest
from doc_log_samples import VARYING, sample_lines, sample_pattern

from enclaverec.cli.output import LOG_FORMAT


def test_the_document_has_log_samples():
    assert len(sample_lines()) >= 15


@pytest.mark.parametrize(("number", "line"), sample_lines(), ids=lambda v: str(v)[:40])
def test_each_sample_has_the_real_form_and_logger(number, line):
    match = re.fullmatch(r"([A-Z]+) +(enclaverec(?:\.\w+)+): (.+)", line)
    assert match, f"docs/federated.md:{number} lacks the logger name: {line}"
    level, logger, message = match.groups()
    # The exact prefix the logging set-up writes for this level and logger.
    record = logging.LogRecord(logger, getattr(logging, level), "", 0, message, None, None)
    assert logging.Formatter(LOG_FORMAT).format(record) == line, f"docs/federated.md:{number}"

    spec = importlib.util.find_spec(logger)
    assert spec is not None and spec.origin, f"no module {logger}"
    source = Path(spec.origin).read_text()
    assert "getLogger(__name__)" in source, f"{logger} does not log under its own name"
    # The message's words are that module's (some are values: a party id, a TCB status;
    # the slow test matches whole lines against a real run).
    words = {w for w in re.findall(r"[A-Za-z]{4,}", VARYING.sub(" ", message))}
    found = {w for w in words if w in source}
    assert len(found) * 2 >= len(words), (
        f"docs/federated.md:{number}: {sorted(words - found)} not in {logger}"
    )


def test_sample_patterns_accept_a_real_line_and_refuse_another_logger():
    sample = "INFO     enclaverec.federated.aggregator: round 1/5: validation AUC 0.7062"
    real = "INFO     enclaverec.federated.aggregator: round 1/2: validation AUC 0.6713"
    assert sample_pattern(sample).fullmatch(real)
    assert not sample_pattern(sample).fullmatch(real.replace("aggregator:", "party:"))
