"""No log line holds a session id, whatever the request looks like: ids are redacted by value
wherever they appear, and requests the HTTP parser refuses are not quoted in its error lines."""

from __future__ import annotations

import json
import socket
from urllib.parse import quote

from devtools.tansu import free_port
from tests.factories import login
from tests.processes import api_process, stop

CUSTOM = "a-session-id-of-another-shape"  # not one this service issues: redacted as presented


def send_raw(port: int, request: bytes) -> bytes:
    """One request, as bytes on a socket (an HTTP client would tidy paths and refuse long lines)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def variants(sid: str) -> list[bytes]:
    tail = b"Host: api\r\nConnection: close\r\n\r\n"
    escaped = quote(sid[:1], safe="").replace(sid[:1], f"%{ord(sid[0]):02X}") + sid[1:]
    return [
        # The parser refuses these before there is a request: its error must not quote them.
        f"GET /api/users/u1/favorites HTTP/1.1\r\nCookie: {'a=b; ' * 2000}session={sid}\r\n".encode() + tail,
        f"GET /api/users/u1/favorites?pad={'x' * 9000}&session-id={sid} HTTP/1.1\r\n".encode() + tail,
        f"GET /api/users/u1/favorites HTTP/1.1\r\nX-Note {sid}\r\n".encode() + tail,
        # Paths of every shape, with and without the id in a source.
        f"GET /api/x/../sessions/{sid} HTTP/1.1\r\nX-Session-ID: {sid}\r\n".encode() + tail,
        f"GET /API/sessions/{sid} HTTP/1.1\r\n".encode() + tail,
        f"GET //api//sessions//{sid} HTTP/1.1\r\nCookie: session={sid}\r\n".encode() + tail,
        f"GET /api/sessions/{escaped} HTTP/1.1\r\n".encode() + tail,
        f"GET /api/users/u1/favorites?state=first&state={sid}&ref={sid} HTTP/1.1\r\n".encode() + tail,
        f"GET /api/sessions/{CUSTOM} HTTP/1.1\r\nX-Session-ID: {CUSTOM}\r\n".encode() + tail,
        f"GET /api/users/u1/favorites?from={quote(CUSTOM)} HTTP/1.1\r\nCookie: session={CUSTOM}\r\n".encode() + tail,
        (
            f"POST /api/users/u1/favorites?ref={sid} HTTP/1.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(sid) + 41}\r\n"
        ).encode()
        + tail[:-2]
        + f'\r\n{{"sessionId": "{sid}", "resourceId": "r-none"}}'.encode(),
    ]


async def test_no_log_line_holds_a_session_id(database_url, pool):
    sid = await login(pool, "u1")
    port = free_port()
    process = api_process(database_url, port)
    try:
        answers = [send_raw(port, request) for request in variants(sid)]
    finally:
        stop(process)
    stdout, stderr = process.output()
    assert all(answer.startswith(b"HTTP/1.") for answer in answers)
    assert sid not in stdout + stderr and CUSTOM not in stdout + stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    # Not a vacuous pass: the refused requests were logged, without their bytes, and so were the others.
    parse_errors = [line for line in lines if "the request is not quoted" in line["message"]]
    assert len(parse_errors) == 3, parse_errors
    access = [
        line["message"] for line in lines if line["logger"] == "aiohttp.access" and "UNKNOWN" not in line["message"]
    ]
    assert len(access) == len(answers) - 3 and all("REDACTED" in line for line in access)
