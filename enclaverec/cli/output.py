"""Console output shared by all commands: logging to stderr, progress bars, tables.

Results and tables go to stdout; logs, warnings and progress go to stderr, so that
``--json`` output can be piped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, NoReturn

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from enclaverec.errors import (
    EnclaveRecError,
    IntegrityError,
    MalformedInputError,
    UsageError,
    VerificationError,
)
from enclaverec.roles.runner import LOG_FORMAT  # the roles' own format: one layout
from enclaverec.terminal import make_console
from enclaverec.training import EvalRecord, TrainingObserver


@lru_cache(maxsize=1)
def stderr_console() -> Console:
    return make_console(stderr=True)


@lru_cache(maxsize=1)
def stdout_console() -> Console:
    return make_console(stderr=False)


def configure_logging(level: str) -> None:
    """Logs on stderr: rich's handler on a terminal; elsewhere (a pipe, a log file of
    `simulate`) plain whole lines, since rich's handler pads and wraps to a width."""
    handler: logging.Handler
    if stderr_console().is_terminal:
        handler = RichHandler(
            console=stderr_console(), show_path=False, show_time=False, rich_tracebacks=False
        )
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
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


class _ProgressObserver(TrainingObserver):
    """A progress bar per epoch (with the running loss) and a line per evaluation."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: TaskID | None = None

    def phase_started(self, unit: str, index: int, last: int) -> None:
        self.task = self.bar.add_task(f"{unit} {index}/{last}", total=None, status="")

    def steps_done(self, done: int, total: int, mean_loss: float) -> None:
        if self.task is not None:
            self.bar.update(
                self.task, completed=done, total=total or None, status=f"loss {mean_loss:.4f}"
            )

    def evaluated(self, record: EvalRecord, improved: bool) -> None:
        if self.task is not None:
            self.bar.update(
                self.task,
                status=f"val AUC {record.val_auc:.4f}, log loss {record.val_logloss:.4f}"
                + (" (best)" if improved else ""),
            )


class ConsoleEvents:
    """A job's notes as lines on stderr, its sections as rules, its training as progress
    bars (the :class:`enclaverec.app.events.JobEvents` of every command)."""

    def note(self, text: str) -> None:
        stderr_console().print(text, markup=False)

    def section(self, title: str) -> None:
        console = stderr_console()
        if console.is_terminal:
            console.rule(title)
        else:  # a rule fills the width, which off a terminal is not a screen's
            console.print(f"── {title} ──", markup=False)

    @contextmanager
    def training(self) -> Iterator[TrainingObserver]:
        with progress() as bar:
            yield _ProgressObserver(bar)


# --- JSON outcomes ---------------------------------------------------------------------------


def print_json(document: dict[str, Any]) -> None:
    # Plain print: a JSON document is never wrapped or styled.
    print(json.dumps(document, indent=2))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _family(exc: EnclaveRecError) -> str:
    for family, name in (
        (VerificationError, "verification"),
        (IntegrityError, "integrity"),
        (MalformedInputError, "malformed_input"),
        (UsageError, "usage"),
    ):
        if isinstance(exc, family):
            return name
    return "runtime"


def failure_document(exc: EnclaveRecError) -> dict[str, Any]:
    """A refusal or an error as JSON: ``accepted`` false, the failed check (``None`` when
    it is not a verification), its got and expected, the error family, the message and
    the exit code."""
    verification = isinstance(exc, VerificationError)
    return {
        "accepted": False,
        "failed_check": exc.check if verification else None,
        "got": _jsonable(exc.got) if verification else None,
        "expected": _jsonable(exc.expected) if verification else None,
        "error": _family(exc),
        "message": str(exc),
        "exit_code": exc.exit_code,
    }


class JSONErrorParser(argparse.ArgumentParser):
    """A parser whose usage errors, when ``--json`` is among its arguments, are a JSON
    failure document on stdout (exit 2) instead of the usage text on stderr."""

    _json = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._json = "--json" in (sys.argv[1:] if args is None else list(args))
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        if not self._json:
            super().error(message)
        print_json(failure_document(UsageError(f"{self.prog}: {message}")))
        self.exit(2)
