"""A test-only server role process: an attested server with a WhoAmI service, on loopback.

Run by tests/integration/test_channels.py as a separate process, the way an aggregator
runs: it takes only paths, ports and public values on its command line, makes or unseals
its keys in its own sealed state, logs to a file, and writes its ports to a ready file.
Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from pathlib import Path

import grpc

from enclaverec.tee.attested_ca import EnrollmentConfig
from enclaverec.tee.policy import PolicySpec
from enclaverec.tee.simulated_backend import SimulatedBackend
from enclaverec.tee.simulation_pki import SimulationPKI
from enclaverec.tee.verifier_context import VerifierContext
from enclaverec.transport.server import (
    AttestedServer,
    ListenConfig,
    ServerIdentity,
    ServerIdentityConfig,
)

SERVICE = "enclaverec.test.Echo"
log = logging.getLogger("channel_server")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployment", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--mrenclave", required=True)
    parser.add_argument("--party-mrenclave", required=True)
    parser.add_argument("--membership", type=Path, required=True, help="p0's public key PEM")
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--application-port", type=int, default=0)
    parser.add_argument("--enrollment-port", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(
        filename=args.log, level=logging.INFO, format="%(name)s %(levelname)s %(message)s"
    )

    pki = SimulationPKI.load(args.deployment)
    backend = SimulatedBackend(pki, bytes.fromhex(args.mrenclave))
    identity = ServerIdentity(backend, ServerIdentityConfig(args.state))
    joiners = PolicySpec(
        mrenclaves=frozenset({bytes.fromhex(args.party_mrenclave)}),
        unsafe_allow_simulation=True,
        simulation_roots=frozenset({pki.root_sha256}),
    ).build()
    server = AttestedServer.create(
        identity,
        EnrollmentConfig(
            membership={"p0": args.membership.read_bytes()},
            require_membership_signature=True,
            require_evidence=True,
        ),
        ListenConfig(application_port=args.application_port, enrollment_port=args.enrollment_port),
        evidence_verification=VerifierContext.for_simulation(args.deployment, joiners),
    )

    def who_am_i(request: bytes, context: grpc.ServicerContext) -> bytes:
        peer = server.peer_identity(context)
        log.info("served WhoAmI for %s", peer.party_id)
        return json.dumps(peer.to_dict()).encode()

    server.application_server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE, {"WhoAmI": grpc.unary_unary_rpc_method_handler(who_am_i)}
            )
        ]
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    endpoints = server.start()
    ready = {
        "pid": os.getpid(),
        "application_port": endpoints.application_port,
        "enrollment_port": endpoints.enrollment_port,
    }
    partial = args.ready.with_suffix(".part")
    partial.write_text(json.dumps(ready))
    partial.rename(args.ready)
    stop.wait()
    server.stop(1.0)
    log.info("stopped")


if __name__ == "__main__":
    main()
