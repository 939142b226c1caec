"""Real processes of the service, for tests that watch what an operator sees: logs, signals."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from pydantic import SecretStr

from core.settings import Settings
from tests.factories import JWT_SECRET


class ServiceProcess(subprocess.Popen[str]):
    """A process of the service, its output in files: a pipe that nobody reads would fill, and the
    process would stop at its next log line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        folder = Path(tempfile.mkdtemp(prefix="commons-users-"))
        self.stdout_path, self.stderr_path = folder / "stdout", folder / "stderr"
        with self.stdout_path.open("w") as stdout, self.stderr_path.open("w") as stderr:
            super().__init__(args, env=env, stdout=stdout, stderr=stderr, text=True)

    def output(self) -> tuple[str, str]:
        """What it wrote so far, on stdout and on stderr."""
        return self.stdout_path.read_text(), self.stderr_path.read_text()


def listens(port: int, process: subprocess.Popen[Any], within: float = 60) -> bool:
    """Whether `process` listens on the loopback `port` within `within` seconds (False at once if
    it exits)."""
    deadline = time.monotonic() + within
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def api_process(database_url: str, port: int, **env: str) -> ServiceProcess:
    """`commons-users api` with JSON logs, once it listens on `port`."""
    process = ServiceProcess(
        [sys.executable, "-m", "service", "api", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": JWT_SECRET, "LOG_FORMAT": "json", **env},
    )
    if listens(port, process):
        return process
    process.kill()
    process.wait()
    raise AssertionError(f"the API did not start: {process.output()}")


def stop(process: ServiceProcess) -> tuple[int, str]:
    """SIGTERM, then its exit status and its stdout."""
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=30)
    return code, process.output()[0]


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a process of the service these settings."""
    env = dict(os.environ)
    for name, value in settings:
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, list):
            value = ",".join(item.get_secret_value() if isinstance(item, SecretStr) else str(item) for item in value)
        env[name.upper()] = str(value)
    return {**env, "LOG_FORMAT": "json", "CONSUMER_HEALTH_PORT": "0", **extra}


def consumer_process(settings: Settings, log: Path, **extra: str) -> subprocess.Popen:
    """`commons-users consumer`, its JSON log lines appended to `log` (a pipe nobody reads would
    fill and stop it)."""
    with log.open("a") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "service", "consumer"],
            env=environment(settings, **extra),
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
