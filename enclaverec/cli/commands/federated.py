"""``enclaverec federated``: horizontal federated learning with an attested aggregator.

``init`` writes a federation's files; ``aggregator`` and ``party`` run one role each (for
real multi-machine runs); ``simulate`` runs them all on this machine as separate processes
over loopback and writes ``metrics.json``. TensorFlow is imported only by a party that
trains the DLRM, inside its handler.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from enclaverec.app.federation import (
    DEFAULT_DEADLINE_SECONDS,
    DEFAULT_LOCAL_EPOCHS,
    DEFAULT_PARTITION,
    DEFAULT_QUORUM,
    DEFAULT_ROUNDS,
    METRICS_FILE,
    FederationPlanConfig,
    FederationSetup,
    SimulationConfig,
    build_plan,
    load_party_shares,
    model_choices,
    simulate_federation,
)
from enclaverec.cli.data_flags import add_data_flags as _add_data_flags
from enclaverec.cli.data_flags import data_config as _data_config
from enclaverec.cli.options import parse_integer, parse_path, parse_positive_float
from enclaverec.cli.output import ConsoleEvents, stdout_console
from enclaverec.cli.registry import add_command
from enclaverec.cli.roles import add_role_command
from enclaverec.errors import UsageError
from enclaverec.federated.strategies import DEFAULT_STRATEGY, Clipping, strategy_help
from enclaverec.federated.strategies.adaptive import AdaptiveOptions
from enclaverec.federated.strategies.fedprox import FedProxOptions
from enclaverec.roles import aggregator as aggregator_role
from enclaverec.roles import party as party_role
from enclaverec.tee.kinds import TEEKind, parse_tee, tee_choices, tee_help
from enclaverec.transport.endpoints import require_loopback_for_plaintext

log = logging.getLogger(__name__)


# --- shared flags -----------------------------------------------------------------------


def _add_plan_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parties", required=True, metavar="N", help="number of parties")
    parser.add_argument("--rounds", metavar="R", help=f"rounds (default: {DEFAULT_ROUNDS})")
    parser.add_argument(
        "--local-epochs",
        metavar="E",
        help=f"local epochs per round (default: {DEFAULT_LOCAL_EPOCHS})",
    )
    parser.add_argument(
        "--partition",
        default=DEFAULT_PARTITION,
        metavar="MODE",
        help=f"iid | by-user | dirichlet:ALPHA (default: {DEFAULT_PARTITION})",
    )
    parser.add_argument(
        "--model",
        choices=model_choices(),
        help="DLRM preset (default as for train: small under 1M training rows), or logreg: "
        "the numpy logistic regression, a quick protocol check",
    )
    parser.add_argument(
        "--batch-size", metavar="B", help="local batch size (default: the preset's)"
    )
    parser.add_argument("--lr", metavar="RATE", help="local learning rate (default: the preset's)")
    parser.add_argument(
        "--strategy",
        default=DEFAULT_STRATEGY,
        metavar="NAME[:VALUE]",
        help=f"{strategy_help()} (default: {DEFAULT_STRATEGY})",
    )
    parser.add_argument(
        "--proximal-mu",
        metavar="MU",
        help="FedProx's proximal term (with --strategy fedprox; default: "
        f"{FedProxOptions().proximal_mu:g})",
    )
    parser.add_argument(
        "--server-lr",
        metavar="ETA",
        help="server learning rate of FedAdam/FedYogi/FedAdagrad "
        f"(default: {AdaptiveOptions().eta:g})",
    )
    parser.add_argument(
        "--clipping",
        choices=[c.value for c in Clipping],
        default=Clipping.MEDIAN.value,
        help="median: scale each update down to the median L2 norm of its round (an "
        "adaptive bound; default); none: combine updates as sent",
    )
    parser.add_argument(
        "--fraction", metavar="F", help="fraction of parties selected per round (default: 1)"
    )
    parser.add_argument(
        "--min-parties",
        metavar="N",
        help="at least this many per round (default: all; 1 with --fraction)",
    )
    parser.add_argument(
        "--quorum",
        metavar="Q",
        help="fraction of the selected whose updates suffice at the deadline "
        f"(default: {DEFAULT_QUORUM:g})",
    )
    parser.add_argument(
        "--deadline",
        metavar="SECONDS",
        help=f"round deadline (default: {DEFAULT_DEADLINE_SECONDS:g})",
    )
    parser.add_argument(
        "--norm-bound", metavar="L2", help="refuse updates whose L2 norm exceeds this"
    )
    parser.add_argument(
        "--dense-updates",
        action="store_true",
        help="send whole embedding tables instead of the touched rows (a measurement baseline)",
    )
    parser.add_argument(
        "--no-party-attestation",
        action="store_true",
        help="parties prove membership only, without enclave evidence (default: they attest)",
    )


def _optional(parse, name: str, value: Any, **kwargs: Any) -> Any:
    return None if value is None else parse(name, value, **kwargs)


def federation_setup(args: argparse.Namespace) -> FederationSetup:
    """The flags of ``init`` and ``simulate`` as the library's configuration; every value
    not given takes :class:`FederationPlanConfig`'s default."""
    plan: dict[str, Any] = {
        "model": args.model,
        "rounds": _optional(parse_integer, "rounds", args.rounds, minimum=1),
        "local_epochs": _optional(parse_integer, "local-epochs", args.local_epochs, minimum=1),
        "batch_size": _optional(parse_integer, "batch-size", args.batch_size, minimum=1),
        "learning_rate": _optional(parse_positive_float, "lr", args.lr),
        "strategy": args.strategy,
        "proximal_mu": _optional(parse_positive_float, "proximal-mu", args.proximal_mu),
        "server_learning_rate": _optional(parse_positive_float, "server-lr", args.server_lr),
        "fraction": _optional(parse_positive_float, "fraction", args.fraction),
        "min_parties": _optional(parse_integer, "min-parties", args.min_parties, minimum=1),
        "quorum": _optional(parse_positive_float, "quorum", args.quorum),
        "deadline_seconds": _optional(parse_positive_float, "deadline", args.deadline),
        "norm_bound": _optional(parse_positive_float, "norm-bound", args.norm_bound),
        "dense_updates": args.dense_updates,
        "clipping": Clipping(args.clipping),
    }
    # A flag not given leaves the configuration's own default in place.
    defaults = FederationPlanConfig()
    given = {key: value for key, value in plan.items() if value is not None}
    return FederationSetup(
        data=_data_config(args),
        parties=parse_integer("parties", args.parties, minimum=1),
        partition=args.partition,
        plan=replace(defaults, **given),
    )


