"""A TCP relay between a client and a server, in the test's event loop, that can fail the way
networks do: pause every connection (a server that hangs), or blackhole the connections open now,
forwarding nothing more and closing nothing (a NAT or a load balancer that forgot them)."""

from __future__ import annotations

import asyncio
import contextlib


class Relay:
    """Relays connections to `host:port`; `port` is where it listens, once entered."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._closing = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._connections: list[_Connection] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        self._closing.set()
        self._flowing.set()
        for connection in self._connections:
            connection.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def pause(self) -> None:
        """Forward nothing, on any connection, until `resume`; connections are still accepted."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def blackhole(self) -> int:
        """The connections open now forward nothing more, and stay open; returns how many."""
        live = [connection for connection in self._connections if not connection.closed]
        for connection in live:
            connection.blackholed = True
        return len(live)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        connection = _Connection(writer)
        self._connections.append(connection)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            connection.close()
            return
        connection.upstream = upstream_writer
        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.gather(
                self._pipe(connection, reader, upstream_writer), self._pipe(connection, upstream_reader, writer)
            )
        if not connection.blackholed:
            connection.close()

    async def _pipe(self, connection: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await self._may_flow(connection):
            data = await reader.read(65536)
            if not data:
                writer.close()
                return
            if not await self._may_flow(connection):
                return
            writer.write(data)
            await writer.drain()

    async def _may_flow(self, connection: _Connection) -> bool:
        """Wait while paused; False once blackholed, after holding the connection until the relay
        closes (nothing is read, nothing sent)."""
        await self._flowing.wait()
        if connection.blackholed:
            await self._closing.wait()
            return False
        return True


class _Connection:
    def __init__(self, downstream: asyncio.StreamWriter) -> None:
        self.downstream = downstream
        self.upstream: asyncio.StreamWriter | None = None
        self.blackholed = False
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.downstream.close()
        if self.upstream is not None:
            self.upstream.close()
