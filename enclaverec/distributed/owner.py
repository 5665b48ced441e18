"""The data owner's side of a job, on the owner's own machine (no enclave): attest the key
broker against the owner's pin, submit the data key signed with the owner's key, follow
the job's progress, and fetch and decrypt the result.

Security: the owner's private key and the data key stay in this process; the data key
leaves it only inside the TLS channel pinned to the key broker's verified RA-TLS
certificate, so only the attested enclave can read it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from enclaverec.crypto import keys
from enclaverec.crypto.signing import ECPrivateKey, sign_raw
from enclaverec.data import encrypted
from enclaverec.data.shards import ShardManifest
from enclaverec.distributed.config import OwnerConfig
from enclaverec.distributed.keybroker import NO_CERTIFICATE, submission_statement
from enclaverec.distributed.members import refusal
from enclaverec.distributed.result import JobResult, open_result
from enclaverec.errors import IntegrityError, TrainingError, TransportError, UsageError
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.role_setup import verifier_context
from enclaverec.transport import tensors
from enclaverec.transport.channel import AttestedChannel, ServerPin
from enclaverec.transport.endpoints import grpc_target, is_loopback
from enclaverec.transport.proto import keybroker_pb2, keybroker_pb2_grpc, tensors_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")
CALL_TIMEOUT_SECONDS = 60.0


class OwnerClient:
    """The owner's connection to its job's key broker (the enrollment port, attested and
    pinned; plaintext loopback with ``--tee none``)."""

    def __init__(self, config: OwnerConfig, owner_key: ECPrivateKey) -> None:
        self.config = config
        self._key = owner_key
        address = config.keybroker
        self._pin: ServerPin | None = None
        if config.tee is TEEKind.NONE:
            if not is_loopback(address.host):
                raise UsageError("the --tee none baseline reaches loopback only")
            self._plain: grpc.Channel | None = grpc.insecure_channel(
                grpc_target(address.host, address.port)
            )
            self._attested: AttestedChannel | None = None
        else:
            if address.enrollment_port is None:
                raise UsageError(f"{config.source}: [keybroker] needs enrollment_port")
            self._pin = ServerPin(
                address.host,
                address.enrollment_port,
                verifier_context(
                    config.tee, config.keybroker_policy, config.simulation_dir, config.pccs_url
                ),
            )
            self._attested = AttestedChannel(address.host, address.enrollment_port, self._pin)
            self._plain = None

    @classmethod
    def load(cls, config_path: Path) -> OwnerClient:
        config = OwnerConfig.load(config_path)
        passphrase = keys.read_passphrase(config.passphrase_file, confirm=False)
        return cls(config, keys.load_private_key(config.identity_key, passphrase))

    def _call(self, fn: Callable[[keybroker_pb2_grpc.OwnerStub], T], what: str) -> T:
        try:
            if self._attested is not None:
                return self._attested.call(
                    lambda channel: fn(keybroker_pb2_grpc.OwnerStub(channel))
                )
            assert self._plain is not None  # noqa: S101 - set in __init__ for --tee none
            return fn(keybroker_pb2_grpc.OwnerStub(self._plain))
        except grpc.RpcError as exc:
            raise refusal(exc, what) from exc

    def data_key(self) -> tuple[bytes, bytes]:
        """(data key, data set id), unwrapped from the shards' headers with the owner's
        key; every shard must belong to the same data set."""
        manifest = ShardManifest.load(self.config.shards)
        headers = [
            encrypted.read_unverified_header(self.config.shards / shard.file)
            for shard in manifest.shards
        ]
        ids = {header.dataset_id for header in headers}
        if len(ids) != 1 or headers[0].dataset_id.hex() != manifest.dataset_id:
            raise IntegrityError("the shards do not all belong to the manifest's data set")
        return encrypted.unwrap_data_key(headers[0], self._key), headers[0].dataset_id

    def submit(self) -> bool:
        """Send the job's data key; True if the key broker already held it."""
        key, dataset_id = self.data_key()
        certificate = self._pin.certificate_sha256 if self._pin is not None else NO_CERTIFICATE
        pins = dict(self.config.paramserver_mrenclaves)
        statement = submission_statement(self.config.job, dataset_id, certificate, key, pins)
        request = keybroker_pb2.SubmitRequest(
            job=self.config.job,
            dataset_id=dataset_id,
            data_key=key,
            server_certificate_sha256=certificate,
            owner_signature=sign_raw(self._key, statement),
            paramserver_mrenclaves=pins,
        )
        reply = self._call(
            lambda stub: stub.Submit(request, timeout=CALL_TIMEOUT_SECONDS), "the submission"
        )
        return bool(reply.already_submitted)

    def status(self) -> dict[str, Any]:
        reply = self._call(
            lambda stub: stub.Status(keybroker_pb2.StatusRequest(), timeout=CALL_TIMEOUT_SECONDS),
            "the status",
        )
        return json.loads(reply.status_json)

    def fetch_result(self) -> JobResult:
        """The result, decrypted here with the owner's key."""
        tensor = self._call(
            lambda stub: tensors.from_chunks(
                stub.FetchResult(keybroker_pb2.FetchRequest(), timeout=600), tensors_pb2.Tensor
            ),
            "the result",
        )
        return open_result(bytes(tensor.data), self._key, job=self.config.job)

    def wait_finished(self, timeout: float, poll: float = 1.0) -> dict[str, Any]:
        """Poll the status until the job finished or failed; its last status."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.status()
            except TransportError:
                # The key broker is down or restarting (it resumes from sealed state).
                if time.monotonic() > deadline:
                    raise
                time.sleep(poll)
                continue
            if status["finished"] or status["failed"]:
                return status
            if time.monotonic() > deadline:
                raise TrainingError(f"the job did not finish within {timeout:.0f} s")
            time.sleep(poll)

    def close(self) -> None:
        if self._attested is not None:
            self._attested.close()
        if self._plain is not None:
            self._plain.close()