# --- init -----------------------------------------------------------------------------------


def _parse_members(
    values: list[str] | None,
) -> tuple[dict[str, Path] | None, dict[str, int] | None]:
    """``--member ID=FILE.pub[:ROWS]``: each member's public key and its max_rows (required
    unless init writes the parties' data, whose sizes give it)."""
    if not values:
        return None, None
    members: dict[str, Path] = {}
    max_rows: dict[str, int] = {}
    for value in values:
        party, sep, rest = value.partition("=")
        path, colon, rows = rest.rpartition(":") if ":" in rest else (rest, "", "")
        if not sep or not party or not path or (colon and not rows):
            raise UsageError(f"--member takes ID=PUBLIC_KEY_FILE:ROWS, got {value!r}")
        if party in members:
            raise UsageError(f"--member names {party} twice")
        members[party] = Path(path)
        if colon:
            max_rows[party] = parse_integer(f"member {party} rows", rows, minimum=1)
    if max_rows and set(max_rows) != set(members):
        raise UsageError("--member: give ROWS for every member or for none")
    return members, max_rows or None


def _measurement(value: str | None, name: str) -> bytes | None:
    if value is None:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise UsageError(f"--{name} must be 64 hex digits") from exc
    if len(raw) != 32:
        raise UsageError(f"--{name} must be 64 hex digits")
    return raw


def _init(args: argparse.Namespace) -> int:
    from enclaverec.federated.setup import init_federation

    setup = federation_setup(args)
    tee = parse_tee(args.tee, "init")
    output = parse_path("output", args.output)
    # A file, a folder under a file, an unwritable or a non-empty folder: refused before
    # any data is loaded (init takes no --overwrite: its folder holds keys and shares).
    from enclaverec.app.outputs import check_output_folder

    check_output_folder(output, overwrite=True)
    if output.is_dir() and any(output.iterdir()):
        raise UsageError(f"refusing to write into the non-empty folder {output}")
    require_loopback_for_plaintext(tee, args.host)
    members, max_rows = _parse_members(args.member)
    # What the aggregator would refuse, refused before any data is loaded, by the same
    # checks (the whole configuration is checked again before init writes it).
    from enclaverec.federated.config import check_address, check_member_keys, check_min_parties

    port = parse_integer("port", args.port, minimum=1)
    enrollment_port = parse_integer("enrollment-port", args.enrollment_port, minimum=1)
    check_address(args.host, port, "--host/--port")
    check_address(args.host, enrollment_port, "--host/--enrollment-port")
    if args.min_parties:
        check_min_parties(
            parse_integer("min-parties", args.min_parties, minimum=1),
            setup.parties,
            "--min-parties",
        )
    if members is not None:
        from enclaverec.crypto.keys import load_public_key, public_key_pem

        check_member_keys(
            {
                party: public_key_pem(load_public_key(path)).decode()
                for party, path in members.items()
            },
            "--member",
        )
    if args.no_party_data and members is not None and max_rows is None:
        raise UsageError(
            "--no-party-data: give each member's training rows, --member ID=FILE.pub:ROWS "
            "(the bound on its weight)"
        )
    events = ConsoleEvents()
    dataset, shares = load_party_shares(setup)
    plan = build_plan(setup, dataset, shares, events=events)
    if max_rows is None and args.no_party_data:
        max_rows = {f"party-{i}": len(share.train) for i, share in enumerate(shares)}
    files = init_federation(
        output,
        parties=setup.parties,
        plan=plan,
        tee=tee,
        parties_attest=not args.no_party_attestation,
        party_data=None if args.no_party_data else shares,
        members=members,
        max_rows=max_rows,
        host=args.host,
        port=port,
        enrollment_port=enrollment_port,
        aggregator_mrenclave=_measurement(args.aggregator_mrenclave, "aggregator-mrenclave"),
        party_mrsigner=_measurement(args.party_mrsigner, "party-mrsigner"),
        name=args.name,
        pccs_url=args.pccs,
    )
    console = stdout_console()
    console.print(f"federation written to {files.root}", markup=False)
    console.print(f"  aggregator configuration (measured): {files.federation_toml}", markup=False)
    for config in files.party_configs:
        console.print(f"  {config.parent.name}: {config}", markup=False)
    if files.aggregator_mrenclave is not None:
        kind = "SIMULATED " if tee is TEEKind.SIMULATED else ""
        console.print(
            f"aggregator {kind}MRENCLAVE (written into every party's [aggregator_policy]): "
            f"{files.aggregator_mrenclave.hex()}",
            markup=False,
        )
    elif tee is TEEKind.GRAMINE:
        console.print(
            "next: sign the aggregator's enclave (docs/gramine.md), read its MRENCLAVE with "
            "gramine-sgx-sigstruct-view, and put it into each party's [aggregator_policy] "
            "mrenclave list; parties refuse to start without it",
            markup=False,
        )
    return 0


