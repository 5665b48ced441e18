"""DCAP quote verification: dcap-qvl at an explicit time, then our own checks and the policy.

One code path for real and simulated evidence: the only difference is the trust anchor.
Quotes whose PCK chain ends in Intel's root go through ``dcap_qvl.verify`` (Intel's root is
built into dcap-qvl); quotes whose chain ends in a configured simulation root go through
``dcap_qvl.verify_with_root_ca`` with that root, and come out marked ``simulated``, which
the policy then refuses unless it explicitly allows that very root.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dcap_qvl

from enclaverec.crypto import certs
from enclaverec.errors import (
    CollateralExpiredError,
    DebugEnclaveError,
    MalformedEvidenceError,
    QuoteVerificationError,
    UsageError,
)
from enclaverec.tee.collateral import Collateral
from enclaverec.tee.quote import Quote, TEEType, parse_unverified_quote

if TYPE_CHECKING:
    from cryptography import x509

    from enclaverec.tee.policy import Policy

SIMULATED_MARK = "SIMULATED"


def to_datetime(now: int | dt.datetime) -> dt.datetime:
    """A verification time as an aware UTC datetime (from Unix seconds or a datetime)."""
    if isinstance(now, bool):
        raise UsageError("a verification time is Unix seconds or an aware datetime")
    if isinstance(now, int):
        return dt.datetime.fromtimestamp(now, dt.UTC)
    if isinstance(now, dt.datetime):
        if now.tzinfo is None:
            raise UsageError("a verification time must be timezone-aware")
        return now.astimezone(dt.UTC)
    raise UsageError("a verification time is Unix seconds or an aware datetime")


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TrustRoot:
    """A trust anchor for PCK chains.

    ``TrustRoot.intel()`` is Intel's SGX root CA as built into dcap-qvl. A simulation root
    is a simulation deployment's ``root_ca.pem``; its certificate must say SIMULATED.
    """

    name: str
    simulated: bool
    certificate_der: bytes | None = field(default=None, repr=False)

    @classmethod
    def intel(cls) -> TrustRoot:
        return cls(name="Intel SGX Root CA (built into dcap-qvl)", simulated=False)

    @classmethod
    def simulation(cls, certificate: x509.Certificate | bytes) -> TrustRoot:
        """A simulation deployment's root CA (PEM or DER bytes, or a certificate)."""
        if isinstance(certificate, bytes):
            certificate = certs.load_certificate(certificate, source="simulation root")
        subject = certs.subject_text(certificate)
        if SIMULATED_MARK not in subject:
            raise UsageError(
                f"not a simulation root: its subject ({subject}) does not say {SIMULATED_MARK}"
            )
        if not certs.is_signed_by(certificate, certificate):
            raise UsageError("not a simulation root: the certificate is not self-signed")
        return cls(
            name=f"SIMULATED root {subject}",
            simulated=True,
            certificate_der=certs.certificate_der(certificate),
        )

    @property
    def sha256(self) -> str | None:
        """Lower-case hex SHA-256 of the root's DER (None for Intel's built-in root)."""
        if self.certificate_der is None:
            return None
        return hashlib.sha256(self.certificate_der).hexdigest()


