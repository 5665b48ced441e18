"""Every exception of enclaverec, under one root, with the exit code the CLI maps it to.

Families (DESIGN.md §4 exit codes):

- ``UsageError`` (2): bad flags, bad configuration, a missing file or optional install.
- ``MalformedInputError`` (2): input that cannot be parsed (a data line, a quote, a
  certificate, a TOML file). Kept apart from ``VerificationError``: malformed evidence is
  not "well-formed but refused".
- ``VerificationError`` (3): well-formed evidence or credentials refused by a check. Every
  subclass names its check and carries "got" and "expected"; never a secret.
- ``IntegrityError`` (4): decryption or authentication of stored or received ciphertext
  failed. One opaque message: no hint about which byte or key was wrong.
- Everything else (1): ``TransportError``, ``PeerNotAttestedError``,
  ``AggregationRefusedError``, ``TrainingError``.

Library code raises these and never exits the process; only ``enclaverec.cli`` turns
them into a message and an exit code.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any


class EnclaveRecError(Exception):
    """Root of every error enclaverec raises on purpose."""

    exit_code: int = 1


# --- usage and configuration (exit 2) ---------------------------------------------------


class UsageError(EnclaveRecError):
    """The command was called wrongly (a flag value, a missing argument, a missing file)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file or value is invalid or inconsistent."""


class MissingDependencyError(UsageError):
    """An optional install the command needs is absent; the message names the install."""


class OutputFolderError(UsageError):
    """An output folder cannot be used: it holds files (without ``--overwrite``), it is a
    file, it cannot be written, or it holds what another command made."""


class PathError(UsageError):
    """A path the user gave cannot be used: missing, a folder where a file is expected (or
    a file where a folder is), permission denied, not UTF-8 text. One line, "<what>
    <reason>: <path>", the same in every command: build it with :meth:`from_os_error`
    (``cli/main.py`` maps any path ``OSError`` that escapes a command the same way)."""

    # errno -> the reason as the user reads it. Other errors (disk full, I/O error) are
    # not the caller's fault: they stay ``StorageError`` (exit 1).
    REASONS = {
        errno.ENOENT: "not found",
        errno.EACCES: "not accessible (permission denied)",
        errno.EPERM: "not accessible (operation not permitted)",
        errno.EISDIR: "is a folder, not a file",
        errno.ENOTDIR: "is a file, not a folder",
        errno.EEXIST: "already exists",
        errno.EROFS: "on a read-only file system",
        errno.ENAMETOOLONG: "has a name too long",
        errno.ELOOP: "is a loop of symbolic links",
    }

    def __init__(self, path: str | Path, reason: str, *, what: str = "path"):
        super().__init__(f"{what} {reason}: {path}")
        self.path = str(path)
        self.reason = reason

    @classmethod
    def is_path_error(cls, exc: BaseException) -> bool:
        """Whether ``exc`` is an ``OSError`` about a path the caller gave."""
        return isinstance(exc, OSError) and exc.errno in cls.REASONS

    @classmethod
    def from_os_error(
        cls, exc: OSError, *, path: str | Path | None = None, what: str = "path"
    ) -> EnclaveRecError:
        """The error to raise for ``exc``: a ``PathError`` for the errors a caller can fix,
        else a ``StorageError`` (both name the path)."""
        where = path if path is not None else (exc.filename if exc.filename else "?")
        if not cls.is_path_error(exc):
            return StorageError(f"cannot use {what} {where}: {exc.strerror or exc}")
        reason = cls.REASONS[exc.errno]
        if exc.errno == errno.ENOTDIR:
            # "Not a directory" is about the path itself or about a part of it.
            blocker = _file_on_the_way(Path(where))
            if blocker is not None and blocker != Path(where):
                reason = f"cannot be reached ({blocker} is a file, not a folder)"
        return cls(where, reason, what=what)

    @classmethod
    def not_utf8(cls, path: str | Path, *, what: str = "file") -> PathError:
        return cls(path, "not UTF-8 text", what=what)


def _file_on_the_way(path: Path) -> Path | None:
    """The first of ``path`` and its ancestors that exists and is not a folder."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


