"""The parameter-server role (an enclave, P per job): serve one shard of the model to the
job's workers over attested mutual TLS, apply the optimizer, seal checkpoints, follow the
key broker's epochs, and hand it this shard of the best model at the end.

1. Opens its evidence backend over ``paramserver.toml`` (its measurement) and enrolls with
   the key broker (whose evidence must meet the exact MRENCLAVE the file pins).
2. Builds its :class:`~enclaverec.paramservice.shard.ShardServer` from the measured plan
   (the initial model from the seed: nothing to ship) and resumes from its sealed
   checkpoint if there is one (a checkpoint that does not unseal stops the start, exit 4).
3. Serves the shard on its own attested server: workers enroll with its CA, their
   evidence checked against the worker policy of the file (the workers' MRENCLAVEs) and,
   per worker id, against the MRENCLAVE the file pins for that id (``[workers]``).
4. After each epoch's last step it keeps a copy of its shard, asks the key broker whether
   to continue, keeps only the best epoch's copy (sealed, so a restart keeps it), and on
   STOP sends that copy to the key broker (``SubmitModelShard``), in global row ids.

A worker that stops pushing stalls the barrier: the server waits up to the plan's
``worker_deadline_seconds`` without progress for its restart, then fails with a clear
error (docs/decisions.md, "A missing worker in synchronous mode").

No TensorFlow here (nor anywhere this imports): this runs inside an enclave whose image
should stay small.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enclaverec.arrays import Arrays, SparseRows
from enclaverec.audit import AuditLog
from enclaverec.distributed.config import ParamServerConfig
from enclaverec.distributed.members import call_keybroker, keybroker_session, next_directive
from enclaverec.errors import StaleUpdateError, TrainingError
from enclaverec.paramservice import checkpoint as archive
from enclaverec.paramservice.optimizers import ServerOptimizerKind
from enclaverec.paramservice.shard import (
    ShardConfig,
    ShardServer,
    SyncMode,
    resume_sealed,
    sealed_checkpoint_reader,
    sealed_checkpointer,
)
from enclaverec.paramservice.shard_rpc import SHARD_SERVER_OPTIONS, serve_shard
from enclaverec.tee.attested_ca import EnrollmentConfig
from enclaverec.tee.role_setup import role_backend, verifier_context
from enclaverec.transport import tensors
from enclaverec.transport.proto import keybroker_pb2_grpc
from enclaverec.transport.server import (
    AttestedServer,
    ListenConfig,
    ServerIdentity,
    ServerIdentityConfig,
)
from enclaverec.transport.session import Session

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
CHECKPOINT_FILE = "shard.sealed"
BEST_FILE = "best.sealed"
SEALING_LABEL = "paramserver"
BEST_PURPOSE = "distributed/paramserver-best"
STATE_DIR = "state"
PROGRESS_POLL_SECONDS = 1.0
START_GRACE_SECONDS = 600.0
"""How long a server waits for its first step (workers start, attest and load their model
first); after that, the plan's worker deadline bounds each wait."""


def shard_config(config: ParamServerConfig) -> ShardConfig:
    """What this server's shard does, all from the measured plan."""
    plan = config.plan
    return ShardConfig(
        shard=config.shard_index,
        shard_map=plan.data_shard_map(),
        workers=plan.workers,
        optimizer=ServerOptimizerKind(plan.optimizer),
        learning_rate=plan.learning_rate,
        schedule=plan.schedule(),
        mode=SyncMode(plan.mode.value),
        staleness=plan.max_staleness,
        checkpoint_every=plan.checkpoint_every,
    )


@dataclass(frozen=True)
class ParamServerResult:
    """How the role ended: the steps applied, the best epoch sent, checkpoints sealed."""

    paramserver_id: str
    applied_step: int
    best_epoch: int
    resumed_from_step: int | None
    checkpoints: int


