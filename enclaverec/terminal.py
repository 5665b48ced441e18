"""The one place rich consoles are made: measured on a terminal, never wrapping elsewhere.

rich assumes 80 columns when its stream is not a terminal, and wraps there: a fingerprint
printed to a pipe landed on its own line (`keys new | grep fingerprint` found nothing after
the colon), hex digests were split in logs, progress columns were cut. So the terminal is
measured only when there is one; a pipe or a log file gets whole lines.

rich is imported inside the function: the enclave roles' modules never import it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

UNWRAPPED_WIDTH = 10_000
"""The width a console assumes off a terminal: plain lines are never wrapped (they are
printed with soft wrap), and tables, which only grow to fit their cells, stay as wide as
their content."""


def make_console(*, stderr: bool) -> Console:
    """A console on standard error or standard output (looked up at each write, so tests
    that swap ``sys.stderr`` see the output)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if _is_terminal(stream):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=UNWRAPPED_WIDTH, soft_wrap=True)


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
