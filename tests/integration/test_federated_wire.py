"""What a man in the middle sees: a recording TCP proxy between one party and the
aggregator's application port. In the ``--tee none`` control run, 100 random slices of
the party's update (its dense deltas and touched embedding rows) are all in the recorded
bytes, so the search finds plaintext when it is there; in the attested run none is.
"""

from __future__ import annotations

import numpy as np
import pytest
from federation_helpers import (
    AggregatorThread,
    PartyThread,
    RecordingProxy,
    audit_events,
    http2_data,
    logreg_plan,
    new_federation,
)

from enclaverec.arrays import ModelUpdate
from enclaverec.federated.party import PartyOptions
from enclaverec.roles.party import make_party_session
from enclaverec.tee.kinds import TEEKind

SLICES = 100
DENSE_SLICES = 10
SLICE_BYTES = 32
FLOATS = SLICE_BYTES // 4
TLS_HANDSHAKE = 0x16  # RFC 8446 §5.1, ContentType handshake


def nonzero_slices(segments: list[bytes], count: int, rng: np.random.Generator) -> list[bytes]:
    """``count`` distinct 32-byte slices of float32 data in which no value is zero (so
    that a hit in the capture cannot be a run of padding)."""
    candidates = []
    for segment in segments:
        values = np.frombuffer(segment, "<f4")
        nonzero = values != 0
        for start in range(len(values) - FLOATS + 1):
            if nonzero[start : start + FLOATS].all():
                candidates.append(segment[4 * start : 4 * start + SLICE_BYTES])
    assert len(candidates) >= count, "the update has too little nonzero data"
    chosen = rng.choice(len(candidates), size=count, replace=False)
    return [candidates[i] for i in chosen]


def update_slices(update: ModelUpdate, seed: int) -> list[bytes]:
    """Slices of the dense layers' deltas and of the embedding tables' deltas (sent as
    touched rows, or whole where that is smaller: small tables that the party touches
    almost entirely)."""
    rng = np.random.default_rng(seed)
    tables = {name for name in update.dense if name.startswith("embedding/")}
    layers = [
        np.asarray(value, "<f4").tobytes()
        for name, value in update.dense.items()
        if name not in tables
    ]
    embeddings = [np.asarray(update.dense[name], "<f4").tobytes() for name in sorted(tables)]
    embeddings += [np.asarray(rows.values, "<f4").tobytes() for rows in update.sparse.values()]
    return nonzero_slices(layers, DENSE_SLICES, rng) + nonzero_slices(
        embeddings, SLICES - DENSE_SLICES, rng
    )


def run_through_proxy(root, tee: TEEKind) -> tuple[ModelUpdate, RecordingProxy, list[dict]]:
    """A one-round federation of two parties; party-0 reaches the aggregator's
    application port through the proxy. Returns party-0's update and the proxy."""
    federation = new_federation(
        root,
        plan=logreg_plan(rounds=1, parties=2),
        parties=2,
        tee=tee,
        parties_attest=tee is not TEEKind.NONE,
    )
    runner = AggregatorThread(federation).start()
    proxy = RecordingProxy(federation.port)
    updates: list[ModelUpdate] = []
    try:
        # The enrollment port (certificate fetch, enrollment) stays direct; everything the
        # party sends afterwards (pulls, its update, its scores) crosses the proxy.
        proxied = PartyThread(
            setup=make_party_session(federation.party(0), aggregator_port=proxy.port),
            options=PartyOptions(on_update=lambda _round, update: updates.append(update)),
        ).start()
        direct = PartyThread(federation.party(1)).start()
        proxied.join(), direct.join()
        runner.join()
    finally:
        proxy.close()
    assert len(updates) == 1
    return updates[0], proxy, audit_events(federation.audit)


def sent_bytes(events: list[dict], party: str) -> int:
    (event,) = [e for e in events if e["event"] == "update" and e["party_id"] == party]
    return event["bytes"]


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    return run_through_proxy(tmp_path_factory.mktemp("wire") / "none", TEEKind.NONE)


@pytest.fixture(scope="module")
def attested(tmp_path_factory):
    return run_through_proxy(tmp_path_factory.mktemp("wire") / "simulated", TEEKind.SIMULATED)


def test_control_run_shows_the_update_in_plaintext(control):
    update, proxy, events = control
    slices = update_slices(update, seed=1)
    frames = b"".join(http2_data(connection) for connection in proxy.sent())
    assert len(frames) >= sent_bytes(events, "party-0")  # the update crossed the proxy
    missing = [s.hex() for s in slices if s not in frames]
    assert not missing, f"{len(missing)} of {len(slices)} slices not found: {missing[:3]}"


def test_attested_run_shows_no_slice_of_the_update(attested):
    update, proxy, events = attested
    slices = update_slices(update, seed=1)
    sent, received = proxy.sent(), proxy.received()
    assert sum(len(connection) for connection in sent) >= sent_bytes(events, "party-0")
    # Every connection through the proxy is TLS from its first byte: no plaintext HTTP/2.
    assert sent and all(connection[0] == TLS_HANDSHAKE for connection in sent)
    assert not any(http2_data(connection) for connection in sent)
    everything = b"".join(sent + received)
    found = [s.hex() for s in slices if s in everything]
    assert not found, f"{len(found)} slices of the update crossed the wire in plaintext"
