"""The SIMULATED platform: a private DCAP PKI that issues real-format SGX v3 quotes.

A simulation deployment is a folder made once by :meth:`SimulationPKI.create`. It holds a
root CA, a PCK CA, a PCK leaf carrying Intel's SGX extension, a TCB-info/QE-identity
signer, CRLs, an attestation key, the collateral (``collateral.json``, in the layout of the
shared vectors) and a sealing key file. Quotes it makes verify with
``dcap_qvl.verify_with_root_ca`` under its root exactly as Intel's verify under Intel's
root, so simulated evidence takes the production verification path; only the trust anchor
differs. Every certificate's subject says SIMULATED.

Security: the private keys are stored unencrypted (mode 0600) because a simulation has no
hardware to protect them: whoever can read the folder can forge evidence that verifies
under this root. That is why a verifier trusts a simulation root only when its policy
names that root explicitly (``UnsafeSimulationAllowed``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

import tomli_w
from cryptography import x509

from enclaverec.crypto import certs
from enclaverec.crypto.signing import (
    ECPrivateKey,
    generate_p256_key,
    private_key_from_pem,
    private_key_to_pem,
    public_point_xy,
    sign_raw,
)
from enclaverec.errors import ConfigError, MalformedInputError, UsageError
from enclaverec.files import write_atomically, write_new
from enclaverec.tee.collateral import (
    SIMULATION_COLLATERAL_FILE,
    TCB_STATUSES,
    Collateral,
    load_collateral_file,
)
from enclaverec.tee.quote import (
    ATTESTATION_KEY_TYPE_ECDSA_P256,
    INTEL_QE_VENDOR_ID,
    SGX_QUOTE_VERSION,
    QuoteHeader,
    SGXReportBody,
    TEEType,
    encode_sgx_quote,
)
from enclaverec.tee.sgx_extension import SGX_EXTENSION_OID, PCKPlatformInfo, encode_sgx_extension

log = logging.getLogger(__name__)

SIMULATED = "SIMULATED"
ORGANIZATION = "enclaverec SIMULATED TEE"
ROOT_CA_NAME = "enclaverec SIMULATED SGX Root CA"
PCK_CA_NAME = "enclaverec SIMULATED SGX PCK Processor CA"
PCK_LEAF_NAME = "enclaverec SIMULATED SGX PCK Certificate"
TCB_SIGNER_NAME = "enclaverec SIMULATED SGX TCB Signing"

METADATA_FILE = "simulation.toml"
ROOT_CA_FILE = "root_ca.pem"
FORMAT_VERSION = 1
KEYS_DIR = "keys"
SEALING_KEY_FILE = "sealing.key"
SEALING_KEY_SIZE = 32
_KEY_NAMES = ("root_ca", "pck_ca", "pck_leaf", "tcb_signer", "attestation")
_CERT_NAMES = ("root_ca", "pck_ca", "pck_leaf", "tcb_signer")

CERTIFICATE_LIFETIME = dt.timedelta(days=3650)
CLOCK_SKEW = dt.timedelta(days=1)
"""Certificates start a day early so that a verifier whose clock lags still accepts them."""

QUOTE_USER_DATA = b"SIMULATED-ENCLAVEREC"
"""The header's 20 bytes of QE user data: marks every simulated quote, even unparsed."""
assert len(QUOTE_USER_DATA) == 20  # noqa: S101 - a constant's invariant, not input checking

# The simulated quoting enclave. Its identity is published in the QE identity collateral
# and reproduced in each QE report, as Intel's QE identity describes Intel's QE.
QE_MR_SIGNER = hashlib.sha256(b"enclaverec SIMULATED quoting enclave signer").digest()
QE_MR_ENCLAVE = hashlib.sha256(b"enclaverec SIMULATED quoting enclave").digest()
QE_ISV_PROD_ID = 1
QE_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")
QE_ATTRIBUTES_MASK = "FBFFFFFFFFFFFFFF0000000000000000"
QE_AUTH_DATA = b"SIMULATED QE authentication data"
TCB_EVALUATION_DATA_NUMBER = 17


