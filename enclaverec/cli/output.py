"""Console output shared by all commands: logging to stderr, progress bars, tables.

Results and tables go to stdout; logs, warnings and progress go to stderr, so that
``--json`` output can be piped.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@lru_cache(maxsize=1)
def stderr_console() -> Console:
    return Console(stderr=True)


@lru_cache(maxsize=1)
def stdout_console() -> Console:
    return Console()


def configure_logging(level: str) -> None:
    handler = RichHandler(
        console=stderr_console(), show_path=False, show_time=False, rich_tracebacks=False
    )
    logging.basicConfig(
        level=level.upper(), format="%(name)s: %(message)s", handlers=[handler], force=True
    )
    # Third-party chatter stays at warning unless debugging.
    if level != "debug":
        for noisy in ("matplotlib", "PIL", "absl", "h5py", "grpc"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def progress(transient: bool = False) -> Progress:
    """A progress bar on stderr. Tasks must pass ``status=""`` (a free text shown at the
    end of the line, e.g. the running loss) to ``add_task``."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=stderr_console(),
        transient=transient,
    )
