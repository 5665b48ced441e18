"""How subcommands register themselves: every module in ``enclaverec.cli.commands``
exposes ``register(subparsers)`` and adds its parsers with :func:`add_command`.

Command modules must stay cheap to import (no TensorFlow at module level): the parser is
built for every invocation, including ``enclaverec --help``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from enclaverec.cli import commands as _commands_pkg

Handler = Callable[[argparse.Namespace], Any]

LOG_LEVELS = ("debug", "info", "warning", "error")


def _common_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parent.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="logging verbosity (default: info); debug also prints tracebacks",
    )
    return parent


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    *,
    help: str,
    handler: Handler | None = None,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Add one (sub)command with the options every command shares.

    Give ``handler`` for a leaf command; leave it out for a group and add the group's own
    subparsers with ``parser.add_subparsers(...)`` and further ``add_command`` calls.
    """
    parser = subparsers.add_parser(
        name,
        help=help,
        description=description or help,
        parents=[_common_options()],
        # No prefix matching: `--passphrase` must not silently mean `--passphrase-file`.
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The deepest parser's default wins: main reports stray arguments with its usage.
    parser.set_defaults(_command_parser=parser)
    if handler is not None:
        parser.set_defaults(handler=handler)
    else:
        parser.set_defaults(handler=None, _group_parser=parser)
    return parser


def register_all(subparsers: argparse._SubParsersAction) -> None:
    """Import every command module, in name order, and let it register its parsers."""
    for info in sorted(pkgutil.iter_modules(_commands_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_commands_pkg.__name__}.{info.name}")
        module.register(subparsers)
