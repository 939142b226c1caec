"""The choice of where test services come from."""

import pytest

from tests.services import Source, choose_source, docker_answers


def never():
    raise AssertionError("Docker must not be asked when the environment decides")


@pytest.mark.parametrize(
    ("env", "docker", "expected"),
    [
        ({"DATABASE_URL": "postgresql://db.example/x"}, never, Source.ENVIRONMENT),
        ({"DATABASE_URL": ""}, lambda: True, Source.TESTCONTAINERS),
        ({}, lambda: True, Source.TESTCONTAINERS),
        ({}, lambda: False, Source.LOCAL),
        ({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, lambda: False, Source.LOCAL),
    ],
)
def test_choice_order(env, docker, expected):
    assert choose_source(env, "DATABASE_URL", docker) is expected


def test_docker_probe_says_no_without_an_engine(tmp_path):
    assert docker_answers({"DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"}) is False
    assert docker_answers({"DOCKER_HOST": "tcp://127.0.0.1:1"}) is False


def test_docker_probe_says_yes_to_an_engine_that_pongs(tmp_path):
    import socket
    import threading

    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)

        def pong():
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")

        thread = threading.Thread(target=pong)
        thread.start()
        assert docker_answers({"DOCKER_HOST": f"unix://{path}"}) is True
        thread.join()
