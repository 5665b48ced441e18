"""``enclaverec attest``: show and verify DCAP quotes and RA-TLS certificates."""

from __future__ import annotations

import argparse
import hashlib
import re
import time
from pathlib import Path
from typing import Any

from enclaverec.cli.output import JSONErrorParser, failure_document, print_json, stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.errors import EnclaveRecError, PathError, UsageError

_HEX_MEASUREMENT = re.compile(r"^[0-9a-fA-F]{64}$")

_VERIFY_DESCRIPTION = """\
Verify a DCAP quote or an RA-TLS certificate at a given time against a policy.

Without --policy the default policy applies: TCB status UpToDate only, no advisories,
DEBUG refused, SIMULATED evidence refused, no identity constraint unless --mrenclave or
--mrsigner is given (the output then says the identity was not checked). Flags add to the
policy file or to the default.

SIMULATED evidence verifies only under the simulation root given with --simulation-root
(a root_ca.pem, or the simulation deployment folder holding it), and is accepted only
with --allow-simulated, which pins that very root.

Exit codes: 0 accepted, 3 refused by a check, 2 usage error or malformed input,
1 anything else (e.g. a PCCS that cannot be reached)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    group = add_command(subparsers, "attest", help="show and verify attestation evidence")
    # With --json, even a usage error of these parsers is a JSON object on stdout.
    sub = group.add_subparsers(
        dest="attest_command", metavar="SUBCOMMAND", parser_class=JSONErrorParser
    )

    show = add_command(
        sub,
        "show",
        help="show what a quote or RA-TLS certificate claims (nothing is verified)",
        description=(
            "Print the fields of a DCAP quote (SGX v3 or TDX v4, raw bytes) or of an RA-TLS\n"
            "certificate (PEM or DER) in words, or as JSON with --json. Nothing is verified:\n"
            "use `enclaverec attest verify` to decide whether to trust it."
        ),
        handler=_show,
    )
    show.add_argument("file", type=Path, metavar="FILE", help="a raw quote or a certificate")
    show.add_argument("--json", action="store_true", help="print JSON")

    verify = add_command(
        sub,
        "verify",
        help="verify a quote or RA-TLS certificate against a policy",
        description=_VERIFY_DESCRIPTION,
        handler=_verify,
    )
    evidence = verify.add_mutually_exclusive_group(required=True)
    evidence.add_argument("--quote", type=Path, metavar="FILE", help="a raw DCAP quote")
    evidence.add_argument("--cert", type=Path, metavar="FILE", help="an RA-TLS certificate")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--collateral",
        type=Path,
        metavar="FILE",
        help="collateral JSON (dcap-qvl layout), or a simulation deployment folder",
    )
    source.add_argument("--pccs", metavar="URL", help="fetch collateral from this PCCS")
    verify.add_argument(
        "--at",
        metavar="UNIX_TIME",
        help="verification time in Unix seconds (default: now)",
    )
    verify.add_argument("--policy", type=Path, metavar="FILE", help="policy TOML file")
    verify.add_argument(
        "--mrenclave", action="append", default=[], metavar="HEX", help="allowed MRENCLAVE"
    )
    verify.add_argument(
        "--mrsigner", action="append", default=[], metavar="HEX", help="allowed MRSIGNER"
    )
    verify.add_argument(
        "--allow-tcb-status",
        action="append",
        default=[],
        metavar="S",
        help="also allow this TCB status (e.g. SWHardeningNeeded)",
    )
    verify.add_argument(
        "--allow-advisory",
        action="append",
        default=[],
        metavar="ID",
        help="also allow this advisory (e.g. INTEL-SA-00615)",
    )
    verify.add_argument(
        "--allow-simulated",
        action="store_true",
        help="UNSAFE: accept SIMULATED evidence under --simulation-root",
    )
    verify.add_argument(
        "--simulation-root",
        type=Path,
        metavar="PATH",
        help="a simulation root_ca.pem, or the simulation deployment folder",
    )
    verify.add_argument(
        "--nonce", metavar="HEX", help="with --cert: the nonce the certificate must carry"
    )
    verify.add_argument("--json", action="store_true", help="print JSON")


# --- helpers ------------------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PathError.from_os_error(exc, path=path, what=what) from exc


def _is_certificate(data: bytes) -> bool:
    # A quote starts with its version (3 or 4) as a little-endian u16; a DER certificate
    # with a SEQUENCE tag (0x30); a PEM one with its armour.
    return data.lstrip().startswith(b"-----BEGIN") or data[:1] == b"\x30"


def _print_json(document: dict[str, Any]) -> None:
    print_json(document)


def _quote_fields(quote: Any) -> dict[str, Any]:
    from enclaverec.tee.quote import TEEType

    header = quote.header
    fields: dict[str, Any] = {
        "tee": quote.tee.value,
        "version": header.version,
        "qe_svn": header.qe_svn,
        "pce_svn": header.pce_svn,
        "qe_vendor_id": header.qe_vendor_id.hex(),
        "report_data": quote.report_data.hex(),
        "debug": quote.debug,
    }
    if quote.tee is TEEType.SGX:
        body = quote.sgx
        fields.update(
            mrenclave=body.mr_enclave.hex(),
            mrsigner=body.mr_signer.hex(),
            isv_prod_id=body.isv_prod_id,
            isv_svn=body.isv_svn,
            attributes=body.attributes.hex(),
            cpu_svn=body.cpu_svn.hex(),
            misc_select=body.misc_select,
        )
    else:
        body = quote.tdx
        fields.update(
            mr_td=body.mr_td.hex(),
            rtmr=[value.hex() for value in body.rtmrs],
            mr_seam=body.mr_seam.hex(),
            mr_config_id=body.mr_config_id.hex(),
            mr_owner=body.mr_owner.hex(),
            td_attributes=body.td_attributes.hex(),
            xfam=body.xfam.hex(),
            tee_tcb_svn=body.tee_tcb_svn.hex(),
        )
    return fields


def _chain_summary(quote: Any) -> dict[str, Any]:
    from enclaverec.crypto import certs
    from enclaverec.tee.verifier import SIMULATED_MARK

    if quote.pck_chain_pem is None:
        return {"pck_chain_root": None, "claims_simulated": False}
    chain = certs.load_pem_chain(quote.pck_chain_pem, source="the quote's PCK chain")
    root = certs.subject_text(chain[-1])
    return {
        "pck_chain_root": root,
        "pck_leaf": certs.subject_text(chain[0]),
        "claims_simulated": SIMULATED_MARK in root,
    }


_LABELS = {
    "tee": "TEE",
    "version": "quote version",
    "mrenclave": "MRENCLAVE",
    "mrsigner": "MRSIGNER",
    "isv_prod_id": "ISVPRODID",
    "isv_svn": "ISVSVN",
    "mr_td": "MRTD",
    "mr_seam": "MRSEAM",
    "mr_config_id": "MRCONFIGID",
    "mr_owner": "MROWNER",
    "rtmr": "RTMR0-3",
    "attributes": "attributes",
    "td_attributes": "TD attributes",
    "xfam": "XFAM",
    "cpu_svn": "CPUSVN",
    "tee_tcb_svn": "TEE TCB SVN",
    "misc_select": "MISCSELECT",
    "debug": "DEBUG",
    "report_data": "REPORT_DATA",
    "qe_svn": "QE SVN",
    "pce_svn": "PCE SVN",
    "qe_vendor_id": "QE vendor id",
    "pck_chain_root": "PCK chain root",
    "pck_leaf": "PCK leaf",
    "tcb_status": "TCB status",
    "advisory_ids": "advisories",
    "simulated": "SIMULATED",
    "trust_root": "trust root",
    "collateral_issued_at": "collateral issued",
    "collateral_next_update": "collateral expires",
    "verified_at": "verified at",
}


def _print_fields(fields: dict[str, Any], *, indent: str = "  ") -> None:
    console = stdout_console()
    for key, value in fields.items():
        label = _LABELS.get(key, key.replace("_", " "))
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, list):
            text = ", ".join(str(item) for item in value) or "none"
        elif value is None:
            text = "none"
        else:
            text = str(value)
        console.print(f"{indent}{label:<20} {text}", markup=False, soft_wrap=True)


# --- show ---------------------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    from enclaverec.crypto import certs
    from enclaverec.tee.quote import parse_unverified_quote
    from enclaverec.tee.ratls import decode_claims, extract_evidence

    data = _read(args.file, "evidence file")
    document: dict[str, Any] = {"verified": False}
    if _is_certificate(data):
        certificate = certs.load_certificate(data, source=str(args.file))
        evidence = extract_evidence(certificate)
        quote = parse_unverified_quote(evidence.quote)
        spki_sha256 = hashlib.sha256(certs.spki_der(certificate)).hexdigest()
        cert_info: dict[str, Any] = {
            "subject": certs.subject_text(certificate),
            "not_before": certificate.not_valid_before_utc.isoformat(),
            "not_after": certificate.not_valid_after_utc.isoformat(),
            "public_key_sha256": spki_sha256,
            "evidence": evidence.kind,
        }
        if evidence.claims is not None:
            claims = decode_claims(evidence.claims)
            cert_info["claims_pubkey_sha256"] = claims.pubkey_sha256.hex()
            cert_info["claims_match_key"] = claims.pubkey_sha256.hex() == spki_sha256
            cert_info["nonce"] = claims.nonce.hex() if claims.nonce is not None else None
        document.update(kind="ratls-certificate", certificate=cert_info)
    else:
        quote = parse_unverified_quote(data)
        document["kind"] = "quote"
    document["quote"] = _quote_fields(quote) | _chain_summary(quote)
    if args.json:
        _print_json(document)
        return 0
    console = stdout_console()
    simulated = document["quote"]["claims_simulated"]
    title = "RA-TLS certificate" if document["kind"] == "ratls-certificate" else "quote"
    console.print(
        f"{args.file}: {title}, UNVERIFIED (fields as claimed; use `attest verify`)"
        + (" - claims to be SIMULATED" if simulated else ""),
        markup=False,
        soft_wrap=True,
    )
    if "certificate" in document:
        console.print("certificate:", markup=False)
        _print_fields(document["certificate"])
    console.print(f"{document['quote']['tee']} quote:", markup=False)
    _print_fields(document["quote"])
    return 0


# --- verify -------------------------------------------------------------------------------


def _measurements(values: list[str], flag: str) -> list[bytes]:
    result = []
    for value in values:
        if not _HEX_MEASUREMENT.match(value):
            raise UsageError(f"{flag} takes 64 hex digits, got {value!r}")
        result.append(bytes.fromhex(value))
    return result


def _simulation_root_certificate(path: Path) -> bytes:
    from enclaverec.tee.simulation_pki import ROOT_CA_FILE

    if path.is_dir():
        path = path / ROOT_CA_FILE
    return _read(path, "simulation root certificate")


MAX_UNIX_TIME = 253402300799
"""9999-12-31T23:59:59Z: the last second a certificate's validity can name."""


