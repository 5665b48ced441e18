"""The audit log of an enclave role: append-only JSON lines of enrollments, releases,
contributions and refusals. It never holds a secret, a data row or a model weight."""

from __future__ import annotations

import json
import threading
import time
import weakref
from pathlib import Path
from typing import IO, Any

from enclaverec.tee.attested_ca import EnrollmentRecord


class AuditLog:
    """Append-only JSON lines: enrollments, contributions, rounds, refusals; no secrets."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._handle: IO[str] | None = None

    def write(self, event: str, **fields: Any) -> None:
        entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields}
        line = json.dumps(entry, sort_keys=True, default=str)
        with self._lock:
            # Opened once, appended and flushed per line: each line reaches the file as
            # before (no fsync either way), without an open and a close per event (issue
            # 12: one "update" line per party per round; the opens were 4% of the
            # aggregator's samples at 256 parties).
            if self._handle is None:
                self._handle = self.path.open("a", encoding="utf-8")
                weakref.finalize(self, self._handle.close)
            self._handle.write(line + "\n")
            self._handle.flush()

    def enrollment(self, record: EnrollmentRecord) -> None:
        self.write("enrolled", **record.to_dict())

    def events(self) -> list[dict[str, Any]]:
        """Every entry so far (for status reports and tests)."""
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
