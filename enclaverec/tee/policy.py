"""Attestation policies: small composable objects that accept or refuse a ``VerifiedQuote``.

A policy has one method, ``verify(quote) -> None``, which raises the error of the check
that refused (each leaf checks one field, with its own error type) and returns nothing on
acceptance. ``AllOf`` and ``AnyOf`` compose leaves; ``AllOf([])`` refuses everything. The
policy is always a required argument: the verifier has no default of its own.
:class:`PolicySpec` is the configuration form (TOML, CLI flags) that builds a policy.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from enclaverec.errors import (
    AdvisoryError,
    CollateralExpiredError,
    ConfigError,
    DebugEnclaveError,
    EmptyPolicyError,
    ISVProdIDError,
    ISVSVNError,
    MrEnclaveError,
    MrSignerError,
    NoPolicyAlternativeError,
    SimulatedEvidenceError,
    TCBStatusError,
    VerificationError,
)
from enclaverec.tee.collateral import TCB_STATUSES
from enclaverec.tee.verifier import VerifiedQuote

MEASUREMENT_SIZE = 32
_ADVISORY_PATTERN = re.compile(r"^INTEL-SA-\d{5}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class Policy(Protocol):
    """Accepts a verified quote (returns None) or raises the error of the failed check."""

    def verify(self, quote: VerifiedQuote) -> None: ...

    def describe(self) -> str: ...


def _hex_list(values: Iterable[bytes]) -> list[str]:
    return sorted(value.hex() for value in values)


def _check_measurements(values: frozenset[bytes], what: str) -> None:
    if not values:
        raise ConfigError(f"an allowed-{what} list needs at least one value")
    for value in values:
        if not isinstance(value, bytes) or len(value) != MEASUREMENT_SIZE:
            raise ConfigError(f"a {what} has {MEASUREMENT_SIZE} bytes")


# --- leaves -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MrEnclaveIn:
    """MRENCLAVE (the enclave's code and initial data) is one of ``allowed``."""

    allowed: frozenset[bytes]

    def __post_init__(self) -> None:
        _check_measurements(self.allowed, "MRENCLAVE")

    def verify(self, quote: VerifiedQuote) -> None:
        if quote.mr_enclave is None:
            raise MrEnclaveError(
                f"a {quote.tee.value} quote has no MRENCLAVE",
                got=f"none ({quote.tee.value} quote)",
                expected=_hex_list(self.allowed),
            )
        if quote.mr_enclave not in self.allowed:
            raise MrEnclaveError(
                "MRENCLAVE is not allowed",
                got=quote.mr_enclave.hex(),
                expected=_hex_list(self.allowed),
            )

    def describe(self) -> str:
        return f"MRENCLAVE in [{', '.join(_hex_list(self.allowed))}]"


@dataclass(frozen=True)
class MrSignerIn:
    """MRSIGNER (the hash of the enclave signer's key) is one of ``allowed``."""

    allowed: frozenset[bytes]

    def __post_init__(self) -> None:
        _check_measurements(self.allowed, "MRSIGNER")

    def verify(self, quote: VerifiedQuote) -> None:
        if quote.mr_signer is None:
            raise MrSignerError(
                f"a {quote.tee.value} quote has no MRSIGNER",
                got=f"none ({quote.tee.value} quote)",
                expected=_hex_list(self.allowed),
            )
        if quote.mr_signer not in self.allowed:
            raise MrSignerError(
                "MRSIGNER is not allowed",
                got=quote.mr_signer.hex(),
                expected=_hex_list(self.allowed),
            )

    def describe(self) -> str:
        return f"MRSIGNER in [{', '.join(_hex_list(self.allowed))}]"


@dataclass(frozen=True)
class ISVProdIDIs:
    """ISVPRODID equals ``product_id`` (enclaves of one signer are told apart by it)."""

    product_id: int

    def __post_init__(self) -> None:
        if isinstance(self.product_id, bool) or not 0 <= self.product_id <= 0xFFFF:
            raise ConfigError("ISVPRODID is a 16-bit unsigned integer")

    def verify(self, quote: VerifiedQuote) -> None:
        if quote.isv_prod_id != self.product_id:
            raise ISVProdIDError(
                "ISVPRODID differs", got=quote.isv_prod_id, expected=self.product_id
            )

    def describe(self) -> str:
        return f"ISVPRODID = {self.product_id}"


@dataclass(frozen=True)
class MinISVSVN:
    """ISVSVN (the enclave's security version) is at least ``minimum``."""

    minimum: int

    def __post_init__(self) -> None:
        if isinstance(self.minimum, bool) or not 0 <= self.minimum <= 0xFFFF:
            raise ConfigError("ISVSVN is a 16-bit unsigned integer")

    def verify(self, quote: VerifiedQuote) -> None:
        if quote.isv_svn is None or quote.isv_svn < self.minimum:
            raise ISVSVNError(
                "ISVSVN is below the minimum", got=quote.isv_svn, expected=f">= {self.minimum}"
            )

    def describe(self) -> str:
        return f"ISVSVN >= {self.minimum}"


@dataclass(frozen=True)
class TCBStatusIn:
    """The platform's TCB status is one of ``statuses`` and every advisory affecting it is
    in ``allowed_advisories``."""

    statuses: frozenset[str]
    allowed_advisories: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.statuses:
            raise ConfigError("allow at least one TCB status")
        unknown = sorted(set(self.statuses) - set(TCB_STATUSES))
        if unknown:
            raise ConfigError(
                f"unknown TCB status(es) {', '.join(unknown)}; known: {', '.join(TCB_STATUSES)}"
            )
        bad = sorted(a for a in self.allowed_advisories if not _ADVISORY_PATTERN.match(a))
        if bad:
            raise ConfigError(f"advisory ids look like INTEL-SA-00615; got {', '.join(bad)}")

    def verify(self, quote: VerifiedQuote) -> None:
        if quote.tcb_status not in self.statuses:
            raise TCBStatusError(
                "the platform's TCB status is not allowed",
                got=quote.tcb_status,
                expected=sorted(self.statuses),
            )
        disallowed = sorted(set(quote.advisory_ids) - self.allowed_advisories)
        if disallowed:
            raise AdvisoryError(
                "the platform is affected by advisories the policy does not allow",
                got=disallowed,
                expected=sorted(self.allowed_advisories),
            )

    def describe(self) -> str:
        advisories = ", ".join(sorted(self.allowed_advisories)) or "none"
        return (
            f"TCB status in [{', '.join(sorted(self.statuses))}], advisories allowed: {advisories}"
        )


@dataclass(frozen=True)
class NotDebug:
    """The enclave is not in DEBUG mode.

    The verifier already refuses DEBUG quotes (as dcap-qvl does); this leaf keeps the
    policy complete on its own, should either of those ever change.
    """

    def verify(self, quote: VerifiedQuote) -> None:
        if quote.debug:
            raise DebugEnclaveError(
                "the enclave runs in DEBUG mode", got="DEBUG", expected="production enclave"
            )

    def describe(self) -> str:
        return "not DEBUG"


@dataclass(frozen=True)
class ProductionOnly:
    """The evidence chains to Intel's root, not to a simulation root."""

    def verify(self, quote: VerifiedQuote) -> None:
        if quote.simulated:
            raise SimulatedEvidenceError(
                "SIMULATED evidence is not hardware-backed; this policy requires real SGX",
                got=f"SIMULATED (root sha256 {quote.trust_root.sha256})",
                expected="evidence under Intel's root",
            )

    def describe(self) -> str:
        return "production evidence only (simulated refused)"


@dataclass(frozen=True)
class UnsafeSimulationAllowed:
    """Simulated evidence is accepted if it chains to one of ``roots`` (lower-case hex
    SHA-256 of a simulation root certificate's DER); production evidence passes.

    Security: simulated evidence proves nothing about the hardware: anyone holding the
    simulation deployment folder can forge it. Use for development and tests only.
    """

    roots: frozenset[str]

    def __post_init__(self) -> None:
        if not self.roots:
            raise ConfigError("allowing simulation requires naming the simulation root(s)")
        bad = sorted(r for r in self.roots if not _SHA256_HEX.match(r))
        if bad:
            raise ConfigError(f"simulation roots are lower-case hex SHA-256; got {bad}")

    def verify(self, quote: VerifiedQuote) -> None:
        if quote.simulated and quote.trust_root.sha256 not in self.roots:
            raise SimulatedEvidenceError(
                "SIMULATED evidence under a simulation root the policy does not name",
                got=quote.trust_root.sha256,
                expected=sorted(self.roots),
            )

    def describe(self) -> str:
        return f"UNSAFE: SIMULATED evidence allowed under root(s) [{', '.join(sorted(self.roots))}]"


@dataclass(frozen=True)
class CollateralMaxAge:
    """The collateral (TCB info, QE identity) was issued at most ``max_age`` before the
    verification time."""

    max_age: dt.timedelta

    def __post_init__(self) -> None:
        if self.max_age <= dt.timedelta(0):
            raise ConfigError("a maximum collateral age must be positive")

    def verify(self, quote: VerifiedQuote) -> None:
        age = quote.verified_at - quote.collateral_issued_at
        if age > self.max_age:
            raise CollateralExpiredError(
                "the collateral is older than the policy allows",
                got=f"{age.total_seconds() / 86400:.2f} days",
                expected=f"at most {self.max_age.total_seconds() / 86400:g} days",
            )

    def describe(self) -> str:
        return f"collateral at most {self.max_age.total_seconds() / 86400:g} days old"


# --- composition ------------------------------------------------------------------------


@dataclass(frozen=True)
class AllOf:
    """Every child accepts; the first refusal is raised. Empty: refuses everything."""

    policies: tuple[Policy, ...]

    def __init__(self, policies: Sequence[Policy]) -> None:
        object.__setattr__(self, "policies", tuple(policies))

    def verify(self, quote: VerifiedQuote) -> None:
        if not self.policies:
            raise EmptyPolicyError(
                "an empty policy accepts nothing", got="no checks", expected="at least one check"
            )
        for policy in self.policies:
            policy.verify(quote)

    def describe(self) -> str:
        return "all of: " + "; ".join(policy.describe() for policy in self.policies)


@dataclass(frozen=True)
class AnyOf:
    """At least one child accepts. Empty: refuses everything."""

    policies: tuple[Policy, ...]

    def __init__(self, policies: Sequence[Policy]) -> None:
        object.__setattr__(self, "policies", tuple(policies))

    def verify(self, quote: VerifiedQuote) -> None:
        if not self.policies:
            raise EmptyPolicyError(
                "an empty policy accepts nothing", got="no checks", expected="at least one check"
            )
        failures: list[str] = []
        for policy in self.policies:
            try:
                policy.verify(quote)
            except VerificationError as exc:
                failures.append(f"{exc.check}: {exc}")
            else:
                return
        raise NoPolicyAlternativeError(
            "no alternative of the policy accepted the evidence",
            got=failures,
            expected="one alternative to accept",
        )

    def describe(self) -> str:
        return "any of: (" + ") | (".join(policy.describe() for policy in self.policies) + ")"


# --- configuration ----------------------------------------------------------------------

POLICY_KEYS = (
    "mrenclave",
    "mrsigner",
    "isv_prod_id",
    "min_isv_svn",
    "tcb_statuses",
    "allowed_advisories",
    "max_collateral_age_days",
    "unsafe_allow_simulation",
    "simulation_roots",
)


def _measurement(value: str, what: str) -> bytes:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ConfigError(f"{what} must be 64 hex digits, got {value!r}")
    return bytes.fromhex(value)


def _string_list(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{what} must be a list of strings")
    return value


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an integer")
    return value


@dataclass(frozen=True)
class PolicySpec:
    """The configuration of an attestation policy: what TOML and flags describe.

    The defaults are the production default: ``UpToDate`` only, no advisories, DEBUG and
    simulated evidence refused, no collateral-age limit beyond the collateral's own
    validity, and no identity constraint (:attr:`identity_checked` is then False).
    """

    mrenclaves: frozenset[bytes] = frozenset()
    mrsigners: frozenset[bytes] = frozenset()
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    tcb_statuses: frozenset[str] = frozenset({"UpToDate"})
    allowed_advisories: frozenset[str] = frozenset()
    max_collateral_age: dt.timedelta | None = None
    unsafe_allow_simulation: bool = False
    simulation_roots: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.simulation_roots and not self.unsafe_allow_simulation:
            raise ConfigError("simulation_roots is set but unsafe_allow_simulation is not true")
        # Build once so that an invalid spec fails when it is made, not when first used.
        self.build()

    @property
    def identity_checked(self) -> bool:
        """Whether the policy constrains which enclave this is (MRENCLAVE or MRSIGNER)."""
        return bool(self.mrenclaves or self.mrsigners)

    def build(self) -> Policy:
        leaves: list[Policy] = []
        if self.mrenclaves:
            leaves.append(MrEnclaveIn(self.mrenclaves))
        if self.mrsigners:
            leaves.append(MrSignerIn(self.mrsigners))
        if self.isv_prod_id is not None:
            leaves.append(ISVProdIDIs(self.isv_prod_id))
        if self.min_isv_svn is not None:
            leaves.append(MinISVSVN(self.min_isv_svn))
        leaves.append(NotDebug())
        if self.unsafe_allow_simulation:
            leaves.append(UnsafeSimulationAllowed(self.simulation_roots))
        else:
            leaves.append(ProductionOnly())
        leaves.append(TCBStatusIn(self.tcb_statuses, self.allowed_advisories))
        if self.max_collateral_age is not None:
            leaves.append(CollateralMaxAge(self.max_collateral_age))
        return AllOf(leaves)

    def extended(
        self,
        *,
        mrenclaves: Iterable[bytes] = (),
        mrsigners: Iterable[bytes] = (),
        tcb_statuses: Iterable[str] = (),
        allowed_advisories: Iterable[str] = (),
        simulation_roots: Iterable[str] = (),
    ) -> PolicySpec:
        """This spec with more allowed values (how CLI flags add to a policy file)."""
        roots = self.simulation_roots | frozenset(simulation_roots)
        return replace(
            self,
            mrenclaves=self.mrenclaves | frozenset(mrenclaves),
            mrsigners=self.mrsigners | frozenset(mrsigners),
            tcb_statuses=self.tcb_statuses | frozenset(tcb_statuses),
            allowed_advisories=self.allowed_advisories | frozenset(allowed_advisories),
            unsafe_allow_simulation=self.unsafe_allow_simulation or bool(roots),
            simulation_roots=roots,
        )

    def to_toml(self) -> dict[str, Any]:
        """The TOML table that :meth:`from_toml` reads back to an equal spec (sorted, so
        the same policy always serialises, and measures, the same)."""
        table: dict[str, Any] = {}
        if self.mrenclaves:
            table["mrenclave"] = sorted(value.hex() for value in self.mrenclaves)
        if self.mrsigners:
            table["mrsigner"] = sorted(value.hex() for value in self.mrsigners)
        if self.isv_prod_id is not None:
            table["isv_prod_id"] = self.isv_prod_id
        if self.min_isv_svn is not None:
            table["min_isv_svn"] = self.min_isv_svn
        table["tcb_statuses"] = sorted(self.tcb_statuses)
        if self.allowed_advisories:
            table["allowed_advisories"] = sorted(self.allowed_advisories)
        if self.max_collateral_age is not None:
            table["max_collateral_age_days"] = self.max_collateral_age.total_seconds() / 86400
        if self.unsafe_allow_simulation:
            table["unsafe_allow_simulation"] = True
            table["simulation_roots"] = sorted(self.simulation_roots)
        return table

    @classmethod
    def from_toml(cls, table: Mapping[str, Any], *, source: str = "policy") -> PolicySpec:
        """Read a policy table. Unknown keys are errors: a typo must not weaken a policy."""
        unknown = sorted(set(table) - set(POLICY_KEYS))
        if unknown:
            raise ConfigError(
                f"{source}: unknown policy key(s) {', '.join(unknown)}; "
                f"known: {', '.join(POLICY_KEYS)}"
            )
        kwargs: dict[str, Any] = {}
        try:
            if "mrenclave" in table:
                values = _string_list(table["mrenclave"], "mrenclave")
                kwargs["mrenclaves"] = frozenset(_measurement(v, "mrenclave") for v in values)
                if not values:
                    raise ConfigError("mrenclave must list at least one value, or be left out")
            if "mrsigner" in table:
                values = _string_list(table["mrsigner"], "mrsigner")
                kwargs["mrsigners"] = frozenset(_measurement(v, "mrsigner") for v in values)
                if not values:
                    raise ConfigError("mrsigner must list at least one value, or be left out")
            if "isv_prod_id" in table:
                kwargs["isv_prod_id"] = _integer(table["isv_prod_id"], "isv_prod_id")
            if "min_isv_svn" in table:
                kwargs["min_isv_svn"] = _integer(table["min_isv_svn"], "min_isv_svn")
            if "tcb_statuses" in table:
                kwargs["tcb_statuses"] = frozenset(
                    _string_list(table["tcb_statuses"], "tcb_statuses")
                )
            if "allowed_advisories" in table:
                kwargs["allowed_advisories"] = frozenset(
                    _string_list(table["allowed_advisories"], "allowed_advisories")
                )
            if "max_collateral_age_days" in table:
                days = table["max_collateral_age_days"]
                if isinstance(days, bool) or not isinstance(days, int | float):
                    raise ConfigError("max_collateral_age_days must be a number")
                kwargs["max_collateral_age"] = dt.timedelta(days=days)
            if "unsafe_allow_simulation" in table:
                allow = table["unsafe_allow_simulation"]
                if not isinstance(allow, bool):
                    raise ConfigError("unsafe_allow_simulation must be true or false")
                kwargs["unsafe_allow_simulation"] = allow
            if "simulation_roots" in table:
                kwargs["simulation_roots"] = frozenset(
                    _string_list(table["simulation_roots"], "simulation_roots")
                )
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc


def policy_from_toml(table: Mapping[str, Any], *, source: str = "policy") -> Policy:
    """Build a policy from a TOML table (see :class:`PolicySpec` and docs/attestation.md)."""
    return PolicySpec.from_toml(table, source=source).build()


def default_policy() -> Policy:
    """The production default: UpToDate only, no advisories, no DEBUG, no simulation."""
    return PolicySpec().build()
