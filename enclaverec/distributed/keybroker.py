"""The key broker (an enclave role, one per job): the job's attested CA, the keeper of its
data key, and its coordinator.

1. Workers and parameter servers enroll with its attested CA; their evidence must meet the
   job's member policy, and every later call must come from the enclave pinned for the
   caller's id (``JobConfig.members``), so one member cannot act as another.
2. The owner attests it over RA-TLS and submits the data key, signed with the owner's key
   from the measured configuration (:func:`submission_statement`).
3. It releases the data key to verified workers of this job only, each release recorded in
   the audit log (who, which certificate, which measurement; never the key).
4. It closes epochs: workers send their validation and test scores; it computes the exact
   AUC over the union inside the enclave (``evaluation``, numpy), keeps the best epoch,
   decides early stopping, and tells workers and servers to continue or stop.
5. At the end the parameter servers send their shards of the best model; it assembles and
   checks them and encrypts model and metrics to the owner's public key
   (``distributed.result``).

Its state (data key, history, result) is sealed after every change (``tee.sealing``), so a
killed key broker resumes where it was; with ``--tee none`` nothing is written.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import cbor2
import grpc
import numpy as np

from enclaverec.arrays import Arrays, ModelLayout
from enclaverec.audit import AuditLog
from enclaverec.crypto import keys
from enclaverec.crypto.signing import verify_raw
from enclaverec.data.schema import split_sha256
from enclaverec.distributed.config import JobConfig
from enclaverec.distributed.result import seal_result
from enclaverec.errors import (
    ConfigError,
    EnclaveRecError,
    IntegrityError,
    MalformedInputError,
    TrainingError,
)
from enclaverec.evaluation import binary_metrics
from enclaverec.tee.attested_ca import EnrollmentConfig, PeerIdentity
from enclaverec.tee.backend import EvidenceBackend
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.policy import Policy
from enclaverec.tee.sealing import seal_file, unseal_file
from enclaverec.tee.verifier_context import VerifierContext
from enclaverec.transport import tensors
from enclaverec.transport.endpoints import ServerEndpoints
from enclaverec.transport.proto import keybroker_pb2, keybroker_pb2_grpc, tensors_pb2
from enclaverec.transport.server import (
    AttestedServer,
    ListenConfig,
    ServerIdentity,
    ServerIdentityConfig,
)
from enclaverec.transport.serving import long_poll_seconds

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
STATE_FILE = "keybroker.sealed"
SEALING_LABEL = "keybroker"
STATE_PURPOSE = "keybroker/state"
SUBMIT_LABEL = "enclaverec submit v1"
CHECK_METADATA = "enclaverec-check"
NO_CERTIFICATE = bytes(32)
"""What the submission statement names as the key broker's certificate with ``--tee
none`` (there is none; the baseline is loopback only and says so)."""
MAX_WAIT_SECONDS = 30.0
MAX_EVALUATION_BYTES = 512 << 20


def submission_statement(
    job: str,
    dataset_id: bytes,
    server_certificate_sha256: bytes,
    data_key: bytes,
    paramserver_mrenclaves: Mapping[str, bytes],
) -> bytes:
    """What the owner signs: canonical CBOR of the label, the job, the data set id, the
    key broker certificate it attested (so the submission cannot be relayed to another
    key broker), the data key's SHA-256 (so it cannot be moved to another key) and the
    parameter servers' measurements (so no one else chooses which servers hold the
    model)."""
    return cbor2.dumps(
        [
            SUBMIT_LABEL,
            job,
            dataset_id,
            server_certificate_sha256,
            hashlib.sha256(data_key).digest(),
            sorted([member, value] for member, value in paramserver_mrenclaves.items()),
        ],
        canonical=True,
    )


# --- state ---------------------------------------------------------------------------------


@dataclass
class EpochRecord:
    epoch: int
    val_auc: float
    val_logloss: float
    test_auc: float
    test_logloss: float
    test_accuracy: float
    test_rows: int
    test_split_sha256: str
    steps: int
    wall_seconds: float
    train_samples: int
    train_seconds: float
    bytes_per_step_per_worker: float

    def history_entry(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "val_auc": self.val_auc,
            "val_logloss": self.val_logloss,
            "wall_seconds": self.wall_seconds,
            "steps": self.steps,  # the global step count after the epoch (not a unit key)
        }


@dataclass
class BrokerState:
    """Everything the key broker must not lose; sealed after each change."""

    data_key: bytes | None = field(default=None, repr=False)
    paramserver_pins: dict[str, bytes] = field(default_factory=dict)
    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    stopped: bool = False
    failure: str | None = None
    result: bytes | None = field(default=None, repr=False)
    released_to: list[str] = field(default_factory=list)
    restarts: int = 0

    def to_bytes(self) -> bytes:
        return cbor2.dumps(
            {
                "v": 1,
                "data_key": self.data_key,
                "paramserver_pins": self.paramserver_pins,
                "epochs": [vars(record) for record in self.epochs],
                "best_epoch": self.best_epoch,
                "stopped": self.stopped,
                "failure": self.failure,
                "result": self.result,
                "released_to": self.released_to,
                "restarts": self.restarts,
            },
            canonical=True,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> BrokerState:
        value = cbor2.loads(data)
        if not isinstance(value, dict) or value.get("v") != 1:
            raise IntegrityError("the key broker's sealed state is not version 1")
        return cls(
            data_key=value["data_key"],
            paramserver_pins=dict(value["paramserver_pins"]),
            epochs=[EpochRecord(**record) for record in value["epochs"]],
            best_epoch=value["best_epoch"],
            stopped=value["stopped"],
            failure=value["failure"],
            result=value["result"],
            released_to=list(value["released_to"]),
            restarts=int(value["restarts"]),
        )


@dataclass(frozen=True)
class _Evaluation:
    steps: int
    train_seconds: float
    train_samples: int
    validation_scores: np.ndarray
    validation_labels: np.ndarray
    test_scores: np.ndarray
    test_labels: np.ndarray
    test_row_ids: np.ndarray
    bytes_moved: int


def _array(data: bytes, dtype: str, what: str) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    if len(data) % size:
        raise MalformedInputError(f"{what}: not a whole number of {dtype} values")
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)


def _decode_evaluation(payload: keybroker_pb2.EvaluationPayload) -> _Evaluation:
    """Parse and check a worker's scores (trust no number a peer sends)."""
    evaluation = _Evaluation(
        steps=int(payload.steps),
        train_seconds=float(payload.train_seconds),
        train_samples=int(payload.train_samples),
        validation_scores=_array(payload.validation_scores, "float32", "validation scores"),
        validation_labels=_array(payload.validation_labels, "float32", "validation labels"),
        test_scores=_array(payload.test_scores, "float32", "test scores"),
        test_labels=_array(payload.test_labels, "float32", "test labels"),
        test_row_ids=_array(payload.test_row_ids, "int64", "test row ids"),
        bytes_moved=int(payload.bytes_pushed) + int(payload.bytes_pulled),
    )
    if len(evaluation.validation_scores) != len(evaluation.validation_labels):
        raise MalformedInputError("validation scores and labels differ in length")
    if (
        not len(evaluation.test_scores)
        == len(evaluation.test_labels)
        == len(evaluation.test_row_ids)
    ):
        raise MalformedInputError("test scores, labels and row ids differ in length")
    for what in ("validation", "test"):
        scores = getattr(evaluation, f"{what}_scores")
        labels = getattr(evaluation, f"{what}_labels")
        if not np.isfinite(scores).all() or (
            len(scores) and (scores.min() < 0 or scores.max() > 1)
        ):
            raise MalformedInputError(f"{what} scores must be probabilities in [0, 1]")
        if not np.isin(labels, (0.0, 1.0)).all():
            raise MalformedInputError(f"{what} labels must be 0 or 1")
    if not (np.isfinite(evaluation.train_seconds) and evaluation.train_seconds >= 0):
        raise MalformedInputError("train_seconds must be finite and non-negative")
    return evaluation


