"""Peak memory of an aggregator that receives one junk evaluation stream (issue 9, finding 5).

Writes a two-party federation with ``federated init --tee none`` (plaintext loopback, the
measurement baseline), starts ``federated aggregator`` as a process, sends it SIZE MiB of
junk evaluation frames as party-0, and prints the aggregator's peak resident memory
(VmHWM, from /proc) before and after, and the gRPC status it answered with.

    .venv/bin/python scripts/measure_junk_evaluation.py [--mib 128]

Run it against another checkout with PYTHONPATH=that/checkout (the commands it uses exist
in both), to compare before and after a change.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from enclaverec.transport.proto import federated_pb2_grpc, tensors_pb2

CHUNK = 1 << 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128, help="junk to send (default: 128)")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "enclaverec.cli.main", "federated"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "federation"
        port, enrollment = free_port(), free_port()
        subprocess.run(
            [*cli, "init", "--dataset", "synthetic", "--model", "logreg", "--parties", "2",
             "--tee", "none", "--output", str(root), "--port", str(port),
             "--enrollment-port", str(enrollment)],
            check=True, capture_output=True,
        )  # fmt: skip
        log = open(Path(tmp) / "aggregator.log", "wb")  # noqa: SIM115 - closed below
        aggregator = subprocess.Popen(
            [*cli, "aggregator", "--config", str(root / "federation.toml")],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            grpc.channel_ready_future(channel).result(timeout=60)
            time.sleep(1.0)  # let it settle after start-up
            before = peak_kib(aggregator.pid)
            stub = federated_pb2_grpc.AggregatorStub(channel)

            def junk():
                for index in range(args.mib):
                    yield tensors_pb2.Chunk(
                        index=index, last=index == args.mib - 1, data=b"\x07" * CHUNK
                    )

            started = time.perf_counter()
            try:
                stub.SubmitEvaluation(
                    junk(), metadata=(("enclaverec-party-id", "party-0"),), timeout=300
                )
                status = "OK"
            except grpc.RpcError as exc:
                status = f"{exc.code().name}: {exc.details()}"
            seconds = time.perf_counter() - started
            time.sleep(0.5)
            after = peak_kib(aggregator.pid)
            channel.close()
        finally:
            aggregator.terminate()
            aggregator.wait(30)
            log.close()
    print(f"junk evaluation: {args.mib} MiB sent as party-0 in {seconds:.2f} s")
    print(f"aggregator answered: {status}")
    print(
        f"aggregator peak RSS (VmHWM): before {before / 1024:.1f} MiB, "
        f"after {after / 1024:.1f} MiB, increase {(after - before) / 1024:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
