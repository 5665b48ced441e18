"""Running a scheme's roles as processes on one machine (``federated simulate``,
``distributed simulate``): spawn ``enclaverec ...`` commands with their output in one log
file each, wait for a server's port, follow an audit log as it grows, describe a failed
role by the last error line of its own log, and stop whatever is left.

Nothing here knows a scheme: the simulations above it decide what to run and when.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any


def last_error_line(log_path: Path) -> str | None:
    """The cause of a role's failure as its log states it: the last line the command
    printed on its way out (``enclaverec: error: ...``, ``enclaverec: refused ...``), else
    the last line logged at ERROR, else the last line; None without a readable log."""
    try:
        lines = [
            line.strip()
            for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.strip()
        ]
    except OSError:
        return None
    for prefix in ("enclaverec: ", "ERROR"):
        for line in reversed(lines):
            if line.startswith(prefix):
                return line
    return lines[-1] if lines else None


def failure(name: str, code: int | None, logs: Path) -> str:
    """``name (exit N: cause; log: path)``, the cause from the role's own log."""
    log_path = logs / f"{name}.log"
    cause = last_error_line(log_path)
    return f"{name} (exit {code}" + (f": {cause}" if cause else "") + f"; log: {log_path})"


def role_command(*args: str) -> list[str]:
    """An ``enclaverec`` command line run by this interpreter."""
    return [sys.executable, "-m", "enclaverec.cli.main", *args]


def wait_for_port(port: int, process: subprocess.Popen[bytes], *, timeout: float) -> None:
    """Until something accepts connections on the loopback ``port`` (or ``process``
    exits, or the timeout passes)."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if process.poll() is not None:
            return  # it failed; the caller reports its exit code and log
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)


class AuditFollower:
    """Reads the new lines of an audit log (JSON lines) as they are written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new_events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


class RoleProcesses:
    """Named role processes, each in its own session with its output in ``logs/NAME.log``;
    :meth:`stop_all` ends every one still running (TERM, then KILL)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self._handles: list[IO[bytes]] = []

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        handle = (self.logs / f"{name}.log").open("ab")
        self._handles.append(handle)
        self.started[name] = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes[name] = process
        return process

    def poll(self) -> dict[str, int | None]:
        codes = {}
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None and name not in self.ended:
                self.ended[name] = time.perf_counter()
            codes[name] = code
        return codes

    def failed(self) -> dict[str, int]:
        """The roles that exited with a non-zero code."""
        return {name: code for name, code in self.poll().items() if code not in (None, 0)}

    def describe(self, name: str) -> str:
        return failure(name, self.processes[name].returncode, self.logs)

    def wait(self, name: str, timeout: float) -> int | None:
        try:
            code = self.processes[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.ended.setdefault(name, time.perf_counter())
        return code

    def kill(self, name: str) -> None:
        """SIGKILL one role (fault tests): no chance to clean up, as a crash."""
        process = self.processes[name]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        for handle in self._handles:
            handle.close()
        self._handles.clear()
