"""The live update stream's side of an API replica: one PostgreSQL connection listens for changes
and ended sessions, reads each change once, and hands its events to the streams of the users it
names that this replica holds (README: "Live updates"). Nothing is read per client but its
replay: a change that names nobody connected here costs a set lookup per user it names."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import AsyncIterator
import contextlib
import json
import logging
from typing import TypeVar

from aiohttp import web
import asyncpg
from prometheus_client import Counter, Gauge

from core import db, update_stream
from core.sessions import SESSION_ENDED_CHANNEL, Session
from core.settings import Settings
from core.update_stream import Event
from service.keys import SETTINGS

log = logging.getLogger(__name__)

Key = TypeVar("Key")

OPEN_STREAMS = Gauge("commons_users_update_streams", "Live update streams this replica holds.")
STREAM_EVENTS = Counter("commons_users_update_stream_events_total", "Events handed to live update streams.")
CLOSED_STREAMS = Counter(
    "commons_users_update_streams_closed_total", "Live update streams the server closed, by reason.", ["reason"]
)

# Why the server closes a stream; a stream closed as too slow is cut off without a word.
CLOSE_REASONS = ("session ended", "session expired", "server shutting down", "reconnect", "too slow")
# Changes read at a time: a change may name many users (a new version's importers).
_CHANGES_PER_READ = 100
# Streams woken at a time: each writes its event before the next ones are woken.
_PUSHES_PER_TURN = 200
# How long to wait before listening again after the connection was lost.
_RECONNECT_SECONDS = 1.0


def event_text(event: Event) -> bytes:
    """The event as Server-Sent Events write it: the update, or the removal of the user's update."""
    data = (
        event.document if event.document is not None else json.dumps({"resourceId": event.resource_id, "removed": True})
    )
    return frame("update", data, event.position)


def frame(name: str, data: str, position: int | None = None) -> bytes:
    lines = [f"id: {position}"] if position is not None else []
    lines.append(f"event: {name}")
    lines += [f"data: {line}" for line in data.split("\n")]  # a newline in the data starts a new data line
    return ("\n".join(lines) + "\n\n").encode()


class Stream:
    """One client's stream: the events waiting to be written (at most `limit`: one more closes the
    stream rather than keep it), and why it was closed."""

    def __init__(self, session: Session, limit: int) -> None:
        self.session = session
        self.pending: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.closed: str | None = None
        self._limit = limit

    def push(self, text: bytes) -> None:
        if self.closed is not None:
            return
        if len(self.pending) >= self._limit:
            self.close("too slow")
            return
        self.pending.append(text)
        self.wake.set()

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            CLOSED_STREAMS.labels(reason).inc()
            self.wake.set()


