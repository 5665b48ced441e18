"""The federation's configuration files: what they refuse, and that they round-trip."""

from __future__ import annotations

import tomllib

import pytest
import tomli_w

from enclaverec.crypto import keys
from enclaverec.data.schema import FeatureSpec
from enclaverec.errors import ConfigError
from enclaverec.federated.config import (
    FederatedPlan,
    FederationConfig,
    ModelKind,
    PartyConfig,
    federation_toml,
    party_toml,
)
from enclaverec.federated.rounds import SelectionConfig
from enclaverec.federated.strategies import LocalTraining, StrategyConfig
from enclaverec.tee.kinds import TEEKind
from enclaverec.tee.policy import PolicySpec

SPEC = FeatureSpec(("d0",), ("C1", "C2"), (10, 20))
PIN = PolicySpec(mrsigners=frozenset({b"\x01" * 32}), isv_prod_id=2)


def plan() -> FederatedPlan:
    return FederatedPlan(
        model=ModelKind.LOGREG,
        preset="logreg",
        optimizer="sgd",
        dataset="synthetic",
        features=SPEC,
        hashing=None,
        seed=3,
        rounds=4,
        local=LocalTraining(epochs=2, batch_size=64, learning_rate=0.3, seed=3),
        strategy=StrategyConfig.parse("fedprox", proximal_mu=0.1),
        selection=SelectionConfig(fraction=0.5, min_parties=1, quorum=0.5, deadline_seconds=30),
    )


def write_federation(tmp_path, **overrides) -> object:
    key = keys.generate_private_key()
    document = federation_toml(
        name="f",
        tee=TEEKind.NONE,
        parties_attest=False,
        simulation=None,
        plan=plan(),
        membership={"party-0": keys.public_key_pem(key.public_key()).decode()},
        max_rows={"party-0": 100},
        party_policy=None,
    )
    for path, value in overrides.items():
        table, key_name = path.split(".")
        document.setdefault(table, {})[key_name] = value
    target = tmp_path / "federation.toml"
    target.write_text(tomli_w.dumps(document))
    return target


def test_plan_round_trips_through_toml():
    again = FederatedPlan.from_toml(tomllib.loads(tomli_w.dumps(plan().to_toml())))
    assert again == plan()


def test_federation_file_loads(tmp_path):
    config = FederationConfig.load(write_federation(tmp_path))
    assert config.plan == plan() and list(config.membership) == ["party-0"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"plan.typo": 1}, "unknown key"),
        ({"federation.format": 2}, "format = 2 is not one this build reads"),
        ({"federation.tee": "sgx"}, "'sgx' is not a valid"),
        ({"plan.rounds": "ten"}, "rounds has the wrong type"),
        ({"plan.rounds": True}, "rounds has the wrong type"),
        ({"aggregator.port": 70000}, "a port is 1 to 65535, got 70000"),
        ({"aggregator.enrollment_port": 0}, "a port is 1 to 65535, got 0"),
        ({"aggregator.host": "not a host!"}, "neither an IP address nor a host name"),
        ({"aggregator.host": "-bad.example"}, "neither an IP address nor a host name"),
    ],
)
def test_federation_file_refuses(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        FederationConfig.load(write_federation(tmp_path, **overrides))


def test_attesting_parties_need_a_policy_that_pins_their_enclaves(tmp_path):
    path = write_federation(
        tmp_path, **{"federation.tee": "gramine", "federation.parties_attest": True}
    )
    with pytest.raises(ConfigError, match="needs a \\[party_policy\\] that pins"):
        FederationConfig.load(path)
    document = tomllib.loads(path.read_text())
    document["party_policy"] = PolicySpec().to_toml()  # the default: no identity constraint
    path.write_text(tomli_w.dumps(document))
    with pytest.raises(ConfigError, match="pins the parties' enclaves"):
        FederationConfig.load(path)
    document["party_policy"] = PIN.to_toml()
    path.write_text(tomli_w.dumps(document))
    assert FederationConfig.load(path).party_policy == PIN


def test_a_party_refuses_a_policy_that_does_not_pin_the_aggregator(tmp_path):
    def write(policy):
        document = party_toml(
            party_id="party-0",
            tee=TEEKind.GRAMINE,
            simulation=None,
            identity_key="identity.key",
            passphrase_file="identity.pass",
            data="data",
            host="127.0.0.1",
            port=1,
            enrollment_port=2,
            aggregator_policy=policy,
            pccs_url="https://pccs.example",
        )
        path = tmp_path / "party.toml"
        path.write_text(tomli_w.dumps(document))
        return path

    with pytest.raises(ConfigError, match="must pin the aggregator"):
        PartyConfig.load(write(PolicySpec()))
    config = PartyConfig.load(write(PolicySpec(mrenclaves=frozenset({b"\x02" * 32}))))
    assert config.pccs_url == "https://pccs.example"
    assert config.identity_key == tmp_path / "identity.key"


def test_federation_addresses_that_work(tmp_path):
    for host in ("10.0.0.7", "::1", "aggregator.example.com", "localhost"):
        path = write_federation(tmp_path, **{"aggregator.host": host})
        assert FederationConfig.load(path).listen_host == host


def test_a_membership_needs_one_key_per_member_and_a_row_bound(tmp_path):
    path = write_federation(tmp_path)
    document = tomllib.loads(path.read_text())
    entry = document["membership"]["party-0"]
    document["membership"]["party-1"] = dict(entry)  # the same key for a second member
    path.write_text(tomli_w.dumps(document))
    with pytest.raises(ConfigError, match="party-0 and party-1 have the same public key"):
        FederationConfig.load(path)
    del document["membership"]["party-1"]
    del entry["max_rows"]
    path.write_text(tomli_w.dumps(document))
    with pytest.raises(ConfigError, match="must hold exactly public_key and max_rows"):
        FederationConfig.load(path)
    entry["max_rows"] = 0
    path.write_text(tomli_w.dumps(document))
    with pytest.raises(ConfigError, match="max_rows of party-0 must be a positive integer"):
        FederationConfig.load(path)
