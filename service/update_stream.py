"""The live update stream's side of an API replica (README: "Live updates"): the hub. One
PostgreSQL connection listens for changes and ended sessions; the hub reads each change once, a
bounded number of users at a time, and hands its events to the streams of the users it names that
this replica holds. Nothing is read per client but its replay: a change that names nobody
connected here costs a set lookup per user it names.

The hub is current or says it is not: its connection is checked by a read whenever it has been
idle for UPDATE_STREAM_LISTEN_CHECK_SECONDS, every read on it must answer within as long, and TCP
keepalives watch the socket. A connection lost, even silently, is replaced, and the hub goes on
from the last position it handed over; meanwhile `/readyz` fails, so that new streams go to a
replica that can serve them."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
import contextlib
import logging
from typing import TypeVar

from aiohttp import web
import asyncpg
from prometheus_client import Counter, Gauge

from core import db, update_stream
from core.sessions import SESSION_ENDED_CHANNEL
from core.settings import Settings
from core.update_stream import Event
from service.keys import POOL, SETTINGS
from service.stream_events import Stream, event_text, gap_text, ready_text

log = logging.getLogger(__name__)

Key = TypeVar("Key")

OPEN_STREAMS = Gauge("commons_users_update_streams", "Live update streams this replica holds.")
LISTENING = Gauge(
    "commons_users_update_stream_listening", "1 while this replica's hub listens for changes and is current, else 0."
)
POSITION = Gauge(
    "commons_users_update_stream_position",
    "The position up to which this replica's hub has handed the changes over (replicas compared show a lag).",
)
STREAM_EVENTS = Counter("commons_users_update_stream_events_total", "Events handed to live update streams.")

# Users a read of changes carries at most (beyond its first change).
_USERS_PER_READ = 10_000
# Streams woken at a time: each writes its event before the next ones are woken.
_PUSHES_PER_TURN = 200
# How long to wait before listening again after the connection was lost.
_RECONNECT_SECONDS = 1.0


class Hub:
    """The streams this replica holds, by user and by session, and the position up to which their
    events have been handed over."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._by_user: defaultdict[str, set[Stream]] = defaultdict(set)
        self._by_session: defaultdict[bytes, set[Stream]] = defaultdict(set)
        self._position: int | None = None
        self._changed = asyncio.Event()
        self._listening = asyncio.Event()
        self._advanced = asyncio.Condition()

    @property
    def listening(self) -> bool:
        """Whether the hub listens and its connection answered within the check's bound."""
        return self._listening.is_set()

    @property
    def position(self) -> int:
        """The position up to which every change has been handed over: a stream registered now
        gets the later ones, and replays those up to it."""
        assert self._position is not None, "not listening yet"
        return self._position

    async def listening_within(self, seconds: float) -> bool:
        """Whether the hub listens, or does within `seconds`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._listening.wait()
        return self.listening

    async def caught_up(self, position: int, within: float) -> bool:
        """Wait until every change up to `position` has been handed over; False if that takes
        longer than `within` seconds."""
        self._changed.set()  # read now, rather than when the notification comes
        async with self._advanced:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._advanced.wait_for(lambda: self._position is not None and self._position >= position)
            return self._position is not None and self._position >= position

    def register(self, stream: Stream) -> int:
        """Hand `stream` the events after the returned position; those up to it are its replay."""
        self._by_user[stream.session.user_id].add(stream)
        self._by_session[stream.session.id_hash].add(stream)
        OPEN_STREAMS.inc()
        return self.position

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
            except Exception as exc:  # the database out of reach, the connection cut or silent
                log.warning("update stream: not listening (%r); again in %s s", exc, _RECONNECT_SECONDS)
            finally:
                self._listening.clear()
                LISTENING.set(0)
            await asyncio.sleep(_RECONNECT_SECONDS)

    async def _listen(self) -> None:
        settings = self._settings
        check = settings.update_stream_listen_check_seconds
        conn = await db.connect_watched(
            settings.direct_dsn,
            connect_timeout=settings.db_timeout_seconds,
            answer_within=check,
            application_name="commons-users-api-stream",
        )
        try:
            await self._follow(conn, check)
        finally:
            conn.terminate()

    async def _follow(self, conn: asyncpg.Connection, check: float) -> None:
        lost = asyncio.Event()

        def terminated(conn: object) -> None:
            lost.set()
            self._changed.set()

        conn.add_termination_listener(terminated)
        await conn.add_listener(update_stream.CHANGES_CHANNEL, lambda *_: self._changed.set())
        await conn.add_listener(SESSION_ENDED_CHANNEL, self._session_ended)
        await self._resume(conn)
        self._listening.set()
        LISTENING.set(1)
        self._changed.set()  # and changes committed meanwhile are read now
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(check):
                    await self._changed.wait()
            # A notification, or a while without one: either way a read, which also shows that the
            # connection still answers (a silent one fails it, by the command timeout).
            self._changed.clear()
            while not lost.is_set() and await self._hand_over(conn):
                pass
        raise ConnectionError("the listening connection was lost")

    async def _resume(self, conn: asyncpg.Connection) -> None:
        """Where to go on from, once (again) listening."""
        position = await update_stream.current_position(conn)
        if self._position is None:
            await self._moved_to(position)
            return
        if position < self._position:
            # The database went back (restored from a backup): the positions handed over since are
            # gone, and will be given to other changes.
            log.warning("update stream: positions went back from %d to %d", self._position, position)
            for streams in self._by_user.values():
                for stream in streams:
                    stream.push(gap_text("The server's changes went back: reload the list."))
                    stream.push(ready_text(position))
            await self._moved_to(position)
        await self._close_ended_sessions(conn)  # sessions may have ended while nobody listened

    async def _moved_to(self, position: int) -> None:
        self._position = position
        POSITION.set(position)
        async with self._advanced:
            self._advanced.notify_all()

    async def _hand_over(self, conn: asyncpg.Connection) -> bool:
        """Hand over the next changes; False when there were none."""
        changes = await update_stream.changes_after(conn, self.position, _USERS_PER_READ)
        if not changes:
            return False
        held = self._by_user
        # The streams held now get these changes; one registered from now on replays them instead.
        targets = [
            (change, [(user, list(held[user])) for user in change.user_ids if user in held]) for change in changes
        ]
        await self._moved_to(changes[-1].position)
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
        await asyncio.sleep(0)  # and between reads
        return True

    def _session_ended(self, conn: object, pid: object, channel: object, payload: object) -> None:
        with contextlib.suppress(ValueError, TypeError):
            self.close_session(bytes.fromhex(str(payload)))

    def close_session(self, id_hash: bytes) -> None:
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
            self.close_session(id_hash)


def _discard(index: defaultdict[Key, set[Stream]], key: Key, stream: Stream) -> None:
    streams = index[key]
    streams.discard(stream)
    if not streams:
        del index[key]


HUB = web.AppKey("update_stream_hub", Hub)


async def update_stream_hub(app: web.Application) -> AsyncIterator[None]:
    """The replica's hub, listening while the app runs, and the pruning of old changes; its
    streams close when the app shuts down."""
    settings = app[SETTINGS]
    hub = app[HUB] = Hub(settings)
    tasks = [
        asyncio.create_task(hub.run()),
        asyncio.create_task(update_stream.prune_forever(app[POOL], settings.update_stream_retention_seconds)),
    ]
    # Serve once listening, as a rule within milliseconds; a hub that cannot yet listen says so in /readyz.
    await hub.listening_within(settings.db_timeout_seconds)
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def close_streams(app: web.Application) -> None:
    """On shutdown, before the grace period: the clients reconnect to another replica."""
    app[HUB].close_all("server shutting down")
