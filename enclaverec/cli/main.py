"""Entry point of the ``enclaverec`` program: parse, dispatch, map errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from enclaverec import __version__
from enclaverec.cli.output import configure_logging, stderr_console
from enclaverec.cli.registry import register_all
from enclaverec.errors import EnclaveRecError, PathError, VerificationError

log = logging.getLogger("enclaverec")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enclaverec",
        allow_abbrev=False,
        description=(
            "Confidential training of DLRM recommendation models in SGX enclaves: "
            "federated learning with an attested aggregator and secure distributed training."
        ),
    )
    parser.add_argument("--version", action="version", version=f"enclaverec {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_all(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        # Reported by the command's own parser, so the usage shown is the command's
        # (`train --foo` shows train's usage, not the list of commands).
        getattr(args, "_command_parser", parser).error(
            f"unrecognized arguments: {' '.join(extras)}"
        )
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if getattr(args, "handler", None) is None:
        # A command group called without its subcommand.
        args._group_parser.print_help(sys.stderr)
        return 2
    configure_logging(args.log_level)
    try:
        result = args.handler(args)
    except VerificationError as exc:
        stderr_console().print(
            f"enclaverec: refused ({exc.check}): {exc}", markup=False, soft_wrap=True
        )
        return exc.exit_code
    except EnclaveRecError as exc:
        stderr_console().print(f"enclaverec: error: {exc}", markup=False, soft_wrap=True)
        if args.log_level == "debug":
            log.exception("traceback")
        return exc.exit_code
    except BrokenPipeError:
        # The reader of our output went away (`enclaverec ... | head`): not an error of
        # ours. Point stdout at devnull so the interpreter's final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        if not PathError.is_path_error(exc):
            return _internal_error(exc, args.log_level)
        # A path problem a command did not name itself: the same one line as everywhere.
        error = PathError.from_os_error(exc)
        stderr_console().print(f"enclaverec: error: {error}", markup=False, soft_wrap=True)
        if args.log_level == "debug":
            log.exception("traceback")
        return error.exit_code
    except KeyboardInterrupt:
        stderr_console().print("enclaverec: interrupted", markup=False, soft_wrap=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 1
        return _internal_error(exc, args.log_level)
    return int(result or 0)


def _internal_error(exc: BaseException, log_level: str) -> int:
    stderr_console().print(
        f"enclaverec: internal error: {type(exc).__name__}: {exc} "
        "(run with --log-level debug for the traceback)",
        markup=False,
        soft_wrap=True,
    )
    if log_level == "debug":
        log.exception("traceback")
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