class ParamServer:
    """One parameter server of a job (see the module docstring). ``listen`` overrides the
    host of the measured address (never the port: that is measured)."""

    def __init__(
        self,
        config_path: Path,
        *,
        state_dir: Path | None = None,
        listen_host: str | None = None,
        attestation_dir: Path | None = None,
    ) -> None:
        self.config = config = ParamServerConfig.load(config_path)
        self.state_dir = Path(state_dir or config_path.parent / STATE_DIR)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.audit = AuditLog(self.state_dir / AUDIT_FILE)
        self.backend = role_backend(
            "paramserver", config.tee, config.raw, config.simulation_dir, attestation_dir
        )
        self._sealing_key = (
            self.backend.sealing_key(SEALING_LABEL) if self.backend is not None else None
        )
        arrays, self.layout = config.plan.initial_model()
        shard_settings = shard_config(config)
        part = shard_settings.shard_map.split_model(arrays, self.layout)[config.shard_index]
        del arrays
        checkpointer = (
            sealed_checkpointer(self.state_dir / CHECKPOINT_FILE, self._sealing_key)
            if self._sealing_key is not None
            else None  # --tee none: nothing may be written in the clear
        )
        self.shard = ShardServer(
            shard_settings,
            self.layout,
            part,
            checkpointer=checkpointer,
            checkpoint_reader=sealed_checkpoint_reader(
                self.state_dir / CHECKPOINT_FILE, self._sealing_key
            )
            if self._sealing_key is not None
            else None,
        )
        self.resumed_from: int | None = None
        if self._sealing_key is not None and resume_sealed(
            self.shard, self.state_dir / CHECKPOINT_FILE, self._sealing_key
        ):
            self.resumed_from = self.shard.applied_step
            log.info("resumed from the sealed checkpoint at step %d", self.resumed_from)
            self.audit.write("resumed", step=self.resumed_from)
        self.best: tuple[int, Arrays] | None = self._load_best()
        self._start_step = self.shard.applied_step  # progress is counted from here
        self.server = self._make_server(listen_host or config.listen.host)
        serve_shard(
            self.server,
            self.shard,
            on_refused=lambda caller, step, exc: self.audit.write(
                "refused", caller=caller, step=step, reason=f"{type(exc).__name__}: {exc}"
            ),
        )
        self.session: Session = keybroker_session(
            role="paramserver",
            member_id=config.paramserver_id,
            tee=config.tee,
            raw_config=config.raw,
            simulation_dir=config.simulation_dir,
            keybroker=config.keybroker,
            keybroker_policy=config.keybroker_policy,
            pccs_url=config.pccs_url,
            attestation_dir=attestation_dir,
        )

    # --- set-up ------------------------------------------------------------------------------

    def _make_server(self, host: str) -> AttestedServer:
        config = self.config
        listen = ListenConfig(
            host=host,
            application_port=config.listen.port,
            enrollment_port=config.listen.enrollment_port or 0,
        ).sized_for(len(config.plan.workers) + 1, calls_per_caller=8)
        if self.backend is None:
            return AttestedServer.unsafe_plaintext_baseline(
                listen, parties=config.plan.workers, application_options=SHARD_SERVER_OPTIONS
            )
        identity = ServerIdentity(
            self.backend, ServerIdentityConfig(self.state_dir, common_name=config.paramserver_id)
        )
        # Workers prove themselves by evidence alone, against the worker policy of the
        # measured configuration (the owner's worker MRENCLAVEs), each id from its own.
        enrollment = EnrollmentConfig(
            membership={worker: None for worker in config.plan.workers},
            require_membership_signature=False,
            require_evidence=True,
            pinned_mrenclave=config.worker_mrenclaves.get,
        )
        return AttestedServer.create(
            identity,
            enrollment,
            listen,
            evidence_verification=verifier_context(
                config.tee, config.worker_policy, config.simulation_dir, config.pccs_url
            ),
            audit=self.audit.enrollment,
            refused=lambda party, check, detail: self.audit.write(
                "enrollment_refused", party=party, check=check, reason=detail
            ),
            application_options=SHARD_SERVER_OPTIONS,
        )

    def _load_best(self) -> tuple[int, Arrays] | None:
        if self._sealing_key is None:
            return None
        plaintext = archive.load_sealed(self.state_dir / BEST_FILE, self._sealing_key, BEST_PURPOSE)
        if plaintext is None:
            return None
        contents, meta = archive.unpack(plaintext)
        epoch = meta.get("epoch")
        if not isinstance(epoch, int) or set(contents) != set(self.shard.layout.names):
            raise archive.integrity(self.state_dir / BEST_FILE, _malformed("best model"))
        return epoch, contents

    def _keep_best(self, epoch: int, arrays: Arrays) -> None:
        self.best = (epoch, arrays)
        if self._sealing_key is not None:
            archive.save_sealed(
                self.state_dir / BEST_FILE,
                self._sealing_key,
                BEST_PURPOSE,
                archive.pack(arrays, {"epoch": epoch}),
            )

    # --- running -----------------------------------------------------------------------------

    def start(self) -> None:
        endpoints = self.server.start()
        self.audit.write(
            "started",
            paramserver=self.config.paramserver_id,
            mrenclave=self.backend.measurement().hex() if self.backend else None,
            application_port=endpoints.application_port,
            enrollment_port=endpoints.enrollment_port,
            resumed_from_step=self.resumed_from,
        )

    def stop(self, grace: float | None = 1.0) -> None:
        try:
            self.session.close()
        finally:
            self.server.stop(grace)

    def _wait_for_step(self, target: int, deadline_seconds: float) -> None:
        """Until the barrier of ``target`` passed on this shard; fails once no step was
        applied for ``deadline_seconds`` (a worker is missing and did not come back)."""
        plan = self.config.plan
        # Asynchronous: await_step(s) passes when the slowest pushed s - staleness.
        wanted = target + (plan.max_staleness if plan.mode.value == "async" else 0)
        last_progress = time.monotonic()
        seen = self.shard.applied_step
        while not self._reached(wanted):
            now = time.monotonic()
            if self.shard.applied_step != seen:
                seen, last_progress = self.shard.applied_step, now
            elif now - last_progress > (
                deadline_seconds
                if seen > self._start_step
                else max(deadline_seconds, START_GRACE_SECONDS)
            ):
                missing = [w for w, s in self.shard.pushed.items() if s <= seen]
                message = (
                    f"no step applied for {deadline_seconds:.0f} s after step {seen}: "
                    f"waiting for {', '.join(missing) or 'the workers'} (the worker deadline "
                    "passed without its restart)"
                )
                self.audit.write("failed", step=seen, reason=message)
                raise TrainingError(message)

    def _reached(self, step: int) -> bool:
        """Whether ``step``'s barrier passed within a poll; a roll back (another shard
        restarted, the workers replay) is not a failure here: keep waiting."""
        try:
            return self.shard.await_step(step, PROGRESS_POLL_SECONDS)
        except StaleUpdateError:
            return False

    def run(self, *, on_epoch: Callable[[int, bool], None] | None = None) -> ParamServerResult:
        """Serve until the key broker says STOP and took this shard of the best model."""
        plan = self.config.plan
        schedule = plan.schedule()
        per_epoch = schedule.steps_per_epoch
        # After a restart: the epoch of the checkpoint's step (its end may be that step).
        epoch = max(1, math.ceil(self.shard.applied_step / per_epoch))
        deadline = plan.worker_deadline_seconds
        while True:
            self._wait_for_step(epoch * per_epoch, deadline)
            # Not the shard as it is now: the workers may be in the next epoch already.
            snapshot = self.shard.epoch_model(epoch)
            go_on, best_epoch = next_directive(
                self.session, epoch, deadline_seconds=max(deadline, 60.0) * 2
            )
            if best_epoch == epoch:
                self._keep_best(epoch, snapshot)
            if on_epoch is not None:
                on_epoch(epoch, go_on)
            if not go_on or epoch >= plan.epochs:
                break
            epoch += 1
        if self.best is None or self.best[0] != best_epoch:
            raise TrainingError(
                f"the key broker chose epoch {best_epoch}, of which this server holds no copy"
            )
        self._send_best(*self.best)
        return ParamServerResult(
            self.config.paramserver_id,
            self.shard.applied_step,
            best_epoch,
            self.resumed_from,
            self.shard.checkpoints,
        )

    def _send_best(self, epoch: int, arrays: Arrays) -> None:
        """This shard of the best model to the key broker, tables in global row ids."""
        settings = self.shard.config
        dense: Arrays = {}
        tables: dict[str, SparseRows] = {}
        for name, value in arrays.items():
            if self.layout.specs[name].table:
                local = np.arange(len(value))
                tables[name] = SparseRows(
                    settings.shard_map.global_rows(self.layout, name, settings.shard, local),
                    value,
                )
            else:
                dense[name] = value
        shapes = {name: self.layout.specs[name].shape for name in tables}
        bundle = tensors.encode_bundle(dense, tables, shapes)
        call_keybroker(
            self.session,
            lambda channel: keybroker_pb2_grpc.KeyBrokerStub(channel).SubmitModelShard(
                tensors.to_chunks(bundle), timeout=300
            ),
            "this shard of the model",
        )
        self.audit.write("model_shard_sent", epoch=epoch)
        log.info("%s: shard of epoch %d sent to the key broker", self.config.paramserver_id, epoch)


def _malformed(what: str) -> Exception:
    from enclaverec.errors import MalformedInputError

    return MalformedInputError(f"the sealed {what} does not fit this shard")


def run_paramserver(
    config_path: Path,
    *,
    state_dir: Path | None = None,
    listen_host: str | None = None,
    linger_seconds: float = 0.5,
) -> ParamServerResult:
    """The role's entry: start, serve the job to its end, stop. ``linger_seconds``: keep
    serving that long after the model was sent (workers may still read the last state)."""
    server = ParamServer(config_path, state_dir=state_dir, listen_host=listen_host)
    server.start()
    try:
        result = server.run()
        time.sleep(linger_seconds)
        return result
    finally:
        server.stop(2.0)
