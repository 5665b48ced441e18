"""A data set split into W encrypted worker shards for secure distributed training, after
the same keyed train/validation/test split as ``train``, and read back inside a worker.

Each shard holds one worker's IID share (``data.partition``, mode ``iid``) of the
training, validation and test rows, already featurised (hashed categories), one row per
line of text::

    split row_id position label dense_1 .. dense_n category_1 .. category_m

``split`` is 0/1/2 (train, validation, test); ``position`` is the row's index in its split
of the whole data set (the order ``train`` uses), so that synchronous workers can take the
rows of ``train``'s step t that are theirs. The text is encrypted in memory into the
chunked AES-256-GCM format of ``data.encrypted`` (one data key for all shards); plaintext
never touches the disk. ``shards.json`` beside the shards is public: names, sizes, header
digests and ``test_split_sha256``; the key broker receives the header digests from the
owner and gives each worker its own, so shards cannot be swapped or replaced.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec

from enclaverec.data import encrypted
from enclaverec.data.partition import partition_dataset
from enclaverec.data.schema import DataSet, Examples, FeatureSpec, split_sha256
from enclaverec.errors import DataFormatError, IntegrityError, UsageError
from enclaverec.files import write_atomically

MANIFEST_FILE = "shards.json"
MANIFEST_FORMAT = "enclaverec-shards-v1"
SPLITS = ("train", "validation", "test")
MAX_SHARDS = 256


def shard_file_name(index: int) -> str:
    return f"shard-{index}.enc"


@dataclass(frozen=True)
class ShardInfo:
    """One shard as the manifest lists it (public)."""

    index: int
    file: str
    header_sha256: str
    rows: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "file": self.file,
            "header_sha256": self.header_sha256,
            "rows": dict(self.rows),
        }


@dataclass(frozen=True)
class ShardManifest:
    """``shards.json``: what the owner, ``init`` and the key broker need to know about the
    shards, and nothing secret."""

    dataset: str
    dataset_name: str
    dataset_id: str
    owner_fingerprint: str
    spec: FeatureSpec
    seed: int
    split_rows: Mapping[str, int]
    test_split_sha256: str
    shards: tuple[ShardInfo, ...]
    info: Mapping[str, Any] = field(default_factory=dict)
    hashing: Mapping[str, Any] | None = None
    """The category hashing of ``--data`` sources (None for built-in data sets): part of
    the plan, so that an exported model scores new rows the same way."""

    @property
    def workers(self) -> int:
        return len(self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "dataset": self.dataset,
            "dataset_name": self.dataset_name,
            "dataset_id": self.dataset_id,
            "owner_fingerprint": self.owner_fingerprint,
            "features": self.spec.to_dict(),
            "seed": self.seed,
            "split_rows": dict(self.split_rows),
            "test_split_sha256": self.test_split_sha256,
            "shards": [shard.to_dict() for shard in self.shards],
            "info": dict(self.info),
            "hashing": dict(self.hashing) if self.hashing is not None else None,
        }

    @classmethod
    def load(cls, folder: Path) -> ShardManifest:
        path = Path(folder) / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise UsageError(f"no {MANIFEST_FILE} in {folder}: not a sharded data set") from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataFormatError(f"{path} is not JSON") from exc
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise DataFormatError(f"{path} is not a {MANIFEST_FORMAT} manifest")
        try:
            shards = tuple(
                ShardInfo(
                    index=int(item["index"]),
                    file=str(item["file"]),
                    header_sha256=str(item["header_sha256"]),
                    rows={name: int(item["rows"][name]) for name in SPLITS},
                )
                for item in data["shards"]
            )
            manifest = cls(
                dataset=str(data["dataset"]),
                dataset_name=str(data["dataset_name"]),
                dataset_id=str(data["dataset_id"]),
                owner_fingerprint=str(data["owner_fingerprint"]),
                spec=FeatureSpec.from_dict(data["features"]),
                seed=int(data["seed"]),
                split_rows={name: int(data["split_rows"][name]) for name in SPLITS},
                test_split_sha256=str(data["test_split_sha256"]),
                shards=shards,
                info=dict(data.get("info", {})),
                hashing=data.get("hashing"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"{path}: malformed manifest ({exc})") from exc
        if [shard.index for shard in shards] != list(range(len(shards))) or not shards:
            raise DataFormatError(f"{path}: shards must be numbered 0..W-1")
        for shard in shards:
            if Path(shard.file).name != shard.file:
                raise DataFormatError(f"{path}: a shard file name must not hold a folder")
        return manifest


# --- writing ---------------------------------------------------------------------------


def _format_rows(split: int, examples: Examples, positions: np.ndarray) -> bytes:
    """The shard text of some rows (float32 values with 9 significant digits round-trip
    exactly)."""
    if not len(examples):
        return b""
    columns = [
        np.full((len(examples), 1), split, dtype=np.int64),
        examples.row_ids.reshape(-1, 1).astype(np.int64),
        positions.reshape(-1, 1).astype(np.int64),
    ]
    out = io.StringIO()
    ints = np.hstack(columns)
    label = examples.labels.reshape(-1, 1)
    dense = examples.dense
    cats = examples.categorical.astype(np.int64)
    int_text = [" ".join(map(str, row)) for row in ints.tolist()]
    float_text = [
        " ".join(format(value, ".9g") for value in row)
        for row in np.hstack([label, dense]).astype(np.float32).tolist()
    ]
    cat_text = [" ".join(map(str, row)) for row in cats.tolist()]
    for a, b, c in zip(int_text, float_text, cat_text, strict=True):
        out.write(f"{a} {b} {c}\n" if c else f"{a} {b}\n")
    return out.getvalue().encode("ascii")


def shard_plaintext(share: DataSet, whole: DataSet) -> bytes:
    """One worker's rows as shard text; positions are indexes in ``whole``'s splits."""
    parts = []
    for split, name in enumerate(SPLITS):
        mine: Examples = getattr(share, name)
        everyone: Examples = getattr(whole, name)
        positions = np.searchsorted(everyone.row_ids, mine.row_ids)
        if len(mine) and not np.array_equal(everyone.row_ids[positions], mine.row_ids):
            raise UsageError("a shard's rows are not rows of the data set")  # partition bug
        parts.append(_format_rows(split, mine, positions))
    return b"".join(parts)


def encrypt_shards(
    dataset: DataSet,
    *,
    workers: int,
    seed: int,
    owner: ec.EllipticCurvePublicKey,
    output_dir: Path,
    dataset_name: str,
    chunk_size: int = encrypted.DEFAULT_CHUNK_SIZE,
) -> ShardManifest:
    """Split ``dataset`` (already split by ``seed``, as ``train`` does) into ``workers``
    IID shards, encrypt each with one new data key wrapped to ``owner``, and write them
    with ``shards.json`` into ``output_dir`` (created; must not hold shards already).
    On any failure the files this call wrote are removed."""
    if isinstance(workers, bool) or not 1 <= workers <= MAX_SHARDS:
        raise UsageError(f"--shards must be 1 to {MAX_SHARDS}, got {workers!r}")
    for name in SPLITS:
        ids = getattr(dataset, name).row_ids
        if len(ids) > 1 and not np.all(np.diff(ids) > 0):
            raise UsageError(f"the {name} rows are not in row-id order")
    shares = partition_dataset(dataset, parties=workers, mode="iid", seed=seed)
    output_dir = Path(output_dir)
    targets = [output_dir / shard_file_name(i) for i in range(workers)]
    manifest_path = output_dir / MANIFEST_FILE
    for target in [*targets, manifest_path]:
        if target.exists():
            raise UsageError(f"refusing to overwrite existing file {target}")
    key = encrypted.DataSetKey.generate(owner, dataset_name)
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    infos = []
    try:
        for index, (share, target) in enumerate(zip(shares, targets, strict=True)):
            text = shard_plaintext(share, dataset)
            buffer = io.BytesIO()
            encrypted.encrypt_stream(
                io.BytesIO(text),
                buffer,
                key,
                file_name=shard_file_name(index).removesuffix(encrypted.ENCRYPTED_SUFFIX),
                chunk_size=chunk_size,
            )
            del text
            data = buffer.getvalue()
            write_atomically(target, data, mode=0o644)
            written.append(target)
            header = encrypted.read_unverified_header(target)
            infos.append(
                ShardInfo(
                    index=index,
                    file=target.name,
                    header_sha256=header.sha256.hex(),
                    rows={name: len(getattr(share, name)) for name in SPLITS},
                )
            )
        info = {k: v for k, v in dataset.info.items() if isinstance(v, int | float | str)}
        manifest = ShardManifest(
            dataset=dataset.name,
            dataset_name=dataset_name,
            dataset_id=key.dataset_id.hex(),
            owner_fingerprint=key.owner_fingerprint,
            spec=dataset.spec,
            seed=seed,
            split_rows={name: len(getattr(dataset, name)) for name in SPLITS},
            test_split_sha256=split_sha256(dataset.test.row_ids),
            shards=tuple(infos),
            info=info,
            hashing=dataset.info.get("hashing"),
        )
        write_atomically(
            manifest_path,
            (json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n").encode(),
            mode=0o644,
        )
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created and not any(output_dir.iterdir()):
            output_dir.rmdir()
        raise
    return manifest


# --- reading (inside a worker) ---------------------------------------------------------


@dataclass(frozen=True)
class WorkerShard:
    """One worker's decrypted rows (in memory only), with each row's position in its
    split of the whole data set."""

    train: Examples = field(repr=False)
    validation: Examples = field(repr=False)
    test: Examples = field(repr=False)
    positions: Mapping[str, np.ndarray] = field(repr=False)

    def split(self, name: str) -> Examples:
        return getattr(self, name)


def _parse_shard(text: bytes, spec: FeatureSpec, source: str) -> WorkerShard:
    n_dense, n_cat = spec.num_dense, spec.num_categorical
    width = 4 + n_dense + n_cat
    values = np.array(text.split(), dtype=object)
    if len(values) % width:
        raise DataFormatError("a shard row has the wrong number of fields", path=source)
    if not len(values):
        raise DataFormatError("the shard holds no rows", path=source)
    table = values.reshape(-1, width)
    try:
        ints = table[:, :3].astype(np.int64)
        floats = table[:, 3 : 4 + n_dense].astype(np.float32)
        cats = table[:, 4 + n_dense :].astype(np.int64)
    except (ValueError, OverflowError) as exc:
        raise DataFormatError("a shard row holds a malformed number", path=source) from exc
    splits: dict[str, Examples] = {}
    positions: dict[str, np.ndarray] = {}
    for split, name in enumerate(SPLITS):
        rows = ints[:, 0] == split
        splits[name] = Examples(
            floats[rows, 1:].reshape(-1, n_dense),
            cats[rows].reshape(-1, n_cat).astype(np.int32),
            floats[rows, 0],
            ints[rows, 1],
        )
        positions[name] = ints[rows, 2]
    return WorkerShard(**splits, positions=positions)


def load_shard(
    path: Path, data_key: bytes, *, expected_header_sha256: bytes, spec: FeatureSpec
) -> WorkerShard:
    """Decrypt and parse one shard in memory. Its header must be the one the owner
    registered for this worker (else ``IntegrityError``: another shard, another data set
    or a replaced file), and every chunk must authenticate."""
    header = encrypted.read_unverified_header(Path(path))
    if header.sha256 != expected_header_sha256:
        raise IntegrityError(
            f"{Path(path).name}: not the shard the owner registered for this worker "
            "(header digest differs)"
        )
    with encrypted.EncryptedDataReader(Path(path), data_key) as reader:
        text = b"".join(chunk for _, chunk in reader.iter_chunks())
    return _parse_shard(text, spec, str(path))


def header_digests(manifest: ShardManifest) -> Sequence[bytes]:
    return [bytes.fromhex(shard.header_sha256) for shard in manifest.shards]


def manifest_digest(manifest: ShardManifest) -> str:
    """SHA-256 of the canonical manifest JSON (what the owner's submission names)."""
    return hashlib.sha256(json.dumps(manifest.to_dict(), sort_keys=True).encode()).hexdigest()