class DependencyMismatchError(MissingDependencyError):
    """An optional install is present but its files are not the expected ones (another
    version, or modified): "got" and "expected" digests, and the install command."""


# --- malformed input (exit 2) -----------------------------------------------------------


class MalformedInputError(EnclaveRecError):
    """Input that cannot be parsed at all."""

    exit_code = 2


class DataFormatError(MalformedInputError):
    """A malformed data line; names the file and the 1-based line number."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class MessageTooLargeError(MalformedInputError):
    """A message, or the bytes one caller has in flight, exceeds the exact maximum its
    receiver allows (refused while it streams in, before it is buffered)."""


class MalformedEvidenceError(MalformedInputError):
    """A quote, collateral or certificate that cannot be parsed."""


class WeightMappingError(MalformedInputError):
    """A model's named arrays do not match the model: a missing or unexpected name, a
    wrong shape or dtype, or non-finite values."""


class ModelFormatError(MalformedInputError):
    """A saved model folder is incomplete or its metadata cannot be read."""


class UnknownFormatError(MalformedInputError):
    """A file is not in a format this build reads: its magic bytes are not ours, or its
    format version is unknown (e.g. written by a newer release). The message says which.
    Only the magic and version are judged this way; every other byte of our own formats is
    authenticated, and a change there is an ``IntegrityError``."""


# --- verification refused (exit 3) ------------------------------------------------------


class VerificationError(EnclaveRecError):
    """Well-formed evidence or credentials refused by a named check.

    ``check`` is a stable, lower-case identifier (``tcb_status``, ``mrenclave``, ...) that
    tools may branch on; ``got`` and ``expected`` are printable and never secret.
    """

    exit_code = 3
    check: str = "verification"

    def __init__(self, message: str, *, got: Any = None, expected: Any = None):
        detail = message
        if got is not None or expected is not None:
            detail = f"{message} (got {got}, expected {expected})"
        super().__init__(detail)
        self.got = got
        self.expected = expected


class QuoteVerificationError(VerificationError):
    """dcap-qvl refused the quote (signature, chain, CRL, collateral).

    dcap-qvl's own messages are kept as context but are not an interface to branch on.
    """

    check = "dcap"


class CollateralExpiredError(VerificationError):
    """The collateral is outside its validity window, or older than the policy allows."""

    check = "collateral_validity"


class TCBStatusError(VerificationError):
    """The platform's TCB status is not one the policy allows."""

    check = "tcb_status"


class AdvisoryError(VerificationError):
    """The platform is affected by a security advisory the policy does not allow."""

    check = "advisories"


class DebugEnclaveError(VerificationError):
    """The enclave runs in DEBUG mode (its memory is readable by the host)."""

    check = "debug"


class MrEnclaveError(VerificationError):
    """MRENCLAVE is not one of the allowed measurements."""

    check = "mrenclave"


class MrSignerError(VerificationError):
    """MRSIGNER is not one of the allowed signers."""

    check = "mrsigner"


class ISVProdIDError(VerificationError):
    """ISVPRODID differs from the expected product id."""

    check = "isv_prod_id"


class ISVSVNError(VerificationError):
    """ISVSVN is below the policy's minimum security version."""

    check = "isv_svn"


class SimulatedEvidenceError(VerificationError):
    """Evidence from the simulated TEE was offered to a policy that does not allow it."""

    check = "simulated"


class KeyBindingError(VerificationError):
    """The evidence does not vouch for the key that presented it."""

    check = "key_binding"


class ReportDataError(VerificationError):
    """REPORT_DATA does not equal the hash of the claims that came with the evidence."""

    check = "report_data"


