"""Fixtures for the model's unit tests: a tiny DLRM (a few kB of weights) and random rows."""

from __future__ import annotations

import pytest
from tiny_model import CONFIG, SPEC, make_examples

from enclaverec.data.schema import Examples, FeatureSpec
from enclaverec.dlrm.config import DLRMConfig


@pytest.fixture
def spec() -> FeatureSpec:
    return SPEC


@pytest.fixture
def config() -> DLRMConfig:
    return CONFIG


@pytest.fixture
def examples() -> Examples:
    return make_examples(64)
