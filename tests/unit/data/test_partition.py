from __future__ import annotations

import numpy as np
import pytest

from enclaverec.data.partition import (
    PartitionKind,
    PartitionMode,
    parse_partition_mode,
    partition_dataset,
)
from enclaverec.data.schema import DataSet, Examples, FeatureSpec, split_sha256
from enclaverec.data.split import split_examples
from enclaverec.errors import UsageError

SPLITS = ("train", "validation", "test")


def make_dataset(n: int = 20_000, *, users: int = 500, with_user: bool = True) -> DataSet:
    rng = np.random.default_rng(0)
    examples = Examples(
        dense=rng.random((n, 2)).astype(np.float32),
        categorical=np.column_stack((rng.integers(1, users + 1, n), rng.integers(0, 10, n))).astype(
            np.int32
        ),
        labels=(rng.random(n) < 0.3).astype(np.float32),
        row_ids=np.arange(n, dtype=np.int64),
    )
    spec = FeatureSpec(("a", "b"), ("user", "x"), (users + 1, 10))
    train, validation, test = split_examples(examples, seed=0)
    info = {"seed": 0, "user_feature": "user"} if with_user else {"seed": 0}
    return DataSet("test-set", spec, train, validation, test, info=info)


DATASET = make_dataset()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("iid", PartitionMode(PartitionKind.IID)),
        ("by-user", PartitionMode(PartitionKind.BY_USER)),
        ("dirichlet:0.5", PartitionMode(PartitionKind.DIRICHLET, 0.5)),
        ("dirichlet:10", PartitionMode(PartitionKind.DIRICHLET, 10.0)),
    ],
)
def test_parses_valid_modes(text, expected):
    mode = parse_partition_mode(text)
    assert mode == expected
    assert parse_partition_mode(str(mode)) == mode


@pytest.mark.parametrize(
    "text",
    [
        "",
        "IID",
        "random",
        "dirichlet",
        "dirichlet:",
        "dirichlet:x",
        "dirichlet:0",
        "dirichlet:-1",
        "dirichlet:nan",
        "dirichlet:inf",
        "by_user",
        "iid:1",
    ],
)
def test_malformed_modes_are_usage_errors_naming_the_valid_ones(text):
    with pytest.raises(UsageError, match="valid: iid, by-user, dirichlet:ALPHA"):
        parse_partition_mode(text)


@pytest.mark.parametrize("mode", ["iid", "by-user", "dirichlet:0.3"])
def test_parties_cover_each_split_exactly_once(mode):
    parties = partition_dataset(DATASET, parties=4, mode=mode, seed=1)
    assert len(parties) == 4
    for split in SPLITS:
        union = np.concatenate([getattr(p, split).row_ids for p in parties])
        assert len(np.unique(union)) == len(union)  # disjoint
        np.testing.assert_array_equal(np.sort(union), np.sort(getattr(DATASET, split).row_ids))
    test_union = np.concatenate([p.test.row_ids for p in parties])
    assert split_sha256(test_union) == split_sha256(DATASET.test.row_ids)
    for i, party in enumerate(parties):
        assert party.name == DATASET.name and party.spec == DATASET.spec
        described = {"mode": mode, "parties": 4, "party": i, "seed": 1}
        if mode.startswith("dirichlet"):
            described["dirichlet_draw"] = parties[0].info["partition"]["dirichlet_draw"]
        assert party.info["partition"] == described
        assert party.info["global_test_split_sha256"] == split_sha256(DATASET.test.row_ids)


def test_iid_shares_are_balanced():
    parties = partition_dataset(DATASET, parties=4, mode="iid", seed=0)
    sizes = np.array([len(p.train) for p in parties]) / len(DATASET.train)
    np.testing.assert_allclose(sizes, 0.25, atol=0.02)


def test_by_user_keeps_every_user_whole():
    parties = partition_dataset(DATASET, parties=5, mode="by-user", seed=3)
    owner: dict[int, int] = {}
    for i, party in enumerate(parties):
        for split in SPLITS:
            for user in np.unique(getattr(party, split).categorical[:, 0]):
                assert owner.setdefault(int(user), i) == i
    assert len(owner) == 500


def test_by_user_without_a_user_column_is_refused():
    criteo_like = make_dataset(with_user=False)
    with pytest.raises(UsageError, match="no user column.*iid or dirichlet"):
        partition_dataset(criteo_like, parties=2, mode="by-user", seed=0)


def label_rates(parties) -> np.ndarray:
    return np.array([float(p.train.labels.mean()) for p in parties])


def test_dirichlet_skews_labels_far_more_than_iid():
    iid = label_rates(partition_dataset(DATASET, parties=4, mode="iid", seed=0))
    skewed = label_rates(partition_dataset(DATASET, parties=4, mode="dirichlet:0.3", seed=0))
    assert iid.std() < 0.02
    assert skewed.std() > 0.1


def test_large_alpha_is_close_to_iid():
    rates = label_rates(partition_dataset(DATASET, parties=4, mode="dirichlet:1000", seed=0))
    assert rates.std() < 0.03


@pytest.mark.parametrize("mode", ["iid", "by-user", "dirichlet:0.5"])
def test_partition_is_deterministic_and_changes_with_the_seed(mode):
    a = partition_dataset(DATASET, parties=3, mode=mode, seed=7)
    b = partition_dataset(DATASET, parties=3, mode=mode, seed=7)
    c = partition_dataset(DATASET, parties=3, mode=mode, seed=8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.train.row_ids, y.train.row_ids)
        np.testing.assert_array_equal(x.test.row_ids, y.test.row_ids)
    assert any(
        not np.array_equal(x.train.row_ids, z.train.row_ids) for x, z in zip(a, c, strict=True)
    )


def test_a_party_without_training_rows_is_refused():
    tiny = make_dataset(n=40)
    with pytest.raises(UsageError, match="leaves party .* without .* rows"):
        partition_dataset(tiny, parties=30, mode="iid", seed=0)


def test_an_extreme_dirichlet_names_alpha():
    with pytest.raises(UsageError, match="in 10 draws; use fewer parties or a larger ALPHA"):
        partition_dataset(DATASET, parties=50, mode="dirichlet:0.01", seed=0)


def test_dirichlet_redraws_until_every_party_has_rows():
    # With ALPHA 0.1 over 4 parties some draws starve a party of validation rows.
    draws = set()
    for seed in range(5):
        parties = partition_dataset(DATASET, parties=4, mode="dirichlet:0.1", seed=seed)
        assert all(len(p.train) and len(p.validation) for p in parties)
        draws.add(parties[0].info["partition"]["dirichlet_draw"])
    assert max(draws) > 0


@pytest.mark.parametrize("parties", [0, -1, 5000, 2.0, True])
def test_bad_number_of_parties_is_refused(parties):
    with pytest.raises(UsageError, match="--parties"):
        partition_dataset(DATASET, parties=parties, mode="iid", seed=0)


def test_one_party_gets_everything():
    (only,) = partition_dataset(DATASET, parties=1, mode="iid", seed=0)
    np.testing.assert_array_equal(only.train.row_ids, DATASET.train.row_ids)