class NonceError(VerificationError):
    """The evidence is not bound to the verifier's nonce (stale or replayed)."""

    check = "nonce"


class EmptyPolicyError(VerificationError):
    """A policy with no checks refuses everything (``AllOf([])``)."""

    check = "policy"


class NoPolicyAlternativeError(VerificationError):
    """None of the alternatives of an ``AnyOf`` policy accepted the evidence; ``got``
    lists each alternative's failed check."""

    check = "any_of"


class MembershipError(VerificationError):
    """A peer is not in the membership list, or its signature does not verify."""

    check = "membership"


class CertificateError(VerificationError):
    """A certificate is expired, not yet valid, or not issued by the expected CA."""

    check = "certificate"


class ServerBindingError(VerificationError):
    """An enrollment statement names another server certificate than this server's: a
    proof made for one aggregator (or for a man in the middle) is replayed to another."""

    check = "server_binding"


class EnrollmentRefusedError(VerificationError):
    """The attested CA refused this client's enrollment; ``check`` is the server's check
    identifier (``membership``, ``mrenclave``, ``nonce``, ...) as it reported it."""

    check = "enrollment"

    def __init__(self, message: str, *, check: str = "enrollment"):
        super().__init__(message)
        self.check = check


class RequestRefusedError(VerificationError):
    """An attested server refused an enrolled peer's request: the peer is not a member of
    this job in that role, its enclave is not the one pinned for its id, or it asked for
    another job's secrets. ``check`` is the server's check identifier."""

    check = "request"

    def __init__(self, message: str, *, check: str = "request"):
        super().__init__(message)
        self.check = check


class UnsafeManifestError(VerificationError):
    """A Gramine manifest holds an option that weakens the enclave (an ``insecure__`` key,
    arguments or environment from the host, DEBUG, a non-strict file check policy, ...) or
    lacks one it must state explicitly; the message lists every problem."""

    check = "gramine_manifest"


# --- integrity (exit 4) -----------------------------------------------------------------


class IntegrityError(EnclaveRecError):
    """Ciphertext failed authentication: tampered, truncated, reordered, replayed, or the
    wrong key. Deliberately opaque (see pyca/cryptography's ``InvalidTag``)."""

    exit_code = 4


# --- runtime (exit 1) -------------------------------------------------------------------


class TransportError(EnclaveRecError):
    """A peer could not be reached or an RPC failed."""


class PeerNotAttestedError(TransportError):
    """A peer presented no credentials, or credentials that were never verified."""


class ServerBusyError(TransportError):
    """The server refused the call because it is at its bound of calls in progress
    (gRPC RESOURCE_EXHAUSTED): nothing was done; retry later."""


class BarrierTimeoutError(TransportError):
    """A distributed training step's barrier did not pass before its deadline (a worker
    or parameter server stopped answering)."""


class StorageError(EnclaveRecError):
    """A file could not be read or written (permissions, disk full, I/O error)."""


class AggregationRefusedError(EnclaveRecError):
    """An update was refused by the aggregation pre-check (names, shapes, dtypes,
    non-finite values, norm bound, total weight, round)."""


class NonFiniteError(AggregationRefusedError):
    """A number a peer sent, or the result of combining what peers sent, is not finite:
    refused, and the model stays as it was."""


class StaleUpdateError(AggregationRefusedError):
    """An update computed from another model version (or another incarnation of the
    service, after a restart): not the contributor's fault; it should pull and retry."""


class TEEError(EnclaveRecError):
    """The TEE could not produce evidence or keys (e.g. ``/dev/attestation`` failed)."""


class TrainingError(EnclaveRecError):
    """Training could not proceed (diverged, no data in a split, ...)."""


class MetricsReportError(EnclaveRecError):
    """A metrics report lacks a key the contract requires (DESIGN.md §4) or holds a value
    of the wrong type: a defect of the code that built it, not of the user's input."""