# --- the key broker -----------------------------------------------------------------------


def directive_after(epoch: int, *, closed: int, stopped: bool, failed: bool) -> int | None:
    """What a member that finished ``epoch`` does next, given the epochs the broker closed:
    CONTINUE, STOP, or None while ``epoch`` is open. A member can ask late (it waited out
    a broker restart while the others went on): an epoch before the last closed one was
    followed by another, so the answer is CONTINUE even once the job stopped; only the
    last closed epoch (or a failed job) says STOP."""
    if failed:
        return keybroker_pb2.STOP
    if epoch < closed:
        return keybroker_pb2.CONTINUE
    if stopped:
        return keybroker_pb2.STOP
    return keybroker_pb2.CONTINUE if epoch == closed else None


class KeyBroker:
    """One job's key broker. ``backend`` is None only for ``--tee none``."""

    def __init__(
        self,
        config: JobConfig,
        *,
        backend: EvidenceBackend | None,
        state_dir: Path,
        listen: ListenConfig,
        member_verification: VerifierContext | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (backend is None) != (config.tee is TEEKind.NONE):
            raise ConfigError("a TEE backend is needed exactly when the job's tee is not none")
        self.config = config
        self.backend = backend
        self.clock = clock
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.audit = AuditLog(self.state_dir / AUDIT_FILE)
        self.owner_key = keys.parse_public_key_pem(
            config.owner_public_key.encode(), source=f"{config.source} [owner] public_key"
        )
        self._sealing_key = backend.sealing_key(SEALING_LABEL) if backend is not None else None
        self.state = self._load_state()
        self._cond = threading.Condition()
        self._evaluations: dict[int, dict[str, _Evaluation]] = {}
        self._shards: dict[str, tuple[Arrays, dict[str, Any]]] = {}
        self._attested: dict[str, PeerIdentity] = {}
        self._started = time.perf_counter()
        self._fetched = threading.Event()
        self._layout: ModelLayout | None = None
        self.server = self._make_server(listen, member_verification)
        keybroker_pb2_grpc.add_KeyBrokerServicer_to_server(
            _KeyBrokerServicer(self), self.server.application_server
        )
        owner_port = self.server.enrollment_server or self.server.application_server
        keybroker_pb2_grpc.add_OwnerServicer_to_server(_OwnerServicer(self), owner_port)

    # --- set-up ----------------------------------------------------------------------------

    def _make_server(
        self, listen: ListenConfig, verification: VerifierContext | None
    ) -> AttestedServer:
        options = [("grpc.max_receive_message_length", 8 << 20)]
        members = sorted(self.config.members)
        if self.backend is None:
            return AttestedServer.unsafe_plaintext_baseline(
                listen, parties=members, application_options=options
            )
        identity = ServerIdentity(
            self.backend, ServerIdentityConfig(self.state_dir, common_name="keybroker")
        )
        # Members prove themselves by evidence alone, each from the enclave pinned for its
        # id (refused at enrollment; every call checks the pin again in ``member``).
        enrollment = EnrollmentConfig(
            membership={member: None for member in members},
            require_membership_signature=False,
            require_evidence=True,
            pinned_mrenclave=self._enrollment_pin,
            member_policy=self._role_policies(),
        )
        return AttestedServer.create(
            identity,
            enrollment,
            listen,
            evidence_verification=verification,
            audit=self.audit.enrollment,
            refused=lambda party, check, detail: self.audit.write(
                "enrollment_refused", party=party, check=check, reason=detail
            ),
            application_options=options,
        )

    def _role_policies(self) -> Callable[[str], Policy | None]:
        """Each member id's own role policy (built once): the broker's joiners' policy
        accepts workers and servers alike, and a server's id has no MRENCLAVE pin until the
        owner submits, so without this a worker's enclave could enroll under a server's id
        before then."""
        by_role = {
            role: spec.build()
            for role, spec in (
                ("worker", self.config.worker_policy),
                ("paramserver", self.config.paramserver_policy),
            )
            if spec is not None
        }

        def of_member(member: str) -> Policy | None:
            pin = self.config.members.get(member)
            return by_role.get(pin.role) if pin is not None else None

        return of_member

    def _enrollment_pin(self, member: str) -> bytes | None:
        """The MRENCLAVE ``member`` must enroll with: a worker's from ``job.toml``, a
        server's from the owner's submission (None before it: a server enrolls before the
        owner submits, and its calls are refused until then and checked against it after)."""
        pin = self.config.members.get(member)
        if pin is None:
            return None
        if pin.role == "paramserver":
            with self._cond:
                return self.state.paramserver_pins.get(member)
        return pin.mrenclave

    def _load_state(self) -> BrokerState:
        path = self.state_dir / STATE_FILE
        if self._sealing_key is None or not path.exists():
            return BrokerState()
        # A state that does not unseal (modified, or another measurement's) stops the
        # start with the integrity exit code rather than silently starting over.
        state = BrokerState.from_bytes(unseal_file(path, self._sealing_key, STATE_PURPOSE))
        state.restarts += 1
        log.info(
            "resumed from sealed state: key %s, %d epoch(s) closed",
            "held" if state.data_key else "not yet submitted",
            len(state.epochs),
        )
        self.audit.write("resumed", epochs=len(state.epochs), restarts=state.restarts)
        return state

    def _seal(self) -> None:
        if self._sealing_key is None:
            return  # --tee none: nothing may be written in plaintext, and nothing sealed
        seal_file(
            self.state_dir / STATE_FILE, self._sealing_key, STATE_PURPOSE, self.state.to_bytes()
        )

    @property
    def layout(self) -> ModelLayout:
        if self._layout is None:
            self._layout = self.config.plan.initial_model()[1]
        return self._layout

    # --- running ---------------------------------------------------------------------------

    def start(self) -> ServerEndpoints:
        endpoints = self.server.start()
        self.audit.write(
            "started",
            job=self.config.name,
            mrenclave=self.backend.measurement().hex() if self.backend else None,
            application_port=endpoints.application_port,
            enrollment_port=endpoints.enrollment_port,
        )
        return endpoints

    def wait_fetched(self, timeout: float | None = None) -> bool:
        """Until the owner fetched the result (True) or ``timeout`` passed (False)."""
        return self._fetched.wait(timeout)

    def stop(self, grace: float | None = 1.0) -> None:
        self.server.stop(grace)

    @property
    def finished(self) -> bool:
        with self._cond:
            return self.state.result is not None or self.state.failure is not None

    # --- members ---------------------------------------------------------------------------

    def member(self, context: grpc.ServicerContext, role: str) -> PeerIdentity:
        """The caller, if it is this job's member in ``role`` running the enclave pinned
        for its id; otherwise the call is refused (PERMISSION_DENIED with the check)."""
        identity = self.server.peer_identity(context)
        pin = self.config.members.get(identity.party_id)
        if pin is None or pin.role != role:
            self._refuse(context, identity.party_id, "role", f"not a {role} of this job")
        expected = pin.mrenclave
        if role == "paramserver" and self.config.tee is not TEEKind.NONE:
            # Servers are pinned by the owner's submission (job.toml cannot hold them).
            with self._cond:
                submitted = self.state.data_key is not None
                expected = self.state.paramserver_pins.get(identity.party_id)
            if not submitted:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION, "the owner has not submitted the job yet"
                )
        if expected is not None and (
            identity.mrenclave is None or not hmac.compare_digest(identity.mrenclave, expected)
        ):
            self._refuse(
                context,
                identity.party_id,
                "mrenclave",
                f"enrolled with MRENCLAVE "
                f"{identity.mrenclave.hex() if identity.mrenclave else 'none'}, expected "
                f"{expected.hex()} for {identity.party_id}",
            )
        if identity.authenticated:
            with self._cond:
                self._attested.setdefault(identity.party_id, identity)
        return identity

    def _refuse(
        self, context: grpc.ServicerContext, who: str, check: str, message: str
    ) -> NoReturn:
        self.audit.write("refused", member=who, check=check, reason=message)
        log.warning("refused %s (%s): %s", who, check, message)
        context.set_trailing_metadata(((CHECK_METADATA, check),))
        context.abort(grpc.StatusCode.PERMISSION_DENIED, f"refused ({check}): {message}")
        raise AssertionError("unreachable")  # pragma: no cover - abort raises

    def release_key(
        self, context: grpc.ServicerContext, job: str
    ) -> tuple[bytes, bytes, dict[str, bytes]]:
        identity = self.member(context, "worker")
        if job != self.config.name:
            self._refuse(
                context,
                identity.party_id,
                "job",
                f"asked for job {job!r}, this is {self.config.name!r}",
            )
        with self._cond:
            key = self.state.data_key
            if key is None:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION, "the owner has not submitted the job yet"
                )
            if identity.party_id not in self.state.released_to:
                self.state.released_to.append(identity.party_id)
                self._seal()
        self.audit.write(
            "key_released",
            worker=identity.party_id,
            certificate_sha256=identity.certificate_sha256,
            mrenclave=identity.mrenclave.hex() if identity.mrenclave else None,
            simulated_evidence=identity.simulated_evidence,
            authenticated=identity.authenticated,
        )
        with self._cond:
            pins = dict(self.state.paramserver_pins)
        return key, self.config.dataset_id, pins

    # --- the owner -------------------------------------------------------------------------

    def server_certificate_sha256s(self) -> frozenset[bytes]:
        identity = self.server.identity
        if identity is None:
            return frozenset({NO_CERTIFICATE})
        return identity.accepted_certificate_digests()

    def submit(self, request: keybroker_pb2.SubmitRequest, context: grpc.ServicerContext) -> bool:
        """Accept the owner's data key if the owner's signature verifies; True when the
        same key was submitted before (a retry)."""

        def refuse(check: str, message: str) -> NoReturn:
            self.audit.write("submit_refused", check=check, reason=message)
            context.set_trailing_metadata(((CHECK_METADATA, check),))
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"submission refused ({check}): {message}"
            )
            raise AssertionError("unreachable")  # pragma: no cover

        if request.job != self.config.name:
            refuse(
                "job", f"the submission is for job {request.job!r}, this is {self.config.name!r}"
            )
        if request.dataset_id != self.config.dataset_id:
            refuse("dataset", "the submission names another data set than the job's")
        if len(request.data_key) != 32:
            refuse("malformed", "a data key has 32 bytes")
        if not any(
            hmac.compare_digest(request.server_certificate_sha256, digest)
            for digest in self.server_certificate_sha256s()
        ):
            refuse("server_binding", "the submission names another key broker's certificate")
        pins = dict(request.paramserver_mrenclaves)
        if self.config.tee is not TEEKind.NONE and (
            set(pins) - set(self.config.paramservers)
            or any(len(value) != 32 for value in pins.values())
        ):
            refuse("malformed", "parameter server pins must name this job's servers")
        statement = submission_statement(
            request.job,
            request.dataset_id,
            request.server_certificate_sha256,
            request.data_key,
            pins,
        )
        if not verify_raw(self.owner_key, statement, request.owner_signature):
            refuse("owner_signature", "not signed by the owner key in the job's configuration")
        with self._cond:
            if self.state.data_key is not None:
                if not hmac.compare_digest(self.state.data_key, request.data_key) or (
                    pins != self.state.paramserver_pins
                ):
                    refuse("already_submitted", "the job already holds another submission")
                return True
            self.state.data_key = bytes(request.data_key)
            self.state.paramserver_pins = {member: bytes(v) for member, v in pins.items()}
            self._seal()
            self._cond.notify_all()
        self.audit.write("submitted", job=self.config.name, dataset_id=self.config.dataset_id.hex())
        return False

    def status(self) -> dict[str, Any]:
        """Progress only: no metric, key or weight (the caller is not authenticated)."""
        with self._cond:
            state = self.state
            return {
                "job": self.config.name,
                "submitted": state.data_key is not None,
                "epochs_closed": len(state.epochs),
                "steps": state.epochs[-1].steps if state.epochs else 0,
                "stopped": state.stopped,
                "finished": state.result is not None,
                "failed": state.failure is not None,
                "keys_released": sorted(state.released_to),
                "members_seen": sorted(self._attested),
                "restarts": state.restarts,
            }

    def fetch_result(self) -> bytes:
        with self._cond:
            result = self.state.result
            failure = self.state.failure
        if failure is not None:
            raise TrainingError(f"the job failed: {failure}")
        if result is None:
            raise TrainingError("the job has not finished yet")
        self.audit.write("result_fetched", bytes=len(result))
        self._fetched.set()
        return result

    # --- epochs ----------------------------------------------------------------------------

    def submit_evaluation(self, worker: str, payload: keybroker_pb2.EvaluationPayload) -> None:
        epoch = int(payload.epoch)
        try:
            evaluation = _decode_evaluation(payload)
            self._check_counts(evaluation, epoch)
        except MalformedInputError as exc:
            self.audit.write("refused", member=worker, check="evaluation", reason=str(exc))
            log.warning("refused %s's evaluation: %s", worker, exc)
            raise
        with self._cond:
            closed = len(self.state.epochs)
            if epoch <= closed:
                return  # a retry after the epoch closed (e.g. across a restart)
            if epoch != closed + 1 or self.state.stopped:
                raise MalformedInputError(f"epoch {epoch} is not the open epoch {closed + 1}")
            self._evaluations.setdefault(epoch, {})[worker] = evaluation
            if set(self._evaluations[epoch]) == set(self.config.workers):
                self._close_epoch(epoch, self._evaluations.pop(epoch))
                self._cond.notify_all()

    def _check_counts(self, evaluation: _Evaluation, epoch: int) -> None:
        """A worker's step and row counts go into the owner's metrics: bounded by the plan
        (an epoch's evaluation follows its last step; a worker trains on at most the
        training rows per epoch)."""
        plan = self.config.plan
        last_step = min(epoch, plan.epochs) * plan.schedule().steps_per_epoch
        if evaluation.steps > last_step:
            raise MalformedInputError(
                f"steps {evaluation.steps} beyond epoch {epoch}'s last step {last_step}"
            )
        if evaluation.train_samples > plan.train_rows:
            raise MalformedInputError(
                f"train_samples {evaluation.train_samples} above the plan's "
                f"{plan.train_rows} training rows"
            )

    def _close_epoch(self, epoch: int, parts: dict[str, _Evaluation]) -> None:
        ordered = [parts[worker] for worker in self.config.workers]
        ids = np.concatenate([part.test_row_ids for part in ordered])
        digest = split_sha256(ids)
        try:
            if len(np.unique(ids)) != len(ids) or digest != self.config.test_split_sha256:
                raise TrainingError(
                    "the workers' test rows are not the job's test split "
                    f"(got {digest}, expected {self.config.test_split_sha256})"
                )
            validation = binary_metrics(
                np.concatenate([p.validation_labels for p in ordered]),
                np.concatenate([p.validation_scores for p in ordered]),
            )
            test = binary_metrics(
                np.concatenate([p.test_labels for p in ordered]),
                np.concatenate([p.test_scores for p in ordered]),
            )
        except TrainingError as exc:
            self.state.failure = str(exc)
            self.state.stopped = True
            self._seal()
            self.audit.write("failed", epoch=epoch, reason=str(exc))
            return
        steps = max(part.steps for part in ordered)
        previous_steps = self.state.epochs[-1].steps if self.state.epochs else 0
        step_count = max(1, steps - previous_steps)
        record = EpochRecord(
            epoch=epoch,
            val_auc=validation.auc,
            val_logloss=validation.logloss,
            test_auc=test.auc,
            test_logloss=test.logloss,
            test_accuracy=test.accuracy,
            test_rows=test.rows,
            test_split_sha256=digest,
            steps=steps,
            wall_seconds=time.perf_counter() - self._started,
            train_samples=sum(part.train_samples for part in ordered),
            train_seconds=max(part.train_seconds for part in ordered),
            bytes_per_step_per_worker=sum(p.bytes_moved for p in ordered)
            / step_count
            / len(ordered),
        )
        best = self.best_record()
        self.state.epochs.append(record)
        if best is None or record.val_auc > best.val_auc:
            self.state.best_epoch = epoch
        since_best = epoch - (self.state.best_epoch or epoch)
        patience = self.config.plan.patience
        if epoch >= self.config.plan.epochs or (patience is not None and since_best >= patience):
            self.state.stopped = True
        # Seal, then announce: what the audit log reports survives a crash.
        self._seal()
        self.audit.write(
            "epoch_closed",
            epoch=epoch,
            steps=steps,
            improved=self.state.best_epoch == epoch,
            stop=self.state.stopped,
        )

    def best_record(self) -> EpochRecord | None:
        for record in self.state.epochs:
            if record.epoch == self.state.best_epoch:
                return record
        return None

    def directive(self, epoch: int, wait_seconds: float) -> tuple[int, int]:
        """(kind, best epoch) after ``epoch``: CONTINUE, STOP, or WAIT while the epoch
        is open (long poll up to ``wait_seconds``)."""
        deadline = time.monotonic() + long_poll_seconds(wait_seconds, MAX_WAIT_SECONDS)
        with self._cond:
            while True:
                best = self.state.best_epoch or 0
                kind = directive_after(
                    epoch,
                    closed=len(self.state.epochs),
                    stopped=self.state.stopped,
                    failed=self.state.failure is not None,
                )
                if kind is not None:
                    return kind, best
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return keybroker_pb2.WAIT, best
                self._cond.wait(remaining)

    # --- the model -------------------------------------------------------------------------

    def submit_model_shard(self, server: str, bundle: tensors_pb2.ArrayBundle) -> None:
        """A parameter server's part of the best model: dense arrays (from the dense
        shard) and table rows. Checked against the layout, then, once every server sent
        its part, assembled, and encrypted to the owner."""
        dense, sparse = tensors.decode_bundle(bundle)
        layout = self.layout
        for name, value in dense.items():
            spec = layout.specs.get(name)
            if spec is None or spec.table or tuple(value.shape) != spec.shape:
                raise MalformedInputError(f"{name}: not a dense array of the model's layout")
        for name, rows in sparse.items():
            spec = layout.specs.get(name)
            if spec is None or not spec.table:
                raise MalformedInputError(f"{name}: not a table of the model's layout")
            if rows.values.shape[1:] != spec.shape[1:] or (
                len(rows.row_ids)
                and (rows.row_ids.min() < 0 or rows.row_ids.max() >= spec.shape[0])
            ):
                raise MalformedInputError(f"{name}: rows outside the table")
        for part in (*dense.values(), *(rows.values for rows in sparse.values())):
            if not np.isfinite(part).all():
                raise MalformedInputError("a model shard holds non-finite values")
        with self._cond:
            if not self.state.stopped or self.state.result is not None:
                raise MalformedInputError("model shards are taken once, after the last epoch")
            self._shards[server] = (dense, {n: r for n, r in sparse.items()})
            if set(self._shards) == set(self.config.paramservers):
                self._finish()
                self._cond.notify_all()

    def _finish(self) -> None:
        layout = self.layout
        model: Arrays = {}
        covered: dict[str, np.ndarray] = {}
        for dense, sparse in self._shards.values():
            for name, value in dense.items():
                if name in model:
                    raise MalformedInputError(f"{name}: sent by two servers")
                model[name] = value
            for name, rows in sparse.items():
                table = model.setdefault(name, np.zeros(layout.specs[name].shape, np.float32))
                seen = covered.setdefault(name, np.zeros(layout.specs[name].shape[0], np.int32))
                table[rows.row_ids] = rows.values
                np.add.at(seen, rows.row_ids, 1)
        missing = [name for name in layout.names if name not in model]
        partial = [name for name, seen in covered.items() if not (seen == 1).all()]
        if missing or partial:
            self.state.failure = (
                f"the servers' shards do not make the model (missing {missing}, rows not "
                f"covered exactly once in {partial})"
            )
            self._seal()
            self.audit.write("failed", reason=self.state.failure)
            return
        self.state.result = seal_result(self.config.name, self.metrics(), model, self.owner_key)
        self._seal()
        self.audit.write(
            "finished", best_epoch=self.state.best_epoch, result_bytes=len(self.state.result)
        )

    def metrics(self) -> dict[str, Any]:
        """The §4 metrics of the job (inside the result; never written in the clear)."""
        plan = self.config.plan
        best = self.best_record()
        if best is None:
            raise TrainingError("no epoch was closed")
        records = self.state.epochs
        train_seconds = sum(record.train_seconds for record in records)
        samples = sum(record.train_samples for record in records)
        return {
            "mode": "distributed",
            "tee": self.config.tee.value,
            "dataset": plan.dataset,
            "preset": plan.preset,
            "optimizer": plan.optimizer,
            "seed": plan.seed,
            "test_auc": best.test_auc,
            "test_logloss": best.test_logloss,
            "test_accuracy": best.test_accuracy,
            "test_rows": best.test_rows,
            "test_split_sha256": best.test_split_sha256,
            "best_epoch": best.epoch,
            "history": [record.history_entry() for record in records],
            "train_samples_per_second": samples / train_seconds if train_seconds > 0 else 0.0,
            "wall_seconds": records[-1].wall_seconds,
            "workers": len(plan.workers),
            "paramservers": len(plan.paramservers),
            "training_mode": plan.mode.value,
            "steps_completed": records[-1].steps,
            "epochs_completed": len(records),
            "attested_peers": sum(1 for peer in self._attested.values() if peer.authenticated),
            "bytes_per_step_per_worker": records[-1].bytes_per_step_per_worker,
            "batch_size": plan.batch_size,
            "learning_rate": plan.learning_rate,
            "keybroker_restarts": self.state.restarts,
        }