@dataclass(frozen=True)
class SimulatedPlatform:
    """What the simulated platform reports about itself; tests vary ``tcb_status``."""

    tcb_status: str = "UpToDate"
    advisory_ids: tuple[str, ...] = ()
    cpu_svn: bytes = bytes([11, 11, 2, 2, 255, 1, 12] + [0] * 9)
    pce_svn: int = 13
    qe_svn: int = 8
    fmspc: bytes = b"SIMLTD"
    pce_id: bytes = b"\x00\x00"
    collateral_validity_days: int = 30

    def __post_init__(self) -> None:
        if self.tcb_status not in TCB_STATUSES:
            raise ConfigError(
                f"unknown TCB status {self.tcb_status!r}; known: {', '.join(TCB_STATUSES)}"
            )
        if self.tcb_status == "UpToDate" and self.advisory_ids:
            raise ConfigError("an UpToDate platform has no advisories")
        if not 1 <= self.collateral_validity_days <= 3650:
            raise ConfigError("collateral_validity_days must be between 1 and 3650")
        PCKPlatformInfo(
            ppid=bytes(16),
            cpu_svn=self.cpu_svn,
            pce_svn=self.pce_svn,
            pce_id=self.pce_id,
            fmspc=self.fmspc,
        )

    def to_toml(self) -> dict:
        return {
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "cpu_svn": self.cpu_svn.hex(),
            "pce_svn": self.pce_svn,
            "qe_svn": self.qe_svn,
            "fmspc": self.fmspc.hex(),
            "pce_id": self.pce_id.hex(),
            "collateral_validity_days": self.collateral_validity_days,
        }

    @classmethod
    def from_toml(cls, table: dict, *, source: str) -> SimulatedPlatform:
        try:
            return cls(
                tcb_status=table["tcb_status"],
                advisory_ids=tuple(table["advisory_ids"]),
                cpu_svn=bytes.fromhex(table["cpu_svn"]),
                pce_svn=int(table["pce_svn"]),
                qe_svn=int(table["qe_svn"]),
                fmspc=bytes.fromhex(table["fmspc"]),
                pce_id=bytes.fromhex(table["pce_id"]),
                collateral_validity_days=int(table["collateral_validity_days"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: invalid [platform] table: {exc}") from exc


def _utc(now: dt.datetime | int | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC).replace(microsecond=0)
    if isinstance(now, int):
        return dt.datetime.fromtimestamp(now, dt.UTC)
    if now.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return now.astimezone(dt.UTC).replace(microsecond=0)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class _Keys:
    root_ca: ECPrivateKey
    pck_ca: ECPrivateKey
    pck_leaf: ECPrivateKey
    tcb_signer: ECPrivateKey
    attestation: ECPrivateKey


@dataclass(eq=False)
class SimulationPKI:
    """A loaded simulation deployment. Make one with :meth:`create`, open it with :meth:`load`.

    Security: holds the deployment's private keys (see the module docstring); its
    ``repr`` shows none of them.
    """

    folder: Path
    platform: SimulatedPlatform
    root_certificate: x509.Certificate = field(repr=False)
    pck_ca_certificate: x509.Certificate = field(repr=False)
    pck_leaf_certificate: x509.Certificate = field(repr=False)
    tcb_signer_certificate: x509.Certificate = field(repr=False)
    _keys: _Keys = field(repr=False)

    # --- creation and loading ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        folder: str | Path,
        *,
        platform: SimulatedPlatform | None = None,
        now: dt.datetime | int | None = None,
    ) -> SimulationPKI:
        """Create a deployment in ``folder`` (which must not exist, or be empty)."""
        folder = Path(folder)
        platform = platform or SimulatedPlatform()
        moment = _utc(now)
        if folder.exists() and any(folder.iterdir()):
            raise UsageError(f"refusing to create a simulation deployment in non-empty {folder}")
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        (folder / KEYS_DIR).mkdir(mode=0o700)

        keys = _Keys(*(generate_p256_key() for _ in _KEY_NAMES))
        not_before, not_after = moment - CLOCK_SKEW, moment + CERTIFICATE_LIFETIME
        root_name = certs.make_name(ROOT_CA_NAME, organization=ORGANIZATION, unit=SIMULATED)
        pck_ca_name = certs.make_name(PCK_CA_NAME, organization=ORGANIZATION, unit=SIMULATED)
        root = certs.build_certificate(
            subject=root_name,
            public_key=keys.root_ca.public_key(),
            issuer=root_name,
            issuer_key=keys.root_ca,
            not_before=not_before,
            not_after=not_after,
            is_ca=True,
            path_length=1,
        )
        pck_ca = certs.build_certificate(
            subject=pck_ca_name,
            public_key=keys.pck_ca.public_key(),
            issuer=root_name,
            issuer_key=keys.root_ca,
            not_before=not_before,
            not_after=not_after,
            is_ca=True,
            path_length=0,
        )
        pck_info = PCKPlatformInfo(
            ppid=secrets.token_bytes(16),
            cpu_svn=platform.cpu_svn,
            pce_svn=platform.pce_svn,
            pce_id=platform.pce_id,
            fmspc=platform.fmspc,
        )
        sgx_extension = x509.UnrecognizedExtension(
            x509.ObjectIdentifier(SGX_EXTENSION_OID), encode_sgx_extension(pck_info)
        )
        pck_leaf = certs.build_certificate(
            subject=certs.make_name(PCK_LEAF_NAME, organization=ORGANIZATION, unit=SIMULATED),
            public_key=keys.pck_leaf.public_key(),
            issuer=pck_ca_name,
            issuer_key=keys.pck_ca,
            not_before=not_before,
            not_after=not_after,
            is_ca=False,
            extensions=[(sgx_extension, False)],
        )
        tcb_signer = certs.build_certificate(
            subject=certs.make_name(TCB_SIGNER_NAME, organization=ORGANIZATION, unit=SIMULATED),
            public_key=keys.tcb_signer.public_key(),
            issuer=root_name,
            issuer_key=keys.root_ca,
            not_before=not_before,
            not_after=not_after,
            is_ca=False,
        )
        for name, key in zip(_KEY_NAMES, (getattr(keys, n) for n in _KEY_NAMES), strict=True):
            write_new(folder / KEYS_DIR / f"{name}.key", private_key_to_pem(key), 0o600)
        write_new(
            folder / KEYS_DIR / SEALING_KEY_FILE, secrets.token_bytes(SEALING_KEY_SIZE), 0o600
        )
        for name, cert in zip(_CERT_NAMES, (root, pck_ca, pck_leaf, tcb_signer), strict=True):
            write_new(folder / f"{name}.pem", certs.certificate_pem(cert), 0o644)
        pki = cls(folder, platform, root, pck_ca, pck_leaf, tcb_signer, keys)
        pki._write_metadata(moment)
        pki.issue_collateral(now=moment)
        log.warning("created a SIMULATED TEE deployment in %s (not hardware-backed)", folder)
        return pki

    @classmethod
    def load(cls, folder: str | Path) -> SimulationPKI:
        folder = Path(folder)
        metadata_path = folder / METADATA_FILE
        try:
            metadata = tomllib.loads(metadata_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise UsageError(
                f"{folder} is not a simulation deployment (no {METADATA_FILE})"
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{metadata_path}: invalid TOML: {exc}") from exc
        if metadata.get("format") != FORMAT_VERSION:
            raise ConfigError(
                f"{metadata_path}: unsupported format {metadata.get('format')!r} "
                f"(expected {FORMAT_VERSION})"
            )
        platform = SimulatedPlatform.from_toml(
            metadata.get("platform", {}), source=str(metadata_path)
        )
        try:
            loaded_certs = [
                certs.load_certificate((folder / f"{n}.pem").read_bytes(), source=f"{n}.pem")
                for n in _CERT_NAMES
            ]
            loaded_keys = [
                private_key_from_pem(
                    (folder / KEYS_DIR / f"{n}.key").read_bytes(), source=f"{n}.key"
                )
                for n in _KEY_NAMES
            ]
        except FileNotFoundError as exc:
            raise UsageError(f"simulation deployment {folder} is incomplete: {exc}") from exc
        return cls(folder, platform, *loaded_certs, _Keys(*loaded_keys))

    def _write_metadata(self, created: dt.datetime) -> None:
        document = {
            "format": FORMAT_VERSION,
            "note": (
                "SIMULATED TEE deployment made by enclaverec. Not hardware-backed: whoever "
                "can read this folder can forge evidence that verifies under root_ca.pem."
            ),
            "created": created,
            "platform": self.platform.to_toml(),
        }
        write_atomically(
            self.folder / METADATA_FILE, tomli_w.dumps(document).encode("utf-8"), mode=0o644
        )

    # --- what verifiers need ---------------------------------------------------------------

    @property
    def root_der(self) -> bytes:
        return certs.certificate_der(self.root_certificate)

    @property
    def root_sha256(self) -> str:
        """Lower-case hex SHA-256 of the root certificate's DER: how policies name it."""
        return hashlib.sha256(self.root_der).hexdigest()

    @property
    def mr_signer(self) -> bytes:
        """The MRSIGNER of enclaves simulated in this deployment: SHA-256 of the root CA's
        DER SubjectPublicKeyInfo (real SGX hashes the enclave signing key's modulus)."""
        return hashlib.sha256(certs.spki_der(self.root_certificate)).digest()

    def collateral(self) -> Collateral:
        """The deployment's current collateral (``collateral.json``)."""
        return load_collateral_file(self.folder / SIMULATION_COLLATERAL_FILE)

    def issue_collateral(
        self,
        *,
        now: dt.datetime | int | None = None,
        tcb_status: str | None = None,
        advisory_ids: tuple[str, ...] | None = None,
    ) -> Collateral:
        """(Re)issue TCB info, QE identity and CRLs valid from ``now`` for the platform's
        ``collateral_validity_days``; optionally change the platform's TCB status, as Intel
        does when a new advisory makes a platform ``OutOfDate``."""
        moment = _utc(now)
        platform = self.platform
        if tcb_status is not None or advisory_ids is not None:
            platform = replace(
                platform,
                tcb_status=tcb_status if tcb_status is not None else platform.tcb_status,
                advisory_ids=advisory_ids if advisory_ids is not None else platform.advisory_ids,
            )
            self.platform = platform
            self._write_metadata(moment)
        next_update = moment + dt.timedelta(days=platform.collateral_validity_days)
        tcb_level: dict = {
            "tcb": {
                "sgxtcbcomponents": [{"svn": svn} for svn in platform.cpu_svn],
                "pcesvn": platform.pce_svn,
            },
            "tcbDate": _iso(moment),
            "tcbStatus": platform.tcb_status,
        }
        if platform.advisory_ids:
            tcb_level["advisoryIDs"] = list(platform.advisory_ids)
        tcb_info = {
            "id": "SGX",
            "version": 3,
            "issueDate": _iso(moment),
            "nextUpdate": _iso(next_update),
            "fmspc": platform.fmspc.hex().upper(),
            "pceId": platform.pce_id.hex().upper(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
            "tcbLevels": [tcb_level],
        }
        qe_identity = {
            "id": "QE",
            "version": 2,
            "issueDate": _iso(moment),
            "nextUpdate": _iso(next_update),
            "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": QE_ATTRIBUTES.hex().upper(),
            "attributesMask": QE_ATTRIBUTES_MASK,
            "mrsigner": QE_MR_SIGNER.hex().upper(),
            "isvprodid": QE_ISV_PROD_ID,
            "tcbLevels": [
                {
                    "tcb": {"isvsvn": platform.qe_svn},
                    "tcbDate": _iso(moment),
                    "tcbStatus": "UpToDate",
                }
            ],
        }
        tcb_info_text = json.dumps(tcb_info, separators=(",", ":"))
        qe_identity_text = json.dumps(qe_identity, separators=(",", ":"))
        root_pem = certs.certificate_pem(self.root_certificate).decode("ascii")
        signer_chain = certs.certificate_pem(self.tcb_signer_certificate).decode("ascii") + root_pem
        pck_ca_chain = certs.certificate_pem(self.pck_ca_certificate).decode("ascii") + root_pem
        document = {
            "pck_crl_issuer_chain": pck_ca_chain,
            "root_ca_crl": certs.build_crl(
                issuer=self.root_certificate.subject,
                issuer_key=self._keys.root_ca,
                this_update=moment,
                next_update=next_update,
            ).hex(),
            "pck_crl": certs.build_crl(
                issuer=self.pck_ca_certificate.subject,
                issuer_key=self._keys.pck_ca,
                this_update=moment,
                next_update=next_update,
            ).hex(),
            "tcb_info_issuer_chain": signer_chain,
            "tcb_info": tcb_info_text,
            # Intel signs the exact JSON bytes; the signature is raw r||s in hex.
            "tcb_info_signature": sign_raw(
                self._keys.tcb_signer, tcb_info_text.encode("utf-8")
            ).hex(),
            "qe_identity_issuer_chain": signer_chain,
            "qe_identity": qe_identity_text,
            "qe_identity_signature": sign_raw(
                self._keys.tcb_signer, qe_identity_text.encode("utf-8")
            ).hex(),
        }
        text = json.dumps(document, indent=2)
        write_atomically(self.folder / SIMULATION_COLLATERAL_FILE, text.encode("utf-8"), mode=0o644)
        return Collateral.from_json(text, source=str(self.folder / SIMULATION_COLLATERAL_FILE))

    # --- what the simulated backend needs -------------------------------------------------

    def sealing_key_material(self) -> bytes:
        """The deployment's sealing key file (32 random bytes made at creation)."""
        path = self.folder / KEYS_DIR / SEALING_KEY_FILE
        try:
            material = path.read_bytes()
        except FileNotFoundError as exc:
            raise UsageError(f"simulation deployment {self.folder} has no sealing key") from exc
        if len(material) != SEALING_KEY_SIZE:
            raise MalformedInputError(f"{path}: a sealing key has {SEALING_KEY_SIZE} bytes")
        return material

    def make_quote(self, body: SGXReportBody) -> bytes:
        """An SGX v3 quote over ``body``, signed like Intel's quoting enclave signs one:
        the attestation key signs header‖body, the PCK key signs the QE report, and the QE
        report's data binds the attestation key."""
        platform = self.platform
        header = QuoteHeader(
            version=SGX_QUOTE_VERSION,
            attestation_key_type=ATTESTATION_KEY_TYPE_ECDSA_P256,
            tee_type=TEEType.SGX,
            qe_svn=platform.qe_svn,
            pce_svn=platform.pce_svn,
            qe_vendor_id=INTEL_QE_VENDOR_ID,
            user_data=QUOTE_USER_DATA,
        )
        attestation_key = public_point_xy(self._keys.attestation.public_key())
        qe_report = SGXReportBody(
            cpu_svn=platform.cpu_svn,
            misc_select=0,
            attributes=QE_ATTRIBUTES,
            mr_enclave=QE_MR_ENCLAVE,
            mr_signer=QE_MR_SIGNER,
            isv_prod_id=QE_ISV_PROD_ID,
            isv_svn=platform.qe_svn,
            report_data=hashlib.sha256(attestation_key + QE_AUTH_DATA).digest() + bytes(32),
        ).encode()
        chain = b"".join(
            certs.certificate_pem(c)
            for c in (self.pck_leaf_certificate, self.pck_ca_certificate, self.root_certificate)
        )
        return encode_sgx_quote(
            header=header,
            body=body,
            signature=sign_raw(self._keys.attestation, header.encode() + body.encode()),
            attestation_key=attestation_key,
            qe_report=qe_report,
            qe_report_signature=sign_raw(self._keys.pck_leaf, qe_report),
            qe_auth_data=QE_AUTH_DATA,
            pck_chain_pem=chain,
        )
