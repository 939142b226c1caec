"""The facts of the machine a run was made on, and where a process spends its time."""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
from importlib.metadata import PackageNotFoundError, version
import os
from pathlib import Path
import platform
import re
import subprocess

import asyncpg

from bench.harness import ROOT, SERVER_URL, WORK


def _version(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except OSError:
        return "not found"
    return (result.stdout + result.stderr).strip().splitlines()[0]


async def machine() -> dict[str, str]:
    """What a reader of the results needs to know of the machine and the versions used."""
    connection = await asyncpg.connect(SERVER_URL)
    try:
        server = await connection.fetchval("SHOW server_version")
        settings = {
            row["name"]: row["value"]
            for row in await connection.fetch(
                "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = ANY($1::text[])",
                ["shared_buffers", "work_mem", "max_connections", "synchronous_commit", "jit"],
            )
        }
    finally:
        await connection.close()
    memory_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
    model = re.search(r"model name\s+:\s+(.*)", Path("/proc/cpuinfo").read_text())
    packages = ["aiohttp", "asyncpg", "aiokafka", "pydantic", "uvloop"]
    return {
        "cpus": f"{os.cpu_count()} ({model.group(1) if model else platform.machine()})",
        "memory": f"{memory_kib / 1024 / 1024:.1f} GiB",
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgresql": f"{server} ({', '.join(f'{k}={v}' for k, v in sorted(settings.items()))})",
        "wrk": _version(["wrk", "--version"]),
        "pgbench": _version(["pgbench", "--version"]),
        "packages": ", ".join(f"{name} {_installed(name)}" for name in packages),
    }


def _installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


@contextlib.contextmanager
def profiled(pid: int, seconds: float, top: int = 12) -> Iterator[list[dict[str, object]]]:
    """A py-spy sampling profile of process `pid` while the block runs (for `seconds` at most):
    the list, filled when the block ends, of the `top` functions by the share of samples they
    were running in themselves (native code, system calls included)."""
    output = WORK / f"profile-{pid}.txt"
    spy = subprocess.Popen(
        [
            *(str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(pid)),
            *("--duration", str(max(1, round(seconds))), "--format", "raw", "--output", str(output)),
            *("--rate", "200", "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    frames: list[dict[str, object]] = []
    try:
        yield frames
    finally:
        spy.wait()
    own: dict[str, int] = {}
    for line in output.read_text().splitlines() if output.exists() else []:
        stack, _, seen = line.rpartition(" ")
        frame = stack.rsplit(";", 1)[-1]
        own[frame] = own.get(frame, 0) + int(seen)
    total = sum(own.values()) or 1
    for frame, samples in sorted(own.items(), key=lambda item: -item[1])[:top]:
        frames.append({"function": frame, "share": f"{100 * samples / total:.1f}%"})
    output.unlink(missing_ok=True)
