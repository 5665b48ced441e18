"""The party's local training per round, from the aggregator's fit instructions."""

from __future__ import annotations

from enclaverec.federated.party import local_fit_config
from enclaverec.transport.proto import federated_pb2


def test_a_party_restarts_its_optimizer_every_round_and_follows_the_instructions():
    fit = federated_pb2.FitInstructions(
        batch_size=128, learning_rate=0.05, epochs=1, seed=7, proximal_mu=0.01
    )
    config = local_fit_config(fit, round_index=3)
    # Adagrad's accumulators start afresh each round (docs/decisions.md, parity, third look).
    assert config.restart_optimizer is True
    assert (config.batch_size, config.learning_rate, config.epochs) == (128, 0.05, 1)
    assert (config.seed, config.round_index, config.proximal_mu) == (7, 3, 0.01)
