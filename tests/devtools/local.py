"""`make run` as a user runs it: in a terminal of its own, its `export` line pasted into another
shell that runs the README's lines, stopped by Ctrl-C."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
import os
from pathlib import Path
import queue
import re
import signal
import subprocess
import sys
import threading
from typing import IO

import pytest

from devtools.tansu import free_port
from tests.factories import JWT_SECRET

ROOT = Path(__file__).resolve().parents[2]
# What the export line must set: the shell that runs the README's lines has none of it.
SET_BY_EXPORT = ("DATABASE_URL", "JWT_SECRET", "KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "VIRTUAL_ENV")
SHELL_ENV = {name: value for name, value in os.environ.items() if name not in SET_BY_EXPORT} | {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}


@dataclass
class Service:
    export: str  # the export line it printed
    output: list[str] = field(default_factory=list)  # its terminal: the welcome and the log

    def variable(self, name: str) -> str:
        return self.shell(f'printf %s "${name}"').stdout

    def shell(self, line: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`line` run by bash after the export line, curl failing on any 4xx or 5xx answer."""
        script = f'{self.export}\ncurl() {{ command curl --fail-with-body --max-time 10 "$@"; }}\n{line}'
        return subprocess.run(
            ["bash", "-c", script], env=SHELL_ENV, capture_output=True, text=True, timeout=timeout, cwd="/"
        )

    def stream(self, line: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["bash", "-c", f"{self.export}\nexec {line}"],
            env=SHELL_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )


def read_lines(output: IO[str], into: list[str] | None = None) -> tuple[queue.Queue[str], threading.Thread]:
    """The lines of `output` as they come (also appended to `into`), read by a thread of their own
    (which ends with `output`)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in output:
            lines.put(line.rstrip("\n"))
            if into is not None:
                into.append(line.rstrip("\n"))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return lines, thread


def lines_until(lines: queue.Queue[str], prefix: str, within: float = 30) -> list[str]:
    """The next lines, up to the first one that starts with `prefix`."""
    taken: list[str] = []
    while not (taken and taken[-1].startswith(prefix)):
        try:
            taken.append(lines.get(timeout=within))
        except queue.Empty:
            pytest.fail(f"no line starting with {prefix!r} within {within} s: {taken}")
    return taken


def broker_processes(bootstrap: str) -> list[int]:
    """The Tansu processes listening at `bootstrap`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"/tansu") for part in command) and f"tcp://{bootstrap}".encode() in command:
            found.append(int(entry.name))
    return found


@contextmanager
def local_service(database_url: str, run_dir: Path) -> Iterator[Service]:
    """`python -m devtools.run` (what `make run` runs) in a session of its own, as a terminal starts
    it; yields once its welcome is printed. Then Ctrl-C (SIGINT to its process group, as a terminal
    sends it) must stop it in order: exit 0, no ERROR line, no traceback, the broker gone."""
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.run", "--port", str(free_port()), "--run-dir", str(run_dir)],
        cwd=ROOT,
        env={**SHELL_ENV, "DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    lines, reader = read_lines(process.stdout, output)
    try:
        welcome = lines_until(lines, "More examples are in README.md", within=120)
        exports = [line for line in welcome if line.startswith("export ")]
        assert exports, "make run's service printed no export line"
        service = Service(exports[0], output)
        broker = service.variable("KAFKA_BOOTSTRAP_SERVERS")
        assert broker_processes(broker)
        yield service
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
        reader.join(timeout=10)
        process.stdout.close()
    log = "\n".join(output)
    assert process.returncode == 0, log
    assert not re.search(r"\bERROR\b|Traceback", log), log
    assert broker_processes(broker) == []
