"""Clients of the live update stream for the benchmarks, each over a socket of its own: many of
them cost the benchmark's process little, and each is read only when told."""

from __future__ import annotations

import asyncio
import time

from yarl import URL

from bench.dataset import session_id

_OPENING_AT_ONCE = 100


class Stream:
    """One client's stream, over a socket of its own, read only when told."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base: URL, user: int) -> Stream:
        """The stream, once live; a RuntimeError that names the status line of any other answer."""
        reader, writer = await asyncio.open_connection(base.host, base.port)
        writer.write(
            f"GET /api/users/fan-{user}/update-stream HTTP/1.1\r\nHost: {base.host}\r\n"
            f"X-Session-ID: {session_id(user)}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            writer.close()
            raise RuntimeError(head.splitlines()[0].decode())
        await reader.readuntil(b"event: ready\n")
        return cls(reader, writer)

    async def update_at(self) -> float:
        """When its next update event arrived."""
        await self.reader.readuntil(b"event: update\n")
        return time.perf_counter()

    def close(self) -> None:
        self.writer.close()


async def open_streams(base: URL, users: range) -> list[Stream]:
    slots = asyncio.Semaphore(_OPENING_AT_ONCE)

    async def one(user: int) -> Stream:
        async with slots:
            return await Stream.open(base, user)

    return await asyncio.gather(*(one(user) for user in users))
