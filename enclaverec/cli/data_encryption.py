"""``enclaverec data encrypt | decrypt (chunked AES-256-GCM data sets).``"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this module's subcommands to the group's subparsers."""
