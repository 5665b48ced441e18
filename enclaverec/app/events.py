"""How a running job tells its caller what it does: one-line notes and a training
observer, so the library never prints and the CLI decides how things look."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from enclaverec.training import TrainingObserver


class JobEvents(Protocol):
    """What a job reports while it runs (the CLI draws it; tests may record it)."""

    def note(self, text: str) -> None:
        """One line for the operator (a choice made, a warning, a round's scores)."""
        ...

    def section(self, title: str) -> None:
        """A new part of a longer job begins (a mode of the demo, a part of a benchmark)."""
        ...

    def training(self) -> AbstractContextManager[TrainingObserver]:
        """An observer for one training loop, open while the loop runs."""
        ...


class QuietEvents:
    """Reports nothing: for callers that only want the result."""

    def note(self, text: str) -> None:
        del text

    def section(self, title: str) -> None:
        del title

    @contextmanager
    def training(self) -> Iterator[TrainingObserver]:
        yield TrainingObserver()


@contextmanager
def quiet_loggers(names: Sequence[str]) -> Iterator[None]:
    """Keep the info lines of these loggers (per connection, per round) out of a
    benchmark's output while it runs; warnings (the SIMULATED notices) still show, and
    ``--log-level debug`` shows everything."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
