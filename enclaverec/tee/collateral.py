"""DCAP collateral (TCB info, QE identity, CRLs and their chains) and where it comes from.

Collateral is what a verifier needs beside the quote: Intel's signed statement of which
TCB levels exist (TCB info), the quoting enclave's identity, and the CRLs. Providers load
it from a JSON file in the layout of ``dcap_qvl.QuoteCollateralV3.from_json`` (the shared
vectors' layout), from a simulation deployment folder, or from a PCCS over the network.

Security: collateral is authenticated by ``dcap-qvl`` (signatures chained to the trust
root) during verification. The dates read here are used before that only to *refuse*
collateral outside its validity window, never to accept anything.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import dcap_qvl

from enclaverec.crypto.certs import load_crl
from enclaverec.errors import MalformedEvidenceError, PathError, TransportError, UsageError

COLLATERAL_FIELDS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)
"""The nine fields of ``dcap_qvl.QuoteCollateralV3``; CRLs and signatures are hex strings."""

TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)
"""Every TCB status Intel's TCB info can give a platform (PCS API v4, "TCB Info" schema)."""

SIMULATION_COLLATERAL_FILE = "collateral.json"
DEFAULT_PCCS_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class ValidityWindow:
    """One piece of collateral and the dates it claims to be valid between."""

    name: str
    issued: dt.datetime
    next_update: dt.datetime


def _parse_date(value: object, *, what: str) -> dt.datetime:
    if not isinstance(value, str):
        raise MalformedEvidenceError(f"collateral: {what} is not a date string")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MalformedEvidenceError(f"collateral: {what} is not an ISO 8601 date") from exc
    if parsed.tzinfo is None:
        raise MalformedEvidenceError(f"collateral: {what} has no time zone")
    return parsed.astimezone(dt.UTC)


def _json_body(text: str, *, what: str) -> dict:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedEvidenceError(f"collateral: {what} is not JSON") from exc
    if not isinstance(body, dict):
        raise MalformedEvidenceError(f"collateral: {what} is not a JSON object")
    return body


@dataclass(frozen=True)
class Collateral:
    """Parsed collateral: the validity windows of its parts, and the text dcap-qvl reads."""

    json_text: str = field(repr=False)
    windows: tuple[ValidityWindow, ...]
    tcb_info: dict = field(repr=False)
    qe_identity: dict = field(repr=False)

    @classmethod
    def from_json(cls, text: str, *, source: str = "collateral") -> Collateral:
        """Parse collateral in the ``QuoteCollateralV3.from_json`` layout."""
        document = _json_body(text, what=source)
        missing = [name for name in COLLATERAL_FIELDS if name not in document]
        if missing:
            raise MalformedEvidenceError(f"{source}: missing field(s) {', '.join(missing)}")
        unknown = sorted(set(document) - set(COLLATERAL_FIELDS))
        if unknown:
            raise MalformedEvidenceError(f"{source}: unknown field(s) {', '.join(unknown)}")
        if not all(isinstance(document[name], str) for name in COLLATERAL_FIELDS):
            raise MalformedEvidenceError(f"{source}: every field is a string")
        tcb_info = _json_body(document["tcb_info"], what="tcb_info")
        qe_identity = _json_body(document["qe_identity"], what="qe_identity")
        windows = [
            ValidityWindow(
                "tcb_info",
                _parse_date(tcb_info.get("issueDate"), what="tcb_info issueDate"),
                _parse_date(tcb_info.get("nextUpdate"), what="tcb_info nextUpdate"),
            ),
            ValidityWindow(
                "qe_identity",
                _parse_date(qe_identity.get("issueDate"), what="qe_identity issueDate"),
                _parse_date(qe_identity.get("nextUpdate"), what="qe_identity nextUpdate"),
            ),
        ]
        for name in ("root_ca_crl", "pck_crl"):
            try:
                der = bytes.fromhex(document[name])
            except ValueError as exc:
                raise MalformedEvidenceError(f"{source}: {name} is not hex") from exc
            crl = load_crl(der, source=f"{source}: {name}")
            if crl.next_update_utc is None:
                raise MalformedEvidenceError(f"{source}: {name} has no nextUpdate")
            windows.append(ValidityWindow(name, crl.last_update_utc, crl.next_update_utc))
        # dcap-qvl must accept the same text, or verification would fail later with a
        # less helpful message.
        try:
            dcap_qvl.QuoteCollateralV3.from_json(text)
        except ValueError as exc:
            raise MalformedEvidenceError(f"{source}: dcap-qvl cannot read it: {exc}") from exc
        return cls(
            json_text=text, windows=tuple(windows), tcb_info=tcb_info, qe_identity=qe_identity
        )

    @property
    def issued_at(self) -> dt.datetime:
        """When the older of TCB info and QE identity was issued: the age a maximum-age
        policy measures. CRLs are left out: Intel reissues the root CA's CRL about once a
        year, so its age says nothing about how fresh the TCB evaluation is."""
        return min(w.issued for w in self.windows if w.name in ("tcb_info", "qe_identity"))

    @property
    def next_update(self) -> dt.datetime:
        """When the first part expires."""
        return min(window.next_update for window in self.windows)

    def to_dcap(self) -> dcap_qvl.QuoteCollateralV3:
        return dcap_qvl.QuoteCollateralV3.from_json(self.json_text)


