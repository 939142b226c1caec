"""Where the tests get their PostgreSQL (and, later, their Kafka broker).

In this order: the URL in the environment when set; else a testcontainers container when a Docker
engine answers; else the machine's local server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
import enum
import socket

from yarl import URL

LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_IMAGE = "postgres:15-alpine"


class Source(enum.Enum):
    ENVIRONMENT = "environment"
    TESTCONTAINERS = "testcontainers"
    LOCAL = "local"


def choose_source(env: Mapping[str, str], variable: str, docker_answers: Callable[[], bool]) -> Source:
    if env.get(variable):
        return Source.ENVIRONMENT
    if docker_answers():
        return Source.TESTCONTAINERS
    return Source.LOCAL


def docker_answers(env: Mapping[str, str]) -> bool:
    """Whether a Docker engine responds to a ping (the client alone is not enough)."""
    target = URL(env.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
    try:
        if target.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = target.path
        elif target.scheme in ("tcp", "http") and target.host:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (target.host, target.port or 2375)
        else:
            return False
        with sock:
            sock.settimeout(3)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status_line = sock.recv(1024).split(b"\r\n", 1)[0]
        return status_line.startswith(b"HTTP/1.") and b" 200 " in status_line + b" "
    except OSError:
        return False


@contextmanager
def postgres_server(env: Mapping[str, str]) -> Iterator[str]:
    """A URL of a PostgreSQL server on which the tests may create databases."""
    source = choose_source(env, "DATABASE_URL", lambda: docker_answers(env))
    if source is Source.ENVIRONMENT:
        yield env["DATABASE_URL"]
    elif source is Source.TESTCONTAINERS:
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer(POSTGRES_IMAGE, driver=None) as container:
            yield container.get_connection_url()
    else:
        yield LOCAL_POSTGRES_URL