def _verify(args: argparse.Namespace) -> int:
    """Every outcome with --json is one JSON object on stdout (the keys ``accepted``,
    ``failed_check``, ``got`` and ``expected`` always present), also a refusal of the
    input or of a flag's value; without it, errors go to cli/main.py as for any command."""
    try:
        return _verify_evidence(args)
    except (EnclaveRecError, OSError) as exc:
        if not args.json:
            raise
        if isinstance(exc, OSError):
            if not PathError.is_path_error(exc):
                raise
            exc = PathError.from_os_error(exc)
        _print_json(failure_document(exc))
        return exc.exit_code


def _verify_evidence(args: argparse.Namespace) -> int:
    from enclaverec.cli.config import load_toml
    from enclaverec.cli.options import parse_integer
    from enclaverec.tee.collateral import FileCollateral, PCCSCollateral, SimulationCollateral
    from enclaverec.tee.policy import PolicySpec
    from enclaverec.tee.ratls import verify_ratls_certificate
    from enclaverec.tee.verifier import DCAPVerifier, TrustRoot

    if args.allow_simulated and args.simulation_root is None:
        raise UsageError(
            "--allow-simulated needs --simulation-root: the root_ca.pem (or deployment folder) "
            "of the simulation whose evidence you accept"
        )
    if args.nonce is not None and args.cert is None:
        raise UsageError("--nonce applies to --cert only (a raw quote has no claims)")
    expected_nonce = None
    if args.nonce is not None:
        try:
            expected_nonce = bytes.fromhex(args.nonce)
        except ValueError as exc:
            raise UsageError("--nonce takes hex digits") from exc

    roots = [TrustRoot.intel()]
    simulation_root = None
    if args.simulation_root is not None:
        simulation_root = TrustRoot.simulation(_simulation_root_certificate(args.simulation_root))
        roots.append(simulation_root)

    spec = (
        PolicySpec.from_toml(load_toml(args.policy), source=str(args.policy))
        if args.policy is not None
        else PolicySpec()
    )
    spec = spec.extended(
        mrenclaves=_measurements(args.mrenclave, "--mrenclave"),
        mrsigners=_measurements(args.mrsigner, "--mrsigner"),
        tcb_statuses=args.allow_tcb_status,
        allowed_advisories=args.allow_advisory,
        simulation_roots=[simulation_root.sha256] if args.allow_simulated else [],
    )
    policy = spec.build()

    if args.pccs is not None:
        provider = PCCSCollateral(args.pccs)
    elif args.collateral.is_dir():
        provider = SimulationCollateral(args.collateral)
    else:
        provider = FileCollateral(args.collateral)
    now = int(time.time())
    if args.at is not None:
        now = parse_integer("at", args.at, minimum=0)
        if now > MAX_UNIX_TIME:
            raise UsageError(f"--at must be at most {MAX_UNIX_TIME} (year 9999), got {now}")
    verifier = DCAPVerifier(roots)

    if args.quote is not None:
        quote = _read(args.quote, "quote file")
        verified = verifier.verify(quote, provider.collateral_for(quote), policy, now=now)
        peer = None
    else:
        peer = verify_ratls_certificate(
            _read(args.cert, "certificate file"),
            verifier,
            provider,
            policy,
            now=now,
            expected_nonce=expected_nonce,
        )
        verified = peer.identity

    document: dict[str, Any] = {"accepted": True} | verified.to_dict()
    document["identity_checked"] = spec.identity_checked
    document["policy"] = policy.describe()
    if peer is not None:
        document["certificate"] = {
            "public_key_sha256": peer.public_key_sha256,
            "evidence": peer.evidence_kind,
            "nonce": peer.nonce.hex() if peer.nonce is not None else None,
        }
    if args.json:
        _print_json(document)
        return 0
    console = stdout_console()
    console.print(
        "ACCEPTED" + (" - SIMULATED evidence, not hardware-backed" if verified.simulated else ""),
        markup=False,
    )
    shown = {
        key: value
        for key, value in document.items()
        if key not in ("accepted", "identity_checked", "policy", "certificate")
        and value is not None
    }
    _print_fields(shown)
    console.print(f"  {'policy':<20} {document['policy']}", markup=False, soft_wrap=True)
    if "certificate" in document:
        _print_fields({"certificate key sha256": peer.public_key_sha256})
    if not spec.identity_checked:
        console.print(
            "  identity NOT CHECKED: no MRENCLAVE or MRSIGNER constraint was given, so any "
            "enclave on an accepted platform passes",
            markup=False,
            soft_wrap=True,
        )
    return 0
