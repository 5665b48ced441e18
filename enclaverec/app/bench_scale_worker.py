"""One process of light parties for ``bench scale``: sets up each party listed (its key,
its simulated evidence backend, its data), says ``ready``, and on ``go`` runs them all as
threads, each enrolling and training as a real party; prints one JSON line per party, then
``{"done": true}``.

Run only by :mod:`enclaverec.app.bench_scale` (``python -m enclaverec.app.bench_scale_worker
LISTING.json``); its output is for that module, its log on stderr.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

from enclaverec.errors import TransportError
from enclaverec.federated.party import PartyOptions
from enclaverec.roles.party import (
    PartySetup,
    default_trainer_factory,
    make_party_session,
    run_party,
)

log = logging.getLogger(__name__)

ENROLL_GIVE_UP_SECONDS = 600.0


def _enroll(setup: PartySetup) -> None:
    """Open the session (verify, pin, enroll), retrying while the aggregator is busy or
    not up yet, as a party does."""
    give_up = time.monotonic() + ENROLL_GIVE_UP_SECONDS
    pause = 0.1
    while True:
        try:
            setup.session.open()
            return
        except TransportError:  # ServerBusyError included: retry later
            if time.monotonic() > give_up:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def _party(setup: PartySetup, options: PartyOptions, results: list[dict[str, Any]]) -> None:
    _enroll(setup)
    enrolled_at = time.time()
    result = run_party(setup, default_trainer_factory(), options)
    results.append(
        {
            "party_id": result.party_id,
            "enrolled_at": enrolled_at,
            "rounds_trained": len(result.rounds_trained),
            "polls_expired": result.polls_expired,
        }
    )


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    listing = json.loads(Path(argv[0]).read_text())
    options = PartyOptions(reconnect_seconds=300.0, poll_seconds=float(listing["poll"]))
    setups = [make_party_session(Path(config)) for config in listing["configs"]]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def run(setup: PartySetup) -> None:
        try:
            _party(setup, options, results)
        except BaseException as exc:  # noqa: BLE001 - reported below, the process fails
            log.exception("%s failed", setup.config.party_id)
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(setup,), name=setup.config.party_id) for setup in setups
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        print(json.dumps(result), flush=True)
    if errors:
        return 1
    print(json.dumps({"done": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
