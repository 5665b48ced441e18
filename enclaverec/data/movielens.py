"""The ``movielens-100k`` data set, read from the files that ``recbole==1.2.1`` ships.

recbole is never imported (it needs torch and ray) and its files are never copied (the
MovieLens licence forbids redistribution): they are found through ``importlib.metadata``
and accepted only with the SHA-256 digests below. Each is read once into memory, hashed,
and parsed from those same bytes.

The mapping into the schema (docs/data.md has the full table): one row per rating, in the
order of ``ml-100k.inter``; label = rating >= 4; categorical user, item, gender,
occupation, age group, zip region, release decade (fixed id maps from the catalogue
files: the same for everyone); dense log1p(age), normalised release year, and one 0/1
flag per genre.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enclaverec.data.schema import (
    DENSE_DTYPE,
    LABEL_DTYPE,
    ROW_ID_DTYPE,
    SPARSE_DTYPE,
    BuiltinDataSet,
    Examples,
    FeatureSpec,
    SourceRows,
)
from enclaverec.errors import DataFormatError, DependencyMismatchError, MissingDependencyError

INSTALL_COMMAND = "pip install --no-deps recbole==1.2.1"
DISTRIBUTION = "recbole"
_FOLDER = "recbole/dataset_example/ml-100k"
# SHA-256 of the files in the recbole 1.2.1 wheel.
EXPECTED_SHA256 = {
    "inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}
NUM_RATINGS = 100_000
POSITIVE_RATING = 4.0
USER_FEATURE = "user"

# MovieLens-1M's age groups (its README): under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+.
AGE_GROUP_BOUNDS = (18, 25, 35, 45, 50, 56)
# Release decades: 1 = the 1920s or earlier, 2 = the 1930s, ..., 8 = the 1990s; 0 unknown.
FIRST_DECADE, LAST_DECADE = 1920, 1990
# Zip regions: the first character; a digit d (the US ZIP zone) is row d + 1, anything
# else (Canadian and other postcodes) is row 11; an empty code is row 0.
NON_US_ZIP_ROW = 11
# The genre "unknown" (two items) is no genre: it gets no flag.
UNKNOWN_GENRE = "unknown"
YEAR_ORIGIN, YEAR_SCALE = 1900.0, 100.0


@dataclass(frozen=True)
class MovieLensData:
    spec: FeatureSpec
    examples: Examples
    file_sha256: dict[str, str]


def locate_files() -> dict[str, Path]:
    """Paths of the ``.inter``, ``.user`` and ``.item`` files of the installed recbole.

    Raises:
        MissingDependencyError: recbole is not installed, or its files are absent.
    """
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise MissingDependencyError(
            f"movielens-100k reads the files of recbole 1.2.1, which is not installed: "
            f"{INSTALL_COMMAND}"
        ) from exc
    wanted = {f"{_FOLDER}/ml-100k.{kind}": kind for kind in EXPECTED_SHA256}
    found: dict[str, Path] = {}
    for entry in distribution.files or ():
        kind = wanted.get(str(entry).replace("\\", "/"))
        if kind is not None:
            found[kind] = Path(str(distribution.locate_file(entry)))
    missing = sorted(set(EXPECTED_SHA256) - {k for k, p in found.items() if p.is_file()})
    if missing:
        raise MissingDependencyError(
            f"recbole is installed but lacks ml-100k.{', ml-100k.'.join(missing)}: "
            f"{INSTALL_COMMAND}"
        )
    return found


def read_verified(paths: dict[str, Path]) -> dict[str, bytes]:
    """Each file's bytes, accepted only with its expected SHA-256.

    Raises:
        DependencyMismatchError: a file's digest differs (another recbole version, or a
            modified file).
    """
    contents: dict[str, bytes] = {}
    for kind, path in sorted(paths.items()):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != EXPECTED_SHA256[kind]:
            raise DependencyMismatchError(
                f"{path}: SHA-256 {digest}, expected {EXPECTED_SHA256[kind]} "
                f"(recbole 1.2.1's file): {INSTALL_COMMAND}"
            )
        contents[kind] = data
    return contents


def _table(data: bytes, kind: str, columns: int) -> list[list[str]]:
    """The rows of an atomic file (a header line, then tab-separated rows)."""
    lines = data.decode("utf-8").split("\n")
    rows = [line.split("\t") for line in lines[1:] if line]
    for number, row in enumerate(rows, start=2):
        if len(row) != columns:
            raise DataFormatError(
                f"expected {columns} fields, got {len(row)}", path=f"ml-100k.{kind}", line=number
            )
    return rows


def _age_group(age: int) -> int:
    return 1 + int(np.searchsorted(AGE_GROUP_BOUNDS, age, side="right"))


def _zip_region(code: str) -> int:
    if not code:
        return 0
    return int(code[0]) + 1 if code[0].isdigit() else NON_US_ZIP_ROW


def _decade(year: int | None) -> int:
    if year is None:
        return 0
    return 1 + (min(max(year, FIRST_DECADE), LAST_DECADE) - FIRST_DECADE) // 10


def load() -> MovieLensData:
    """All 100,000 ratings in the schema (row id = index in ``ml-100k.inter``)."""
    contents = read_verified(locate_files())
    users = _table(contents["user"], "user", 5)  # user_id age gender occupation zip_code
    items = _table(contents["item"], "item", 4)  # item_id movie_title release_year class
    ratings = _table(contents["inter"], "inter", 4)  # user_id item_id rating timestamp

    # Fixed id maps from the catalogue files: row = position in the file + 1 (0 unused).
    user_row = {row[0]: i + 1 for i, row in enumerate(users)}
    item_row = {row[0]: i + 1 for i, row in enumerate(items)}
    occupations = {name: i + 1 for i, name in enumerate(sorted({row[3] for row in users}))}
    genres = sorted({g for row in items for g in row[3].split(" ") if g and g != UNKNOWN_GENRE})
    genre_index = {name: i for i, name in enumerate(genres)}

    # Per-user and per-item features, indexed by catalogue row.
    user_categorical = np.zeros((len(users) + 1, 5), dtype=SPARSE_DTYPE)
    user_dense = np.zeros((len(users) + 1, 1), dtype=np.float64)
    for i, (_, age, gender, occupation, zip_code) in enumerate(users, start=1):
        age_years = int(age)
        user_categorical[i] = (
            i,
            {"F": 1, "M": 2}.get(gender, 0),
            occupations[occupation],
            _age_group(age_years),
            _zip_region(zip_code),
        )
        user_dense[i, 0] = np.log1p(age_years)
    known_years = [int(row[2]) for row in items if row[2].isdigit()]
    mean_year = float(np.mean(known_years))
    item_categorical = np.zeros((len(items) + 1, 2), dtype=SPARSE_DTYPE)
    item_dense = np.zeros((len(items) + 1, 1 + len(genres)), dtype=np.float64)
    for i, (_, _, year_text, classes) in enumerate(items, start=1):
        year = int(year_text) if year_text.isdigit() else None
        item_categorical[i] = (i, _decade(year))
        item_dense[i, 0] = ((mean_year if year is None else year) - YEAR_ORIGIN) / YEAR_SCALE
        for name in classes.split(" "):
            if name in genre_index:
                item_dense[i, 1 + genre_index[name]] = 1.0

    try:
        u = np.array([user_row[row[0]] for row in ratings], dtype=np.int64)
        v = np.array([item_row[row[1]] for row in ratings], dtype=np.int64)
        stars = np.array([float(row[2]) for row in ratings])
    except (KeyError, ValueError) as exc:
        raise DataFormatError(f"a rating names an unknown user or item: {exc}") from exc
    if len(ratings) != NUM_RATINGS:
        raise DataFormatError(f"expected {NUM_RATINGS} ratings, got {len(ratings)}")

    # Column order: user, item first (the strongest features), then side features.
    categorical = np.column_stack(
        (
            user_categorical[u, 0],
            item_categorical[v, 0],
            user_categorical[u, 1:],
            item_categorical[v, 1:],
        )
    ).astype(SPARSE_DTYPE)
    dense = np.column_stack((user_dense[u], item_dense[v])).astype(DENSE_DTYPE)
    spec = FeatureSpec(
        dense_names=("log1p_age", "release_year") + tuple(f"genre_{g}" for g in genres),
        categorical_names=(
            USER_FEATURE,
            "item",
            "gender",
            "occupation",
            "age_group",
            "zip_region",
            "release_decade",
        ),
        table_sizes=(
            len(users) + 1,
            len(items) + 1,
            3,
            len(occupations) + 1,
            len(AGE_GROUP_BOUNDS) + 2,
            NON_US_ZIP_ROW + 1,
            (LAST_DECADE - FIRST_DECADE) // 10 + 2,
        ),
    )
    examples = Examples(
        dense=dense,
        categorical=categorical,
        labels=(stars >= POSITIVE_RATING).astype(LABEL_DTYPE),
        row_ids=np.arange(len(ratings), dtype=ROW_ID_DTYPE),
    )
    digests = {kind: hashlib.sha256(data).hexdigest() for kind, data in contents.items()}
    return MovieLensData(spec=spec, examples=examples, file_sha256=digests)


def load_rows() -> SourceRows:
    """The registry's loader: every rating as a row, the user feature and the files'
    digests."""
    loaded = load()
    return SourceRows(
        spec=loaded.spec,
        examples=loaded.examples,
        info={"user_feature": USER_FEATURE, "sha256": dict(sorted(loaded.file_sha256.items()))},
    )


DATASET = BuiltinDataSet(
    name="movielens-100k",
    summary=f"MovieLens-100K ratings, label = rating >= 4 (needs `{INSTALL_COMMAND}`)",
    load=load_rows,
)
