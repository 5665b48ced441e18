"""A member that pushes malformed updates through its own authenticated session: a wrong
shape, NaN, an extra array (optimizer state), an update for a past round and a replayed
one. Each is refused with its own reason and recorded in the audit log; none reaches the
round's replies or the model, and the round then aggregates exactly the honest updates.
The honest updates carry exactly the layout's arrays: optimizer state never leaves a party.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import grpc
import numpy as np
from federation_helpers import (
    AggregatorThread,
    PartyThread,
    audit_events,
    logreg_plan,
    new_federation,
)

from enclaverec.arrays import ModelUpdate, SparseRows, densify, sparsify
from enclaverec.federated.party import PartyOptions
from enclaverec.paramservice.codec import encode_update
from enclaverec.paramservice.combine import apply_update, weighted_mean
from enclaverec.roles.party import make_party_session
from enclaverec.transport import tensors
from enclaverec.transport.proto import paramservice_pb2, paramservice_pb2_grpc

KERNEL = "linear/kernel"


@dataclass(frozen=True)
class Attempt:
    """One refused push, and what the aggregator held right after it."""

    label: str
    code: grpc.StatusCode
    details: str
    party_replied: bool
    model_version: int


def push(session, payload: paramservice_pb2.UpdatePayload) -> grpc.RpcError:
    try:
        session.call(
            lambda channel: paramservice_pb2_grpc.ParameterServiceStub(channel).Push(
                tensors.to_chunks(payload), timeout=60
            )
        )
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the aggregator accepted the push")


def with_dense(update: ModelUpdate, name: str, value: np.ndarray) -> ModelUpdate:
    return replace(update, dense={**update.dense, name: value})


def with_rows(update: ModelUpdate, name: str, values: np.ndarray) -> ModelUpdate:
    rows = update.sparse[name]
    return replace(update, sparse={**update.sparse, name: SparseRows(rows.row_ids, values)})


def test_a_member_s_malformed_updates_are_refused_and_never_aggregated(tmp_path):
    federation = new_federation(
        tmp_path / "federation", plan=logreg_plan(rounds=2, parties=2), parties=2
    )
    runner = AggregatorThread(federation).start()
    aggregator = runner.aggregator
    layout = aggregator.layout
    initial = aggregator.state.store.snapshot()
    honest: dict[tuple[int, str], ModelUpdate] = {}
    payloads: dict[int, paramservice_pb2.UpdatePayload] = {}
    attempts: list[Attempt] = []
    models: dict[int, dict[str, np.ndarray]] = {}
    malicious = make_party_session(federation.party(0))
    session = malicious.session

    def attack(round_index: int, update: ModelUpdate) -> None:
        """party-0's hook, before its honest push: first the malformed ones."""
        honest[round_index, "party-0"] = update
        # The malformed variants are built on the all-sparse form of the honest update (the
        # party itself sends small, mostly touched tables whole).
        update = sparsify(densify(update, layout), layout, update.num_samples)
        version = aggregator.state.store.version
        models[round_index] = aggregator.state.store.snapshot()

        def encode(candidate: ModelUpdate, *, step: int = round_index, base: int = version):
            return encode_update(
                candidate, layout, step=step, base_version=base, incarnation=aggregator.incarnation
            )

        table = layout.table_names[0]
        rows = update.sparse[table].values
        kernel = update.dense[KERNEL]
        if round_index == 1:
            nan_kernel, nan_rows = kernel.copy(), rows.copy()
            nan_kernel[0], nan_rows[0, 0] = np.nan, np.nan
            cases = {
                "dense shape": encode(with_dense(update, KERNEL, np.append(kernel, kernel[:1]))),
                "row width": encode(with_rows(update, table, np.repeat(rows, 2, axis=1))),
                "dense NaN": encode(with_dense(update, KERNEL, nan_kernel)),
                "row NaN": encode(with_rows(update, table, nan_rows)),
                # An optimizer accumulator sent along (what must never leave a party).
                "optimizer state": encode(
                    with_dense(update, f"optimizer/accumulator/{KERNEL}", np.abs(kernel))
                ),
            }
            payloads[1] = encode(update)
        else:
            cases = {
                # Computed on the current model but claiming the round that has closed.
                "past round": encode(update, step=1),
                # Round 1's honest update, replayed verbatim.
                "replay": payloads[1],
            }
        for label, payload in cases.items():
            error = push(session, payload)
            attempts.append(
                Attempt(
                    label,
                    error.code(),
                    error.details(),
                    "party-0" in aggregator.coordinator.replies,
                    aggregator.state.store.version,
                )
            )

    def observe(round_index: int, update: ModelUpdate) -> None:
        honest[round_index, "party-1"] = update

    malicious_party = PartyThread(setup=malicious, options=PartyOptions(on_update=attack))
    honest_party = PartyThread(federation.party(1), options=PartyOptions(on_update=observe))
    malicious_party.start(), honest_party.start()
    assert [malicious_party.join().rounds_trained, honest_party.join().rounds_trained] == [
        [1, 2],
        [1, 2],
    ]
    summary = runner.join()

    table = layout.table_names[0]
    expected = {
        "dense shape": (
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{KERNEL}: got float32[{len(initial[KERNEL]) + 1}], "
            f"expected float32[{len(initial[KERNEL])}]",
        ),
        # Twice the row width is more bytes than the layout's largest update: refused
        # while it streams in, over the size limit.
        "row width": (grpc.StatusCode.RESOURCE_EXHAUSTED, "message larger than"),
        "dense NaN": (grpc.StatusCode.FAILED_PRECONDITION, f"{KERNEL}: non-finite values"),
        "row NaN": (grpc.StatusCode.FAILED_PRECONDITION, f"{table}: non-finite values"),
        "optimizer state": (
            grpc.StatusCode.FAILED_PRECONDITION,
            f"unknown array names ['optimizer/accumulator/{KERNEL}']",
        ),
        "past round": (
            grpc.StatusCode.FAILED_PRECONDITION,
            "for round 1 refused: the federation is in round 2",
        ),
        "replay": (grpc.StatusCode.FAILED_PRECONDITION, "computed from version 0"),
    }
    assert [attempt.label for attempt in attempts] == list(expected)
    for attempt in attempts:
        code, message = expected[attempt.label]
        assert attempt.code == code, attempt
        assert message in attempt.details, attempt
        # Refused whole: no reply recorded for the round, the model did not move.
        assert not attempt.party_replied, attempt
        assert attempt.model_version == (0 if attempt.label not in ("past round", "replay") else 1)

    # Each refusal is in the audit log under the malicious member's name; its accepted
    # updates are exactly its honest ones, one per round.
    events = audit_events(federation.audit)
    refused = [e for e in events if e["event"] == "refused"]
    assert [e["party_id"] for e in refused] == ["party-0"] * len(expected)
    for event, (_, message) in zip(refused, expected.values(), strict=True):
        assert message in event["reason"]
    updates = [(e["party_id"], e["round"]) for e in events if e["event"] == "update"]
    assert sorted(updates) == [("party-0", 1), ("party-0", 2), ("party-1", 1), ("party-1", 2)]
    assert summary["contributions"] == {"party-0": [1, 2], "party-1": [1, 2]}

    # The honest updates hold exactly the model's arrays: no optimizer state.
    for update in honest.values():
        assert sorted({*update.dense, *update.sparse}) == sorted(layout.names)

    # Round 1's global model is the initial one plus FedAvg of the two honest updates:
    # nothing of the refused pushes got in.
    round_one = {name: value.copy() for name, value in initial.items()}
    apply_update(round_one, weighted_mean([honest[1, "party-0"], honest[1, "party-1"]], layout))
    assert models[1].keys() == round_one.keys()
    for name in layout.names:
        np.testing.assert_array_equal(models[1][name], initial[name])
        np.testing.assert_array_equal(models[2][name], round_one[name], err_msg=name)