@dataclass(frozen=True)
class VerifiedQuote:
    """A quote whose signatures, chain and collateral dcap-qvl verified at ``verified_at``.

    Made only by :meth:`DCAPVerifier.verify`. Code that receives one does not re-check the
    signatures; it may still narrow trust with a policy.
    """

    quote: Quote = field(repr=False)
    tcb_status: str
    advisory_ids: tuple[str, ...]
    simulated: bool
    trust_root: TrustRoot
    collateral_issued_at: dt.datetime
    collateral_next_update: dt.datetime
    verified_at: dt.datetime

    @property
    def tee(self) -> TEEType:
        return self.quote.tee

    @property
    def mr_enclave(self) -> bytes | None:
        return self.quote.sgx.mr_enclave if self.quote.sgx else None

    @property
    def mr_signer(self) -> bytes | None:
        return self.quote.sgx.mr_signer if self.quote.sgx else None

    @property
    def isv_prod_id(self) -> int | None:
        return self.quote.sgx.isv_prod_id if self.quote.sgx else None

    @property
    def isv_svn(self) -> int | None:
        return self.quote.sgx.isv_svn if self.quote.sgx else None

    @property
    def mr_td(self) -> bytes | None:
        return self.quote.tdx.mr_td if self.quote.tdx else None

    @property
    def report_data(self) -> bytes:
        return self.quote.report_data

    @property
    def debug(self) -> bool:
        return self.quote.debug

    def to_dict(self) -> dict[str, Any]:
        """The identity as JSON-ready values (hex lower-case), for output and audit logs."""
        result: dict[str, Any] = {
            "tee": self.tee.value,
            "mrenclave": self.mr_enclave.hex() if self.mr_enclave is not None else None,
            "mrsigner": self.mr_signer.hex() if self.mr_signer is not None else None,
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "report_data": self.report_data.hex(),
            "debug": self.debug,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "simulated": self.simulated,
            "trust_root": self.trust_root.name,
            "simulation_root_sha256": self.trust_root.sha256,
            "collateral_issued_at": iso(self.collateral_issued_at),
            "collateral_next_update": iso(self.collateral_next_update),
            "verified_at": iso(self.verified_at),
        }
        if self.quote.tdx is not None:
            result["mr_td"] = self.quote.tdx.mr_td.hex()
            result["rtmr"] = [value.hex() for value in self.quote.tdx.rtmrs]
        return result


def check_collateral_window(collateral: Collateral, now: dt.datetime) -> None:
    """Refuse collateral any part of which is not valid at ``now``."""
    for window in collateral.windows:
        if now > window.next_update:
            raise CollateralExpiredError(
                f"collateral {window.name} has expired",
                got=f"{window.name} valid until {iso(window.next_update)}",
                expected=f"valid at {iso(now)}",
            )
        if now < window.issued:
            raise CollateralExpiredError(
                f"collateral {window.name} is not valid yet",
                got=f"{window.name} issued {iso(window.issued)}",
                expected=f"issued by {iso(now)}",
            )


_REPORT_KEYS = {
    TEEType.SGX: ("SgxEnclave", ("mr_enclave", "mr_signer", "report_data", "attributes")),
    TEEType.TDX: ("TD10", ("mr_td", "report_data", "td_attributes")),
}


def _cross_check(quote: Quote, report_json: str) -> None:
    """dcap-qvl verified its own parse of the bytes; ours must read the same values, or a
    policy would check different fields from those that were verified."""
    try:
        report = json.loads(report_json)["report"]
    except (ValueError, KeyError) as exc:
        raise MalformedEvidenceError("dcap-qvl returned an unreadable report") from exc
    kind, names = _REPORT_KEYS[quote.tee]
    fields = report.get(kind)
    if not isinstance(fields, dict):
        raise MalformedEvidenceError(f"dcap-qvl read a {list(report)} report, expected {kind}")
    body = quote.body
    for name in names:
        if fields.get(name) != getattr(body, name).hex():
            raise MalformedEvidenceError(f"dcap-qvl and enclaverec read different {name} values")
    if quote.sgx is not None and (
        fields.get("isv_prod_id") != quote.sgx.isv_prod_id
        or fields.get("isv_svn") != quote.sgx.isv_svn
    ):
        raise MalformedEvidenceError("dcap-qvl and enclaverec read different ISVPRODID/ISVSVN")


