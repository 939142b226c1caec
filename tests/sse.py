"""Reading a Server-Sent Events answer as a browser's EventSource does, a message at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
import json
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

STREAM = "/api/users/{user}/update-stream"


@dataclass(frozen=True)
class Message:
    """An event (`event`, `id`, `data` lines joined), or a comment line (`comment`)."""

    event: str | None = None
    id: str | None = None
    data: str = ""
    comment: str | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def position(self) -> int:
        assert self.id is not None, self
        return int(self.id)


async def next_message(response: aiohttp.ClientResponse, within: float = 10) -> Message | None:
    """The next event or comment; None when the server ended the stream."""
    fields: dict[str, str] = {}
    data: list[str] = []
    async with asyncio.timeout(within):
        while True:
            raw = await response.content.readline()
            if not raw:
                return None
            line = raw.decode().removesuffix("\n")
            if line.startswith(":"):
                return Message(comment=line[1:].strip())
            if line == "":
                if fields or data:
                    return Message(event=fields.get("event"), id=fields.get("id"), data="\n".join(data))
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value


async def next_event(response: aiohttp.ClientResponse, within: float = 10) -> Message:
    """The next event, past any comment."""
    while True:
        message = await next_message(response, within)
        assert message is not None, "the stream ended"
        if message.comment is None:
            return message


@asynccontextmanager
async def opened(
    client: TestClient, session_id: str, last_event_id: str | int | None = None, user: str = "u1"
) -> AsyncIterator[aiohttp.ClientResponse]:
    """The user's stream, with the session in its header (and the id of the last event seen)."""
    headers = {"X-Session-ID": session_id}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    response = await client.get(STREAM.format(user=user), headers=headers)
    try:
        yield response
    finally:
        response.close()


async def ready(response: aiohttp.ClientResponse) -> Message:
    """The `ready` event that opens a stream answered 200."""
    assert response.status == 200, await response.text()
    message = await next_event(response)
    assert message.event == "ready", message
    return message