class CollateralProvider(Protocol):
    """Where a verifier gets the collateral for a quote."""

    def collateral_for(self, quote: bytes) -> Collateral: ...

    def describe(self) -> str: ...


def load_collateral_file(path: str | Path) -> Collateral:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PathError.from_os_error(exc, path=path, what="collateral file") from exc
    except UnicodeDecodeError as exc:
        raise MalformedEvidenceError(f"{path}: collateral is not UTF-8 text") from exc
    return Collateral.from_json(text, source=str(path))


@dataclass(frozen=True)
class FileCollateral:
    """Collateral from a JSON file (the same collateral for every quote)."""

    path: Path

    def collateral_for(self, quote: bytes) -> Collateral:
        return load_collateral_file(self.path)

    def describe(self) -> str:
        return f"file {self.path}"


@dataclass(frozen=True)
class SimulationCollateral:
    """Collateral of a simulation deployment folder (``collateral.json`` inside it)."""

    folder: Path

    def collateral_for(self, quote: bytes) -> Collateral:
        return load_collateral_file(Path(self.folder) / SIMULATION_COLLATERAL_FILE)

    def describe(self) -> str:
        return f"SIMULATED deployment {self.folder}"


def check_pccs_url(url: str) -> str:
    """A PCCS address is an http(s) URL with a host; anything else is refused before any
    request (dcap-qvl would only say "builder error")."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a port that is not a number raises ValueError
    except ValueError:
        valid = False
    if not valid:
        raise UsageError(
            f"PCCS URL {url!r} is not an http(s) URL with a host "
            "(e.g. https://pccs.example.com:8081/sgx/certification/v4/)"
        )
    return url


@dataclass(frozen=True)
class PCCSCollateral:
    """Collateral fetched from a PCCS (or Intel's PCS) for each quote's FMSPC.

    Needs the network; ``dcap_qvl.get_collateral`` is asynchronous, so each call runs it in
    its own event loop with a deadline.
    """

    url: str
    timeout_seconds: float = DEFAULT_PCCS_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        check_pccs_url(self.url)

    def collateral_for(self, quote: bytes) -> Collateral:
        async def fetch() -> dcap_qvl.QuoteCollateralV3:
            return await asyncio.wait_for(
                dcap_qvl.get_collateral(self.url, quote), timeout=self.timeout_seconds
            )

        try:
            fetched = asyncio.run(fetch())
        except TimeoutError as exc:
            raise TransportError(
                f"PCCS {self.url} did not answer within {self.timeout_seconds:g} s"
            ) from exc
        except (ValueError, RuntimeError, OSError) as exc:
            # dcap-qvl reports unreachable hosts and HTTP errors as ValueError.
            raise TransportError(f"could not fetch collateral from PCCS {self.url}: {exc}") from exc
        return Collateral.from_json(fetched.to_json(), source=f"PCCS {self.url}")

    def describe(self) -> str:
        return f"PCCS {self.url}"
