"""``enclaverec data encrypt | decrypt``: chunked AES-256-GCM data sets for the data owner.

Security: the owner's private key is read from a file and unlocked with a passphrase read
from a prompt or ``--passphrase-file``, never from arguments or the environment; neither the
key, the passphrase nor the data key is ever printed or logged. Plaintext goes to the
terminal only with an explicit ``--output -``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from enclaverec.cli.output import progress, stderr_console, stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.errors import UsageError

if TYPE_CHECKING:
    from enclaverec.data.encrypted import VerificationSummary

log = logging.getLogger("enclaverec.data")

_ENCRYPT_DESCRIPTION = """\
Encrypt Criteo files (plain or gzip) into one data set: one random data key, wrapped to the
owner's public key (from `enclaverec keys new`), encrypts every file. Each PATH becomes
DIR/<name>.enc (a gzip input is stored decompressed, without its .gz). Chunks of about
--chunk-size bytes hold whole lines, so enclaves can read them in any order.

The .enc files may go to untrusted storage: their headers show the data set and file
names, ids, sizes and the owner key's fingerprint, and nothing else.

With --shards W (for secure distributed training) the rows are first split into train,
validation and test by --seed exactly as `train` splits them (so the test rows are the
same), featurised, and dealt IID to W shards; DIR gets shard-0.enc .. shard-<W-1>.enc and
shards.json (public: sizes, header digests, test_split_sha256). The source is Criteo
files (PATH...) or a built-in --dataset. No plaintext row is written to disk."""

_DECRYPT_DESCRIPTION = """\
Verify, and optionally decrypt, an encrypted data file with the owner's private key.
Without --output, every chunk is authenticated and a summary printed; no plaintext is
written anywhere. With --output FILE, the plaintext appears at FILE (mode 0600) only after
every chunk verified; on any failure nothing is left behind. `--output -` writes the
plaintext to standard output, after verifying the whole file first.