class Hub:
    """The streams this replica holds, by user and by session, and the position up to which their
    events have been handed over."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._by_user: defaultdict[str, set[Stream]] = defaultdict(set)
        self._by_session: defaultdict[bytes, set[Stream]] = defaultdict(set)
        self._position: int | None = None
        self._changed = asyncio.Event()
        self._ready = asyncio.Event()

    async def listening(self) -> None:
        """Wait until the replica listens (at start, or after the connection was lost)."""
        await self._ready.wait()

    def register(self, stream: Stream) -> int:
        """Hand `stream` the events after the returned position; those up to it are its replay."""
        assert self._position is not None
        self._by_user[stream.session.user_id].add(stream)
        self._by_session[stream.session.id_hash].add(stream)
        OPEN_STREAMS.inc()
        return self._position

    def unregister(self, stream: Stream) -> None:
        _discard(self._by_user, stream.session.user_id, stream)
        _discard(self._by_session, stream.session.id_hash, stream)
        OPEN_STREAMS.dec()

    def close_all(self, reason: str) -> None:
        for streams in self._by_user.values():
            for stream in streams:
                stream.close(reason)

    async def run(self) -> None:
        """Listen, and hand over every change as it commits; after a lost connection, listen again
        and go on from the position handed over."""
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database out of reach, or the connection cut
                log.warning("update stream: not listening (%r); again in %s s", exc, _RECONNECT_SECONDS)
            finally:
                self._ready.clear()
            await asyncio.sleep(_RECONNECT_SECONDS)

    async def _listen(self) -> None:
        settings = self._settings
        conn = await db.connect(
            settings.database_url.get_secret_value(),
            connect_timeout=settings.db_timeout_seconds,
            application_name="commons-users-api-stream",
        )
        try:
            await self._follow(conn)
        finally:
            conn.terminate()

    async def _follow(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()

        def terminated(conn: object) -> None:
            lost.set()
            self._changed.set()

        conn.add_termination_listener(terminated)
        await conn.add_listener(update_stream.CHANGES_CHANNEL, lambda *_: self._changed.set())
        await conn.add_listener(SESSION_ENDED_CHANNEL, self._session_ended)
        if self._position is None:
            self._position = await update_stream.current_position(conn)
        else:  # sessions may have ended while nobody listened
            await self._close_ended_sessions(conn)
        self._ready.set()
        self._changed.set()  # and changes committed meanwhile are read now
        while not lost.is_set():
            await self._changed.wait()
            self._changed.clear()
            while not lost.is_set() and await self._hand_over(conn):
                pass
        raise ConnectionError("the listening connection was lost")

    async def _hand_over(self, conn: asyncpg.Connection) -> bool:
        """Hand over the next changes; False when there were none."""
        assert self._position is not None
        changes = await update_stream.changes_after(conn, self._position, _CHANGES_PER_READ)
        if not changes:
            return False
        held = self._by_user
        # The streams held now get these changes; one registered from now on replays them instead.
        targets = [
            (change, [(user, list(held[user])) for user in change.user_ids if user in held]) for change in changes
        ]
        self._position = changes[-1].position
        pairs = [(user, change.resource_id) for change, users in targets for user, _ in users]
        try:
            documents = await update_stream.documents(conn, pairs)
        except Exception:  # their clients reconnect, and replay these changes
            for _, users in targets:
                for _, streams in users:
                    for stream in streams:
                        stream.close("reconnect")
            raise
        pushed = 0
        for change, users in targets:
            for user, streams in users:
                text = event_text(Event(change.position, change.resource_id, documents[user, change.resource_id]))
                for stream in streams:
                    stream.push(text)
                STREAM_EVENTS.inc(len(streams))
                pushed += len(streams)
                if pushed >= _PUSHES_PER_TURN:  # let those streams write, and other requests run
                    pushed = 0
                    await asyncio.sleep(0)
        return True

    def _session_ended(self, conn: object, pid: object, channel: object, payload: object) -> None:
        with contextlib.suppress(ValueError, TypeError):
            self._close_session(bytes.fromhex(str(payload)))

    def _close_session(self, id_hash: bytes) -> None:
        for stream in self._by_session.get(id_hash, ()):
            stream.close("session ended")

    async def _close_ended_sessions(self, conn: asyncpg.Connection) -> None:
        held = list(self._by_session)
        if not held:
            return
        live = {
            row["id_hash"]
            for row in await conn.fetch(
                "SELECT id_hash FROM sessions WHERE id_hash = ANY($1::bytea[]) AND expires_at > now()", held
            )
        }
        for id_hash in set(held) - live:
            self._close_session(id_hash)


def _discard(index: defaultdict[Key, set[Stream]], key: Key, stream: Stream) -> None:
    streams = index[key]
    streams.discard(stream)
    if not streams:
        del index[key]


HUB = web.AppKey("update_stream_hub", Hub)


async def update_stream_hub(app: web.Application) -> AsyncIterator[None]:
    """The replica's hub, listening while the app runs; its streams close when the app shuts down."""
    hub = app[HUB] = Hub(app[SETTINGS])
    task = asyncio.create_task(hub.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def close_streams(app: web.Application) -> None:
    """On shutdown, before the grace period: the clients reconnect to another replica."""
    app[HUB].close_all("server shutting down")
