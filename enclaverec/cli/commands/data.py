"""``enclaverec data``: prepare, partition, encrypt, decrypt and inspect data sets.

The group is assembled from two modules so that plaintext data handling and encryption
stay apart: ``enclaverec.cli.data_sets`` and ``enclaverec.cli.data_encryption``.
"""

from __future__ import annotations

import argparse

from enclaverec.cli import data_encryption, data_sets
from enclaverec.cli.registry import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    group = add_command(subparsers, "data", help="prepare, partition, encrypt and inspect data")
    sub = group.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data_sets.register(sub)
    data_encryption.register(sub)
