"""The CLI's enclave-role commands (``federated aggregator``, ``federated party``,
``distributed keybroker``): each takes its flags from the role's entry module and replaces
this process with the entry (``python3 -B -c BOOTSTRAP ENTRY``, tee/bytecode.py), so the
role runs its closure only, ``enclaverec`` from sources, never the CLI's own modules."""

from __future__ import annotations

import argparse
from types import ModuleType

from enclaverec.cli.registry import add_command
from enclaverec.roles.runner import forwarded_argv
from enclaverec.tee.bytecode import exec_source_only


def add_role_command(
    subparsers: argparse._SubParsersAction, name: str, entry: ModuleType, *, help: str
) -> argparse.ArgumentParser:
    def launch(args: argparse.Namespace) -> int:
        exec_source_only(entry.__name__, forwarded_argv(entry.add_arguments, args))
        return 1  # not reached: exec replaced this process

    parser = add_command(subparsers, name, help=help, handler=launch)
    entry.add_arguments(parser)
    return parser
