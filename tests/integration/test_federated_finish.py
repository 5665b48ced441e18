"""The end of a federation: a party counts as finished once it has received the whole best
model, not when its download starts. A party whose download is throttled through a slow
proxy still gets the model and ends cleanly, and the aggregator writes its summary.

Before the fix the aggregator stopped one second after the last download *started*; the
throttled party's stream was cut and it failed (finding 10 of issue 9).
"""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
from federation_helpers import (
    SEED,
    AggregatorThread,
    Federation,
    PartyThread,
    audit_events,
)

from enclaverec.data.partition import partition_dataset
from enclaverec.data.sources import DataSelection, load_dataset
from enclaverec.federated.config import FederatedPlan, ModelKind
from enclaverec.federated.party import PartyOptions
from enclaverec.federated.rounds import SelectionConfig
from enclaverec.federated.setup import init_federation
from enclaverec.federated.simulate import free_ports
from enclaverec.federated.strategies import LocalTraining, StrategyConfig
from enclaverec.report import TEEKind
from enclaverec.roles.party import make_party_session

# Slow by design (a throttled link, about a minute): kept out of the fast set.
pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

# The synthetic data set's logistic regression is 166 KB, more than HTTP/2's initial
# flow-control window (64 KiB): at this rate its download takes about 8 s, so the
# aggregator cannot have sent it all long before the party received it.
BYTES_PER_SECOND = 20_000
SLICE = 1024


class SlowProxy:
    """A loopback TCP proxy to ``target_port`` that forwards what the server sends at
    ``BYTES_PER_SECOND`` (what the client sends goes through at full speed)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.delivered = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                return
            server.settimeout(None)
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, slow: bool) -> None:
        try:
            while data := source.recv(SLICE if slow else 65536):
                if slow:
                    time.sleep(len(data) / BYTES_PER_SECOND)
                    self.delivered += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
                try:
                    sock.shutdown(how)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._listener.close()


def synthetic_federation(root) -> Federation:
    """Two parties, one round of logistic regression on the synthetic data set (whose
    model is larger than MovieLens's), plaintext loopback (what is under test is the end
    of the federation, the same for every transport)."""
    data = load_dataset(DataSelection(dataset="synthetic"), seed=SEED)
    plan = FederatedPlan(
        model=ModelKind.LOGREG,
        preset="logreg",
        optimizer="sgd",
        dataset=data.name,
        features=data.spec,
        hashing=data.info.get("hashing"),
        seed=SEED,
        rounds=1,
        local=LocalTraining(epochs=1, batch_size=256, learning_rate=0.5, seed=SEED),
        strategy=StrategyConfig(),
        selection=SelectionConfig(min_parties=2, deadline_seconds=120.0),
    )
    port, enrollment_port = free_ports(2)
    files = init_federation(
        root,
        parties=2,
        plan=plan,
        tee=TEEKind.NONE,
        parties_attest=False,
        party_data=partition_dataset(data, parties=2, mode="iid", seed=SEED),
        port=port,
        enrollment_port=enrollment_port,
    )
    return Federation(files, port, enrollment_port)


def test_a_party_behind_a_slow_link_receives_the_best_model(tmp_path):
    federation = synthetic_federation(tmp_path / "federation")
    proxy = SlowProxy(federation.port)
    aggregator = AggregatorThread(federation).start()
    options = PartyOptions(reconnect_seconds=10.0, poll_seconds=1.0)
    try:
        fast = PartyThread(federation.party(0), options=options).start()
        slow = PartyThread(
            setup=make_party_session(federation.party(1), aggregator_port=proxy.port),
            options=options,
        ).start()
        results = [fast.join(180), slow.join(180)]
        summary = aggregator.join(180)
    finally:
        proxy.close()

    best = aggregator.aggregator.best_model()[0]
    for result in results:
        assert result.best_round == 1
        assert all(np.array_equal(result.best_model[name], best[name]) for name in best)
    assert summary["rounds_completed"] == 1
    assert federation.summary_file.exists()
    finished = [e["party_id"] for e in audit_events(federation.audit) if e["event"] == "finished"]
    assert sorted(finished) == ["party-0", "party-1"]
    assert proxy.delivered > 0
