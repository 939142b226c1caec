"""Where the tests get their PostgreSQL and their Kafka-protocol broker.

For each, in this order: the address in the environment (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS)
when set; else a testcontainers container when a Docker engine answers; else the machine's local
PostgreSQL, and a Tansu broker started on a free loopback port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
import enum
import socket

from yarl import URL

LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_IMAGE = "postgres:15-alpine"
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"


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
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer(POSTGRES_IMAGE, driver=None) as container:
            yield container.get_connection_url()
    else:
        yield LOCAL_POSTGRES_URL


@contextmanager
def kafka_broker(env: Mapping[str, str]) -> Iterator[str]:
    """Bootstrap servers of a Kafka-protocol broker on which the tests may create topics."""
    source = choose_source(env, "KAFKA_BOOTSTRAP_SERVERS", lambda: docker_answers(env))
    if source is Source.ENVIRONMENT:
        yield env["KAFKA_BOOTSTRAP_SERVERS"]
    elif source is Source.TESTCONTAINERS:
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer(KAFKA_IMAGE) as container:
            yield container.get_bootstrap_server()
    else:
        from devtools.tansu import tansu_broker

        with tansu_broker() as bootstrap:
            yield bootstrap
