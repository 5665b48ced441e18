"""The TEE kinds (``--tee``), in one table: each kind's help text and where it may run.

Commands take their ``--tee`` choices, help and refusals from :data:`TEE_KINDS`; adding a
backend is one entry here (and its evidence backend in ``tee/``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from enclaverec.errors import UsageError


class TEEKind(enum.Enum):
    """Where the trusted roles run (DESIGN.md §4 ``tee``, as the ``--tee`` flag)."""

    NONE = "none"
    SIMULATED = "simulated"
    GRAMINE = "gramine"


@dataclass(frozen=True)
class TEEKindInfo:
    """One row of the table. ``one_machine``: every role can run on this machine, so
    ``simulate`` may use it; ``attests``: its roles produce evidence that peers verify."""

    kind: TEEKind
    help: str
    one_machine: bool
    attests: bool


TEE_KINDS: tuple[TEEKindInfo, ...] = (
    TEEKindInfo(
        TEEKind.SIMULATED,
        "real cryptography under a local SIMULATED trust root (laptops, CI)",
        one_machine=True,
        attests=True,
    ),
    TEEKindInfo(
        TEEKind.NONE,
        "no TEE: a plaintext measurement baseline, loopback only",
        one_machine=True,
        attests=False,
    ),
    TEEKindInfo(
        TEEKind.GRAMINE,
        "Intel SGX through Gramine (each role on its SGX server)",
        one_machine=False,
        attests=True,
    ),
)

# Which commands accept which kinds: ``simulate`` runs every role here.
_COMMAND_FILTERS = {"simulate": lambda info: info.one_machine}


def tee_info(kind: TEEKind) -> TEEKindInfo:
    for info in TEE_KINDS:
        if info.kind is kind:
            return info
    raise UsageError(f"unknown TEE kind {kind!r}")  # unreachable while the table is whole


def tee_choices(command: str | None = None) -> tuple[str, ...]:
    """The ``--tee`` values a command accepts, in the table's order (the default first)."""
    accepts = _COMMAND_FILTERS.get(command or "", lambda info: True)
    return tuple(info.kind.value for info in TEE_KINDS if accepts(info))


def tee_help(command: str | None = None) -> str:
    """``--tee`` help text: every accepted kind with its one-line description."""
    names = tee_choices(command)
    rows = "; ".join(
        f"{info.kind.value}: {info.help}" for info in TEE_KINDS if info.kind.value in names
    )
    return f"{rows} (default: {names[0]})"


def parse_tee(value: str | TEEKind, command: str | None = None) -> TEEKind:
    """A ``--tee`` value that ``command`` accepts, or a ``UsageError`` naming the valid ones."""
    kind = value if isinstance(value, TEEKind) else None
    if kind is None:
        try:
            kind = TEEKind(value)
        except ValueError:
            kind = None
    if kind is None or kind.value not in tee_choices(command):
        raise UsageError(
            f"--tee must be one of {', '.join(tee_choices(command))}, got "
            f"{getattr(value, 'value', value)!r}"
        )
    return kind


def check_tee_for(command: str, kind: TEEKind) -> None:
    """Refuse a kind ``command`` cannot run (``simulate`` with ``gramine``)."""
    if kind.value not in tee_choices(command):
        raise UsageError(
            f"{command} runs every role on this machine: --tee " + " or ".join(tee_choices(command))
        )
