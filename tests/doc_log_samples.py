"""The log samples of ``docs/federated.md`` and patterns that match a real run's lines
(shared by the unit test of their form and the integration test against a real run)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "federated.md"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# What varies between runs: elisions, paths, numbers and hex digests.
VARYING = re.compile(r"\.\.\.|\S*/\S*|[0-9a-f]*\d[0-9a-f]*")


def sample_lines() -> list[tuple[int, str]]:
    """Every line of the document's code blocks that starts with a log level."""
    lines, in_code = [], False
    for number, line in enumerate(DOC.read_text().splitlines(), start=1):
        if line.startswith("```"):
            in_code = not in_code
        elif in_code and line.split(" ", 1)[0] in LEVELS:
            lines.append((number, line))
    return lines


def sample_pattern(message: str) -> re.Pattern[str]:
    """A regex for ``message`` where the varying parts match any run's values."""
    parts, position = [], 0
    for token in VARYING.finditer(message):
        parts.append(re.escape(message[position : token.start()]))
        text = token.group()
        parts.append(".*?" if text == "..." else r"\S+" if "/" in text else r"[0-9a-f.]+")
        position = token.end()
    parts.append(re.escape(message[position:]))
    return re.compile("".join(parts))
