"""Checking option values, from flags and TOML files alike.

Numeric flags are parsed here rather than by argparse so that a bad value, from the
command line or a file, gives one line naming the option and exit code 2.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from enclaverec.errors import ConfigError


def parse_integer(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"--{name} must be an integer, got {value!r}")
    if isinstance(value, str):
        if not re.fullmatch(r"[+-]?\d+", value.strip()):
            raise ConfigError(f"--{name} must be an integer, got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise ConfigError(f"--{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"--{name} must be at least {minimum}, got {value}")
    return value


def parse_positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"--{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--{name} must be a number, got {value!r}") from exc
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"--{name} must be a positive number, got {value!r}")
    return number


def parse_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"--{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def parse_path(name: str, value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value:
        raise ConfigError(f"--{name} must be a path, got {value!r}")
    return Path(value)