Exit code 4 when the file fails authentication (modified, truncated, reordered, spliced,
or encrypted to another owner key)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``encrypt`` and ``decrypt`` to the ``data`` group."""
    encrypt = add_command(
        subparsers,
        "encrypt",
        help="encrypt Criteo files into a data set for untrusted storage",
        description=_ENCRYPT_DESCRIPTION,
        handler=_encrypt,
    )
    encrypt.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="input file")
    encrypt.add_argument(
        "--owner-key",
        required=True,
        type=Path,
        metavar="OWNER.pub",
        help="the data owner's public key (PEM, P-256)",
    )
    encrypt.add_argument(
        "--output", required=True, type=Path, metavar="DIR", help="folder for the .enc files"
    )
    encrypt.add_argument(
        "--dataset-name",
        metavar="NAME",
        help="the data set's name in every header (default: the output folder's name)",
    )
    encrypt.add_argument(
        "--chunk-size",
        type=int,
        metavar="BYTES",
        # The value is repeated here so that building the parser imports no cryptography;
        # a test keeps it equal to enclaverec.data.encrypted.DEFAULT_CHUNK_SIZE.
        help="target plaintext bytes per chunk (default: 1048576)",
    )

    encrypt.add_argument(
        "--shards",
        metavar="W",
        help="split into W encrypted worker shards after train's keyed split (distributed)",
    )
    encrypt.add_argument(
        "--dataset",
        choices=("synthetic", "movielens-100k"),
        help="(with --shards) a built-in data set instead of PATHs",
    )
    encrypt.add_argument(
        "--seed", metavar="N", help="(with --shards) the split's seed, as train's (default: 0)"
    )
    encrypt.add_argument(
        "--table-size", metavar="ROWS", help="(with --shards and PATHs) rows per embedding table"
    )
    encrypt.add_argument(
        "--on-bad-line",
        choices=("fail", "skip"),
        default="fail",
        help="(with --shards) malformed lines (default: fail)",
    )

    decrypt = add_command(
        subparsers,
        "decrypt",
        help="verify or decrypt an encrypted data file with the owner's key",
        description=_DECRYPT_DESCRIPTION,
        handler=_decrypt,
    )
    decrypt.add_argument("file", type=Path, metavar="FILE", help="an .enc file")
    decrypt.add_argument(
        "--key",
        required=True,
        type=Path,
        metavar="OWNER.key",
        help="the owner's private key (encrypted PEM from `enclaverec keys new`)",
    )
    decrypt.add_argument(
        "--passphrase-file",
        type=Path,
        metavar="FILE",
        help="read the key's passphrase from the first line of FILE instead of prompting",
    )
    decrypt.add_argument(
        "--output",
        metavar="OUT",
        help="write the plaintext to OUT (must not exist), or to standard output with '-'",
    )


def _encrypt(args: argparse.Namespace) -> int:
    from enclaverec.crypto import keys
    from enclaverec.data import encrypted

    if args.shards is not None:
        return _encrypt_shards(args)
    if args.dataset is not None or args.seed is not None or args.table_size is not None:
        raise UsageError("--dataset, --seed and --table-size go with --shards")
    if not args.paths:
        raise UsageError("give the files to encrypt (PATH...)")
    output_dir: Path = args.output
    _check_encryption_output(output_dir)
    owner = keys.load_public_key(args.owner_key)
    dataset_name = args.dataset_name or output_dir.resolve().name
    chunk_size = encrypted.DEFAULT_CHUNK_SIZE if args.chunk_size is None else args.chunk_size
    dataset = encrypted.DataSetKey.generate(owner, dataset_name)
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        with progress(transient=True) as bar:
            task = bar.add_task("encrypting", total=_plain_total(args.paths), status="")
            infos = encrypted.encrypt_files(
                args.paths,
                output_dir,
                dataset,
                chunk_size=chunk_size,
                on_progress=lambda n: bar.advance(task, n),
            )
    except BaseException:
        # encrypt_files removed its own outputs; remove the folder too if this call made it.
        if created and not any(output_dir.iterdir()):
            output_dir.rmdir()
        raise

    console = stdout_console()
    console.print(
        f"data set: {dataset.dataset_name} (id {dataset.dataset_id.hex()})",
        markup=False,
        soft_wrap=True,
    )
    console.print(f"owner key: {dataset.owner_fingerprint}", markup=False, soft_wrap=True)
    for source, info in zip(args.paths, infos, strict=True):
        console.print(
            f"{source} -> {info.path}: {info.lines} lines, {info.chunks} chunks, "
            f"{info.ciphertext_bytes} bytes",
            markup=False,
            soft_wrap=True,
        )
    log.info("encrypted %d file(s) into %s", len(infos), output_dir)
    return 0


def _encrypt_shards(args: argparse.Namespace) -> int:
    from enclaverec.cli.options import parse_integer
    from enclaverec.crypto import keys
    from enclaverec.data.shards import MAX_SHARDS, encrypt_shards
    from enclaverec.data.sources import DataSelection, load_dataset

    workers = parse_integer("shards", args.shards, minimum=1)
    if workers > MAX_SHARDS:
        raise UsageError(f"--shards must be at most {MAX_SHARDS}, got {workers}")
    if (args.dataset is None) == (not args.paths):
        raise UsageError("with --shards give exactly one of --dataset NAME or PATH...")
    seed = parse_integer("seed", args.seed if args.seed is not None else 0, minimum=0)
    output_dir: Path = args.output
    _check_encryption_output(output_dir)
    owner = keys.load_public_key(args.owner_key)
    selection = (
        DataSelection(dataset=args.dataset)
        if args.dataset is not None
        else DataSelection(paths=tuple(args.paths))
    )
    dataset = load_dataset(
        selection,
        seed=seed,
        table_size=parse_integer("table-size", args.table_size, minimum=2)
        if args.table_size
        else None,
        on_bad_line=args.on_bad_line,
        progress=True,
    )
    kwargs = {} if args.chunk_size is None else {"chunk_size": args.chunk_size}
    manifest = encrypt_shards(
        dataset,
        workers=workers,
        seed=seed,
        owner=owner,
        output_dir=output_dir,
        dataset_name=args.dataset_name or output_dir.resolve().name,
        **kwargs,
    )
    console = stdout_console()
    console.print(
        f"data set: {manifest.dataset_name} (id {manifest.dataset_id}), {dataset.name}, "
        f"seed {seed}; test split sha256 {manifest.test_split_sha256}",
        markup=False,
        soft_wrap=True,
    )
    console.print(f"owner key: {manifest.owner_fingerprint}", markup=False, soft_wrap=True)
    for shard in manifest.shards:
        rows = ", ".join(f"{count} {name}" for name, count in shard.rows.items())
        console.print(f"{output_dir / shard.file}: {rows}", markup=False, soft_wrap=True)
    return 0


def _check_encryption_output(output_dir: Path) -> None:
    """A data set goes into a new or empty folder (the output rule of every command).

    Said specifically for a folder holding another data set: every run makes a new data
    key, so adding files there would mix two data sets under two keys in one folder.
    """
    from enclaverec.app.outputs import check_output_folder
    from enclaverec.data.encrypted import ENCRYPTED_SUFFIX, read_unverified_header
    from enclaverec.errors import EnclaveRecError, OutputFolderError

    held = sorted(output_dir.glob(f"*{ENCRYPTED_SUFFIX}")) if output_dir.is_dir() else []
    if held:
        try:
            header = read_unverified_header(held[0])
            which = f"data set {header.dataset_name!r}, id {header.dataset_id.hex()}"
        except EnclaveRecError:
            which = f"{held[0].name}"
        raise OutputFolderError(
            f"{output_dir} already holds another encrypted data set ({which}); each "
            "encryption makes a new data key, so give a new or empty --output folder"
        )
    check_output_folder(output_dir, overwrite=True)  # a file, or not writable
    if output_dir.is_dir() and any(output_dir.iterdir()):
        raise OutputFolderError(
            f"refusing to write into the non-empty folder {output_dir}: a data set goes "
            "into a new or empty folder"
        )


def _plain_total(paths: list[Path]) -> int | None:
    """Bytes of plaintext to encrypt, for the progress bar: known only when no input is
    gzip (recognised, as the encryption does, by its magic bytes)."""
    from enclaverec.data.criteo import starts_gzip

    total = 0
    for path in paths:
        try:
            with path.open("rb") as handle:
                if starts_gzip(handle):
                    return None
            total += path.stat().st_size
        except OSError:
            return None  # encrypt_files reports the missing or unreadable file
    return total


def _decrypt(args: argparse.Namespace) -> int:
    from enclaverec.crypto import keys
    from enclaverec.data import encrypted

    # The header first: a file that is not ours fails before a passphrase is asked for.
    header = encrypted.read_unverified_header(args.file)
    passphrase = keys.read_passphrase(args.passphrase_file, confirm=False)
    private_key = keys.load_private_key(args.key, passphrase)
    data_key = encrypted.unwrap_data_key(header, private_key)

    if args.output == "-":
        # A reader of the pipe that stops early (`| head`) ends the command with exit 1,
        # quietly: cli/main.py handles BrokenPipeError for every command.
        with encrypted.EncryptedDataReader(args.file, data_key) as reader:
            summary = reader.write_plaintext(sys.stdout.buffer)
        _print_summary(summary, stderr=True)
    elif args.output is not None:
        summary = encrypted.decrypt_to_file(args.file, data_key, Path(args.output))
        _print_summary(summary, stderr=False, written_to=Path(args.output))
    else:
        with encrypted.EncryptedDataReader(args.file, data_key) as reader:
            summary = reader.verify_all()
        _print_summary(summary, stderr=False)
    return 0


def _print_summary(
    summary: VerificationSummary, *, stderr: bool, written_to: Path | None = None
) -> None:
    console = stderr_console() if stderr else stdout_console()
    console.print(
        f"verified {summary.path}: data set {summary.dataset_name}, file {summary.file_name}, "
        f"{summary.chunks} chunks, {summary.lines} lines, {summary.plaintext_bytes} bytes",
        markup=False,
        soft_wrap=True,
    )
    if written_to is not None:
        console.print(
            f"plaintext written to {written_to} (mode 0600)", markup=False, soft_wrap=True
        )
