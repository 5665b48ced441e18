from __future__ import annotations

import importlib.metadata
import os

import numpy as np
import pytest

from enclaverec.data import movielens
from enclaverec.data.sources import DataSelection, load_dataset
from enclaverec.errors import DependencyMismatchError, MissingDependencyError


def _recbole_installed() -> bool:
    try:
        importlib.metadata.distribution("recbole")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# scripts/test installs recbole; a checkout without it skips (CI fails instead).
needs_recbole = pytest.mark.skipif(
    not _recbole_installed() and os.environ.get("CI", "").lower() != "true",
    reason="recbole is not installed: pip install --no-deps recbole==1.2.1",
)


@pytest.fixture(scope="module")
def data():
    return movielens.load()


@needs_recbole
def test_loads_all_100000_ratings_with_a_sane_positive_rate(data):
    ex = data.examples
    assert len(ex) == 100_000
    np.testing.assert_array_equal(ex.row_ids, np.arange(100_000))
    # 55,375 of the ratings are 4 or 5.
    assert int(ex.labels.sum()) == 55_375


@needs_recbole
def test_schema_mapping(data):
    spec, ex = data.spec, data.examples
    assert spec.categorical_names == (
        "user",
        "item",
        "gender",
        "occupation",
        "age_group",
        "zip_region",
        "release_decade",
    )
    assert spec.table_sizes == (944, 1683, 3, 22, 8, 12, 9)
    assert spec.dense_names[:2] == ("log1p_age", "release_year")
    assert len(spec.dense_names) == 2 + 18 and "genre_unknown" not in spec.dense_names
    assert (ex.categorical < np.array(spec.table_sizes)).all()
    # The first rating of ml-100k.inter: user 196 rated item 242 with 3 stars.
    assert tuple(ex.categorical[0, :2]) == (196, 242) and ex.labels[0] == 0.0
    # User 196: 49 years (group 45-49 = 5), male (2), writer, zip 55105 (region 6).
    assert tuple(ex.categorical[0, 2:6]) == (2, 21, 5, 6)
    assert ex.dense[0, 0] == pytest.approx(np.log1p(49))
    # Item 242 (Kolya, 1996, Comedy): decade 1990s = 8, year 0.96, one genre flag.
    assert ex.categorical[0, 6] == 8 and ex.dense[0, 1] == pytest.approx(0.96)
    comedy = spec.dense_names.index("genre_Comedy")
    assert ex.dense[0, comedy] == 1.0 and ex.dense[0, 2:].sum() == 1.0


@needs_recbole
def test_load_dataset_names_it_and_records_the_digests():
    dataset = load_dataset(DataSelection(dataset="movielens-100k"), seed=0)
    assert dataset.name == "movielens-100k"
    assert len(dataset.train) + len(dataset.validation) + len(dataset.test) == 100_000
    assert dataset.info["user_feature"] == "user"
    assert dataset.info["sha256"] == dict(sorted(movielens.EXPECTED_SHA256.items()))


def test_missing_recbole_names_the_install_command(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(movielens.importlib.metadata, "distribution", not_installed)
    with pytest.raises(MissingDependencyError) as excinfo:
        load_dataset(DataSelection(dataset="movielens-100k"), seed=0)
    message = str(excinfo.value)
    assert "pip install --no-deps recbole==1.2.1" in message and "\n" not in message


def test_recbole_without_the_files_names_the_install_command(monkeypatch):
    class Empty:
        files = []

    monkeypatch.setattr(movielens.importlib.metadata, "distribution", lambda name: Empty())
    with pytest.raises(MissingDependencyError, match=r"lacks ml-100k\..*recbole==1\.2\.1"):
        movielens.locate_files()


def test_a_file_with_another_digest_is_refused(monkeypatch, tmp_path):
    # Files written here, not copies of MovieLens: only the digest check is under test.
    paths = {}
    for kind in movielens.EXPECTED_SHA256:
        paths[kind] = tmp_path / f"ml-100k.{kind}"
        paths[kind].write_text("header\n1\t2\n")
    monkeypatch.setattr(movielens, "locate_files", lambda: paths)
    with pytest.raises(DependencyMismatchError) as excinfo:
        movielens.load()
    message = str(excinfo.value)
    assert "expected " in message and "recbole==1.2.1" in message
    assert isinstance(excinfo.value, MissingDependencyError)
