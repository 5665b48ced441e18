"""What the benchmarks that run whole federations share: where their runs go and how the
report is written.

The runs hold plaintext data shares, exported models and the simulation's keys: they go to
a temporary folder removed at the end, unless ``--runs DIR`` (new or empty) keeps them.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from enclaverec.cli.options import parse_path
from enclaverec.cli.output import stdout_console
from enclaverec.errors import UsageError

Report = Mapping[str, Any]


def run_and_report(
    args: argparse.Namespace,
    run: Callable[[Path], Report],
    print_report: Callable[[Report], None],
    *,
    prefix: str,
) -> int:
    """Check ``--output`` and ``--runs`` before any work, ``run`` in the runs folder, print
    the report and write it to ``--output`` if given."""
    from enclaverec.app.outputs import check_output_file
    from enclaverec.report import write_json

    output = parse_path("output", args.output) if args.output is not None else None
    if output is not None:
        check_output_file(output)
    if args.runs is not None:
        runs = parse_path("runs", args.runs)
        if runs.exists() and any(runs.iterdir()):
            raise UsageError(f"refusing to write into the non-empty folder {runs}")
        runs.mkdir(parents=True, exist_ok=True)
        report = run(runs)
    else:
        with tempfile.TemporaryDirectory(prefix=prefix) as work:
            report = run(Path(work))
    print_report(report)
    if output is not None:
        write_json(output, report)
        stdout_console().print(f"written: {output}", markup=False)
    return 0