class DCAPVerifier:
    """Verifies DCAP quotes against trust roots, collateral and a policy.

    Security: ``trust_roots`` is the complete list of anchors; simulated evidence is
    recognised only by a simulation root listed here, and still refused unless the policy
    allows that root (see ``UnsafeSimulationAllowed``).
    """

    def __init__(self, trust_roots: TrustRoot | Sequence[TrustRoot]) -> None:
        roots = (trust_roots,) if isinstance(trust_roots, TrustRoot) else tuple(trust_roots)
        if not roots:
            raise UsageError("a verifier needs at least one trust root")
        production = [root for root in roots if not root.simulated]
        if len(production) > 1:
            raise UsageError("a verifier has at most one production (Intel) trust root")
        self._production = production[0] if production else None
        self._simulation = {root.certificate_der: root for root in roots if root.simulated}

    @classmethod
    def production(cls) -> DCAPVerifier:
        """A verifier that trusts Intel's root only."""
        return cls(TrustRoot.intel())

    @property
    def trust_roots(self) -> tuple[TrustRoot, ...]:
        production = (self._production,) if self._production else ()
        return production + tuple(self._simulation.values())

    def _choose_root(self, quote: Quote) -> tuple[TrustRoot, str]:
        """The anchor to verify ``quote`` under, and the subject of its chain's top."""
        if quote.pck_chain_pem is None:
            raise MalformedEvidenceError(
                "the quote carries no PCK certificate chain (certification data type 5)"
            )
        chain = certs.load_pem_chain(quote.pck_chain_pem, source="the quote's PCK chain")
        top = chain[-1]
        subject = certs.subject_text(top)
        # Choosing by exact DER equality only selects which anchor dcap-qvl verifies
        # against; the chain itself is verified by dcap-qvl under that anchor.
        simulated = self._simulation.get(certs.certificate_der(top))
        if simulated is not None:
            return simulated, subject
        if self._production is not None:
            return self._production, subject
        raise QuoteVerificationError(
            "the quote's PCK chain does not end in a trusted root",
            got=subject,
            expected=[root.name for root in self.trust_roots],
        )

    def verify(
        self, quote: bytes, collateral: Collateral, policy: Policy, *, now: int | dt.datetime
    ) -> VerifiedQuote:
        """Verify ``quote`` at ``now`` and check it against ``policy``.

        Raises :class:`MalformedEvidenceError` if the quote or collateral cannot be parsed,
        and a :class:`VerificationError` subclass naming the check that refused it.
        """
        moment = to_datetime(now)
        # 1. Parse the quote's structure (nothing trusted yet).
        parsed = parse_unverified_quote(quote)
        # 2. Pick the trust anchor from the chain's top certificate.
        root, chain_top = self._choose_root(parsed)
        # 3. The collateral must be inside its validity window at `now`. Checked here so
        #    that expiry is reported as its own error with dates, not as a dcap-qvl message.
        check_collateral_window(collateral, moment)
        # 4. DEBUG enclaves are refused. dcap-qvl 0.7.0 refuses them too, with an opaque
        #    message; refusing first gives the error its own type. (Refusing on an
        #    unverified field is safe: it can only turn acceptance into refusal.)
        if parsed.debug:
            raise DebugEnclaveError(
                "the enclave runs in DEBUG mode; its memory is readable by the host",
                got="DEBUG",
                expected="production enclave",
            )
        # 5. dcap-qvl: quote signature, QE report and its binding of the attestation key,
        #    PCK chain to the anchor, CRLs, TCB info and QE identity signatures, and the
        #    platform's TCB status.
        unix_time = int(moment.timestamp())
        try:
            if root.simulated:
                report = dcap_qvl.verify_with_root_ca(
                    parsed.raw, collateral.to_dcap(), root.certificate_der, unix_time
                )
            else:
                report = dcap_qvl.verify(parsed.raw, collateral.to_dcap(), unix_time)
        except (ValueError, RuntimeError, TypeError) as exc:
            hint = ""
            if not root.simulated and SIMULATED_MARK in chain_top:
                hint = " (its PCK chain ends in a SIMULATED root that this verifier does not trust)"
            raise QuoteVerificationError(
                f"dcap-qvl refused the quote{hint}: {exc}",
                got="quote and collateral as presented",
                expected=f"valid signatures and chain under {root.name}",
            ) from exc
        # 6. Our parse must agree with what dcap-qvl verified.
        _cross_check(parsed, report.to_json())
        verified = VerifiedQuote(
            quote=parsed,
            tcb_status=report.status,
            advisory_ids=tuple(report.advisory_ids),
            simulated=root.simulated,
            trust_root=root,
            collateral_issued_at=collateral.issued_at,
            collateral_next_update=collateral.next_update,
            verified_at=moment,
        )
        # 7. The caller's policy: identity, platform status, simulation, collateral age.
        policy.verify(verified)
        return verified
