"""What every role entry shares: its command line, plain logging, and errors mapped to exit
codes (2 usage/config, 3 verification refused, 4 integrity) the way the CLI maps them.

No rich here: a role's process prints plain lines (the CLI's console is host-side).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from enclaverec.errors import ConfigError, EnclaveRecError, PathError, VerificationError
from enclaverec.tee.bytecode import require_source_only

log = logging.getLogger("enclaverec")

LOG_LEVELS = ("debug", "info", "warning", "error")

LOG_FORMAT = "%(levelname)-8s %(name)s: %(message)s"
"""Whole log lines (level column, then ``logger: message``): the roles' format, and the
CLI's off a terminal."""

ArgumentAdder = Callable[[argparse.ArgumentParser], None]


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="logging verbosity (default: info); debug also prints tracebacks",
    )


def role_parser(name: str, add_arguments: ArgumentAdder) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"enclaverec-{name}", allow_abbrev=False)
    add_arguments(parser)
    add_log_level(parser)
    return parser


def forwarded_argv(add_arguments: ArgumentAdder, args: argparse.Namespace) -> list[str]:
    """The role's own flags back as argv, from a namespace the CLI parsed with the same
    ``add_arguments`` (so ``enclaverec federated aggregator ...`` can hand them over)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    add_log_level(parser)
    argv: list[str] = []
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if value is not None and action.option_strings:
            argv += [action.option_strings[0], str(value)]
    return argv


def integer(name: str, value: str, *, minimum: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f"--{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"--{name} must be at least {minimum}, got {number}")
    return number


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format=LOG_FORMAT,
        stream=sys.stderr,
        force=True,
    )
    if level != "debug":
        logging.getLogger("grpc").setLevel(logging.WARNING)


def run(
    name: str,
    add_arguments: ArgumentAdder,
    handler: Callable[[argparse.Namespace], Any],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv``, check that the process reads no byte-code caches, run ``handler``
    and map its errors to exit codes (one line on stderr, ``enclaverec: ...``)."""
    args = role_parser(name, add_arguments).parse_args(argv)
    configure_logging(args.log_level)
    try:
        require_source_only()
        return int(handler(args) or 0)
    except VerificationError as exc:
        print(f"enclaverec: refused ({exc.check}): {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except EnclaveRecError as exc:
        print(f"enclaverec: error: {exc}", file=sys.stderr, flush=True)
        if args.log_level == "debug":
            log.exception("traceback")
        return exc.exit_code
    except OSError as exc:
        if not PathError.is_path_error(exc):
            return _internal_error(exc, args.log_level)
        # A path problem nothing named itself: the same one line as the CLI prints.
        error = PathError.from_os_error(exc)
        print(f"enclaverec: error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    except KeyboardInterrupt:
        print("enclaverec: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 1
        return _internal_error(exc, args.log_level)


def _internal_error(exc: BaseException, log_level: str) -> int:
    print(
        f"enclaverec: internal error: {type(exc).__name__}: {exc} "
        "(run with --log-level debug for the traceback)",
        file=sys.stderr,
        flush=True,
    )
    if log_level == "debug":
        log.exception("traceback")
    return 1
