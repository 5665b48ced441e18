"""Strict reading of TOML tables for configuration files: unknown keys, missing keys and
wrong types are ``ConfigError``s, so a typo can never silently weaken a measured setting.

Shared by the federated and distributed configurations (one reader for both schemes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from enclaverec.errors import ConfigError


def table(data: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> dict:
    """The sub-table ``[key]`` of ``data`` (``{}`` when absent and not required)."""
    value = data.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}: missing table [{key}]")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


def check_keys(table: Mapping[str, Any], known: set[str], where: str) -> None:
    """Refuse any key of ``table`` that is not in ``known``."""
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


def get(
    table: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    where: str,
    default: Any = ...,
) -> Any:
    """``table[key]`` checked to be of ``kind``; ``default`` when absent (required when no
    default is given)."""
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: missing key {key}")
        return default
    value = table[key]
    # bool is an int in Python: never accept true for a number.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"{where}: {key} has the wrong type")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} has the wrong type")
    return value
