"""Configuration files: TOML loading with clear errors, and merging flags over a file.

Precedence for ordinary commands: explicit flag > ``--config`` file > the command's
default. Enclave roles do not use :func:`merge_options` for measured fields: their
measured configuration is the file alone (DESIGN.md §2).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from enclaverec.errors import ConfigError
from enclaverec.files import read_toml


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing, unreadable or unparsable file is a usage or
    configuration error (exit 2)."""
    return read_toml(Path(path))[0]


def merge_options(
    args: argparse.Namespace,
    file_section: Mapping[str, Any],
    defaults: Mapping[str, Any],
    *,
    section_name: str = "",
) -> dict[str, Any]:
    """Resolve each option in ``defaults``: a flag given on the command line wins, then
    the file's value, then the default.

    Flags must be declared with ``default=None`` so that "not given" can be told apart
    from "given with the default value". Keys are the argparse ``dest`` names; in the file
    they may use dashes or underscores. An unknown key in the file is an error, so a typo
    does not silently fall back to a default.
    """
    normalised = {str(key).replace("-", "_"): value for key, value in file_section.items()}
    unknown = sorted(set(normalised) - set(defaults))
    if unknown:
        where = f"[{section_name}] " if section_name else ""
        raise ConfigError(
            f"unknown configuration key(s) {where}{', '.join(unknown)}; "
            f"known: {', '.join(sorted(defaults))}"
        )
    resolved: dict[str, Any] = {}
    for key, default in defaults.items():
        flag_value = getattr(args, key, None)
        if flag_value is not None:
            resolved[key] = flag_value
        elif key in normalised:
            resolved[key] = normalised[key]
        else:
            resolved[key] = default
    return resolved