# --- aggregator and party ---------------------------------------------------------------


# --- simulate -----------------------------------------------------------------------------


def _simulate(args: argparse.Namespace) -> int:
    config = SimulationConfig(
        setup=federation_setup(args),
        output=parse_path("output", args.output),
        tee=parse_tee(args.tee, "simulate"),
        parties_attest=not args.no_party_attestation,
        overwrite=args.overwrite,
    )
    result = simulate_federation(config, events=ConsoleEvents())
    stdout_console().print(
        f"federated ({result.tee.value}): test AUC {result.test.auc:.4f} (best round "
        f"{result.best_round} of {result.rounds_completed}), "
        f"{result.wall_seconds:.0f} s; metrics in {result.output / METRICS_FILE}",
        markup=False,
    )
    return 0


# --- registration -------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    group = add_command(
        subparsers, "federated", help="federated learning with an attested aggregator"
    )
    sub = group.add_subparsers(dest="federated_command", metavar="SUBCOMMAND")

    init = add_command(
        sub,
        "init",
        help="write a federation's files: plan, membership, policies, one folder per site",
        handler=_init,
    )
    _add_data_flags(init)
    _add_plan_flags(init)
    init.add_argument(
        "--output", required=True, metavar="DIR", help="where to write (new or empty)"
    )
    init.add_argument(
        "--tee", choices=tee_choices("init"), default=tee_choices("init")[0], help=tee_help("init")
    )
    init.add_argument("--name", default="federation", help="the federation's name")
    init.add_argument(
        "--host", default="127.0.0.1", help="the aggregator's address, as parties reach it"
    )
    init.add_argument(
        "--port", default="50051", help="the aggregator's application port (default: 50051)"
    )
    init.add_argument(
        "--enrollment-port", default="50052", help="its enrollment port (default: 50052)"
    )
    init.add_argument(
        "--member",
        action="append",
        metavar="ID=FILE.pub:ROWS",
        help="a party's public key from `keys new` and the most rows it trains on (the bound "
        "on its weight; may be left out when init writes the parties' data); repeat for "
        "party-0..N-1. Without --member, init makes each party's key pair in its folder",
    )
    init.add_argument(
        "--pccs",
        metavar="URL",
        help="(gramine) the PCCS every role fetches SGX collateral from; written into the "
        "measured configurations, since enclave roles take no such flag",
    )
    init.add_argument(
        "--no-party-data", action="store_true", help="do not write each party's data share"
    )
    init.add_argument(
        "--aggregator-mrenclave", metavar="HEX", help="(gramine) the aggregator's MRENCLAVE"
    )
    init.add_argument(
        "--party-mrsigner", metavar="HEX", help="(gramine) the party enclaves' MRSIGNER"
    )

    add_role_command(
        sub,
        "aggregator",
        aggregator_role,
        help="run the aggregator role (its measured configuration is the federation file)",
    )
    add_role_command(sub, "party", party_role, help="run one party")

    simulate = add_command(
        sub,
        "simulate",
        help="init, then the aggregator and every party as processes on this machine",
        handler=_simulate,
    )
    _add_data_flags(simulate)
    _add_plan_flags(simulate)
    simulate.add_argument(
        "--output", required=True, metavar="DIR", help="results (new or empty folder)"
    )
    simulate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous run's federation, logs, metrics.json and curves.png in "
        "--output (nothing else there is touched)",
    )
    simulate.add_argument(
        "--tee",
        choices=tee_choices("simulate"),
        default=tee_choices("simulate")[0],
        help=tee_help("simulate"),
    )
