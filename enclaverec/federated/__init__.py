"""Horizontal federated learning: aggregator, party and aggregation strategies."""
