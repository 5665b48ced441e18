"""The table of strategies: each name with its class, its own typed options (with their
defaults) and one line of help. The plan's ``[strategy]`` section, the CLI's ``--strategy``
choices and help, and the aggregator's strategy all come from here; adding a strategy is
one module plus one entry (docs/federated.md, "Adding a strategy")."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from enclaverec.errors import ConfigError
from enclaverec.federated.strategies.base import Clipping, Strategy
from enclaverec.federated.strategies.fedadagrad import FedAdagrad, FedAdagradOptions
from enclaverec.federated.strategies.fedadam import FedAdam, FedAdamOptions
from enclaverec.federated.strategies.fedavg import FedAvg, FedAvgOptions
from enclaverec.federated.strategies.fedprox import FedProx, FedProxOptions
from enclaverec.federated.strategies.fedyogi import FedYogi, FedYogiOptions
from enclaverec.federated.strategies.krum import Krum, KrumOptions
from enclaverec.federated.strategies.median import Median, MedianOptions
from enclaverec.federated.strategies.trimmed_mean import TrimmedMean, TrimmedMeanOptions
from enclaverec.paramservice.combine import RowNormalisation


@dataclass(frozen=True)
class StrategyEntry:
    """One strategy: ``argument`` names the option that ``NAME:VALUE`` sets."""

    strategy: type[Strategy]
    options: type
    summary: str
    argument: str | None = None

    @property
    def name(self) -> str:
        return self.strategy.name


REGISTRY: Mapping[str, StrategyEntry] = {
    entry.name: entry
    for entry in (
        StrategyEntry(
            FedAvg,
            FedAvgOptions,
            "fedavg:MIN, sample-weighted mean of the updates whose cosine with the others' "
            "sum is >= MIN (default 0; -1 keeps all)",
            "min_agreement",
        ),
        StrategyEntry(
            FedProx, FedProxOptions, "FedAvg + proximal term mu (--proximal-mu)", "proximal_mu"
        ),
        StrategyEntry(FedAdam, FedAdamOptions, "Adam on the server (--server-lr eta)", "eta"),
        StrategyEntry(FedYogi, FedYogiOptions, "Yogi on the server (--server-lr eta)", "eta"),
        StrategyEntry(
            FedAdagrad, FedAdagradOptions, "Adagrad on the server (--server-lr eta)", "eta"
        ),
        StrategyEntry(Median, MedianOptions, "coordinate-wise median (robust)"),
        StrategyEntry(
            TrimmedMean,
            TrimmedMeanOptions,
            "trimmed-mean:BETA, drop BETA of each end per coordinate (robust)",
            "beta",
        ),
        StrategyEntry(
            Krum, KrumOptions, "krum:F, Krum tolerating F liars of >= 2F+3 parties (robust)", "f"
        ),
    )
}
STRATEGIES: tuple[str, ...] = tuple(REGISTRY)
DEFAULT_STRATEGY = "fedavg"
DEFAULT_CLIPPING = Clipping.MEDIAN


def strategy_help() -> str:
    """One line per strategy, for ``--strategy``'s help."""
    return "; ".join(f"{name}: {entry.summary}" for name, entry in REGISTRY.items())


def _entry(name: str) -> StrategyEntry:
    if name not in REGISTRY:
        raise ConfigError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return REGISTRY[name]


def _coerce(options: type, key: str, value: Any, where: str) -> Any:
    """A value for an option field, typed as the field's default (an int is a float)."""
    fields = {f.name: f for f in dataclasses.fields(options)}
    if key not in fields:
        known = ", ".join(fields) or "none"
        raise ConfigError(f"{where}: unknown option {key!r}; known: {known}")
    default = fields[key].default
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be a number")
    if isinstance(default, int):
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError as exc:
                raise ConfigError(f"{where}: {key} must be an integer, got {value!r}") from exc
        if not isinstance(value, int):
            raise ConfigError(f"{where}: {key} must be an integer")
        return value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}") from exc
    if not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key} must be a number")
    return float(value)


@dataclass(frozen=True)
class StrategyConfig:
    """The plan's strategy: the name, that strategy's own typed options (its defaults when
    not given), norm clipping and the row normalisation of table means."""

    name: str = DEFAULT_STRATEGY
    options: Any = None
    clipping: Clipping = DEFAULT_CLIPPING
    row_normalisation: RowNormalisation = RowNormalisation.ALL_CONTRIBUTORS
    entry: StrategyEntry = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        entry = _entry(self.name)
        object.__setattr__(self, "entry", entry)
        if self.options is None:
            object.__setattr__(self, "options", entry.options())
        elif type(self.options) is not entry.options:
            raise ConfigError(
                f"{self.name} takes {entry.options.__name__}, got {type(self.options).__name__}"
            )

    @classmethod
    def parse(
        cls,
        spec: str,
        *,
        clipping: Clipping = DEFAULT_CLIPPING,
        where: str = "--strategy",
        **options: Any,
    ) -> StrategyConfig:
        """``NAME`` or ``NAME:VALUE`` (``trimmed-mean:0.2``, ``krum:1``), plus options by
        name; options given as None are left at their defaults. An option the strategy
        does not have is refused (``--proximal-mu`` without fedprox, for example)."""
        name, colon, argument = spec.partition(":")
        entry = _entry(name)
        given = {key: value for key, value in options.items() if value is not None}
        if colon:
            if entry.argument is None:
                raise ConfigError(f"{where}: {name} takes no argument, got {spec!r}")
            if entry.argument in given:
                raise ConfigError(f"{where}: {entry.argument} given twice")
            given[entry.argument] = argument
        typed = {key: _coerce(entry.options, key, value, where) for key, value in given.items()}
        return cls(name, entry.options(**typed), clipping)

    @property
    def spec(self) -> str:
        """The name, with its argument when it is not the default (``trimmed-mean:0.2``)."""
        argument = self.entry.argument
        if argument is None or getattr(self.options, argument) == getattr(
            self.entry.options(), argument
        ):
            return self.name
        return f"{self.name}:{getattr(self.options, argument)}"

    def check_parties(self, parties: int) -> None:
        """Refuse a strategy that cannot work with this many parties (Krum: 2F + 3)."""
        check = getattr(self.options, "check_parties", None)
        if check is not None:
            check(parties)

    def to_toml(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "clipping": self.clipping.value,
            "row_normalisation": self.row_normalisation.value,
            **dataclasses.asdict(self.options),
        }

    @classmethod
    def from_toml(cls, table: Mapping[str, Any], *, where: str) -> StrategyConfig:
        name = table.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"{where}: missing key name")
        entry = _entry(name)
        try:
            clipping = Clipping(table.get("clipping", DEFAULT_CLIPPING.value))
            rows = RowNormalisation(table.get("row_normalisation", "all"))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        given = {
            key: _coerce(entry.options, key, value, where)
            for key, value in table.items()
            if key not in ("name", "clipping", "row_normalisation")
        }
        return cls(name, entry.options(**given), clipping, rows)


def make_strategy(config: StrategyConfig) -> Strategy:
    """The strategy a plan names, built from its typed options."""
    return config.entry.strategy(
        **dataclasses.asdict(config.options),
        row_normalisation=config.row_normalisation,
        clipping=config.clipping,
    )
