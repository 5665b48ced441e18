"""``enclaverec keys``: identity key pairs for members of a federation and data owners."""

from __future__ import annotations

import argparse
from pathlib import Path

from enclaverec.cli.output import stdout_console
from enclaverec.cli.registry import add_command


def register(subparsers: argparse._SubParsersAction) -> None:
    group = add_command(subparsers, "keys", help="make identity key pairs")
    sub = group.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    new = add_command(
        sub,
        "new",
        help="a P-256 key pair; the private key PEM-encrypted under a passphrase",
        description=(
            "Write a new P-256 key pair: the private key to FILE (PKCS#8, encrypted under a\n"
            "passphrase, mode 0600) and the public key to FILE.pub. The passphrase is read\n"
            "from the terminal, or from the first line of --passphrase-file; never from\n"
            "arguments or environment variables."
        ),
        handler=_new,
    )
    new.add_argument("--out", required=True, type=Path, metavar="FILE", help="private key file")
    new.add_argument(
        "--passphrase-file",
        type=Path,
        metavar="FILE",
        help="read the passphrase from the first line of FILE instead of prompting",
    )


def _new(args: argparse.Namespace) -> int:
    from enclaverec.crypto import keys

    passphrase = keys.read_passphrase(args.passphrase_file, confirm=True)
    private_key = keys.generate_private_key()
    private_path, public_path = keys.save_key_pair(private_key, args.out, passphrase)
    console = stdout_console()
    console.print(f"private key (encrypted, mode 0600): {private_path}", markup=False)
    console.print(f"public key: {public_path}", markup=False)
    console.print(f"fingerprint: {keys.fingerprint(private_key.public_key())}", markup=False)
    return 0