# --- servicers ------------------------------------------------------------------------------


def _guard(context: grpc.ServicerContext, action: Callable[[], Any]) -> Any:
    """Run ``action``, turning a malformed request into INVALID_ARGUMENT and a failed job
    into FAILED_PRECONDITION (never a traceback to the peer)."""
    try:
        return action()
    except MalformedInputError as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except TrainingError as exc:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    except EnclaveRecError as exc:
        log.exception("request failed")
        context.abort(grpc.StatusCode.INTERNAL, type(exc).__name__)


class _KeyBrokerServicer(keybroker_pb2_grpc.KeyBrokerServicer):
    def __init__(self, broker: KeyBroker) -> None:
        self._broker = broker

    def ReleaseKey(self, request, context):  # noqa: N802 - gRPC method name
        key, dataset_id, pins = self._broker.release_key(context, request.job)
        return keybroker_pb2.ReleaseKeyReply(
            data_key=key, dataset_id=dataset_id, paramserver_mrenclaves=pins
        )

    def SubmitEvaluation(self, request_iterator, context):  # noqa: N802
        worker = self._broker.member(context, "worker").party_id

        def run() -> None:
            payload = tensors.from_chunks(
                request_iterator, keybroker_pb2.EvaluationPayload, max_bytes=MAX_EVALUATION_BYTES
            )
            self._broker.submit_evaluation(worker, payload)

        _guard(context, run)
        return keybroker_pb2.EvaluationReply()

    def GetDirective(self, request, context):  # noqa: N802
        identity = self._broker.server.peer_identity(context)
        pin = self._broker.config.members.get(identity.party_id)
        # Workers and parameter servers both follow the epochs.
        self._broker.member(context, pin.role if pin is not None else "worker")
        kind, best = self._broker.directive(int(request.epoch), float(request.wait_seconds))
        return keybroker_pb2.Directive(kind=kind, best_epoch=best)

    def SubmitModelShard(self, request_iterator, context):  # noqa: N802
        server = self._broker.member(context, "paramserver").party_id

        def run() -> None:
            bundle = tensors.from_chunks(request_iterator, tensors_pb2.ArrayBundle)
            self._broker.submit_model_shard(server, bundle)

        _guard(context, run)
        return keybroker_pb2.ModelShardReply()


class _OwnerServicer(keybroker_pb2_grpc.OwnerServicer):
    def __init__(self, broker: KeyBroker) -> None:
        self._broker = broker

    def Submit(self, request, context):  # noqa: N802
        again = self._broker.submit(request, context)
        return keybroker_pb2.SubmitReply(already_submitted=again)

    def Status(self, request, context):  # noqa: N802
        return keybroker_pb2.StatusReply(status_json=json.dumps(self._broker.status()))

    def FetchResult(self, request, context):  # noqa: N802
        blob = _guard(context, self._broker.fetch_result)
        # Raw bytes travel as one uint8 tensor in Chunk frames (results can be large).
        yield from tensors.to_chunks(
            tensors_pb2.Tensor(name="result", dtype="uint8", shape=[len(blob)], data=blob)
        )
