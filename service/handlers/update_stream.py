"""The live update stream: `GET /api/users/{userId}/update-stream` (README: "Live updates")."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
import json
import re
from typing import Any

from aiohttp import web
import asyncpg

from core.errors import FieldError, InvalidInput, Unauthenticated, Unavailable
from core.sessions import session_is_live
from core.settings import Settings
from core.update_stream import Event, last_numbered, replay
from service.handlers.resources import USER_ID
from service.http import own_session
from service.keys import POOL, SETTINGS
from service.openapi import HeaderParameter, operation
from service.stream_caps import STREAM_CAPS
from service.stream_events import CLOSE_REASONS, TOO_SLOW, Stream, event_text, frame, gap_text, ready_text
from service.update_stream import HUB, Hub

LAST_EVENT_ID = "Last-Event-ID"
_KEEPALIVE = b": keepalive\n\n"
_MAX_POSITION = 2**63 - 1
_POSITION_DIGITS = len(str(_MAX_POSITION))
POSITION_PATTERN = "^[0-9]+$"

_DESCRIPTION = """\
Server-Sent Events: one event each time the user's available updates change, for as long as the
session lasts (the stream closes when it ends or expires). Each change is an `update` event whose
`id` is a position that grows with every change, and whose data is the update as
`GET /api/users/{userId}/updates/{resourceId}` shows it, or `{"resourceId": ..., "removed": true}`
when the user no longer has one (ignored, imported again, or the resource deleted).

A client that reconnects with `Last-Event-ID` first gets, for each resource that changed since
that position, one `update` event as it stands now. When some of those changes are older than the
retention window (`UPDATE_STREAM_RETENTION_SECONDS`, 24 h), or the id is beyond any position given,
it gets one `gap` event instead, and should reload the list. Then a `ready` event carries the
position the stream is live from. A comment line is sent every 15 s when nothing else is. A
browser's `EventSource` sends no headers of its own: the session cookie or the `session-id` query
parameter identifies it.

A user holds at most `UPDATE_STREAM_MAX_PER_USER` streams at once (429 past it), and a replica at
most `UPDATE_STREAM_MAX_STREAMS` (503). A reconnection whose `Last-Event-ID` is ahead of the replica
it reached waits for it to catch up; one still ahead after a few seconds is 503."""


def _event_schema(name: str, data: dict[str, Any], *, numbered: bool) -> dict[str, Any]:
    """One event as the stream writes it: its name, its id when it has one, its JSON data."""
    return {
        "type": "object",
        "properties": {
            "event": {"const": name},
            "id": {"type": "string", "pattern": POSITION_PATTERN},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
        },
        "required": ["event", "data", "id"] if numbered else ["event", "data"],
    }


def _object(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


REMOVED = _object(resourceId={"type": "string"}, removed={"const": True})
EVENTS = {
    "oneOf": [
        _event_schema("update", {"oneOf": [{"$ref": "#/components/schemas/Update"}, REMOVED]}, numbered=True),
        _event_schema("ready", _object(), numbered=True),
        _event_schema("gap", _object(detail={"type": "string"}), numbered=False),
        _event_schema("closed", _object(reason={"enum": list(CLOSE_REASONS)}), numbered=False),
    ]
}


def _last_event_id(request: web.Request) -> int | None:
    """The position the client has seen. Positions are bigint: an id of more digits is one this
    stream never sent, and refused like any other."""
    text = request.headers.get(LAST_EVENT_ID)
    if text is None:
        return None
    if len(text) > _POSITION_DIGITS or not re.fullmatch(POSITION_PATTERN, text) or int(text) > _MAX_POSITION:
        message = "must be the id of an event this stream sent: digits"
        raise InvalidInput(
            f"{LAST_EVENT_ID} {message}.", [FieldError(field=LAST_EVENT_ID, location="header", message=message)]
        )
    return int(text)


_GAP = "Some changes since Last-Event-ID are no longer kept: reload the list."


@operation(
    summary="Follow the user's available updates as they change",
    description=_DESCRIPTION,
    tag="updates",
    path=(USER_ID,),
    headers=(
        HeaderParameter(
            LAST_EVENT_ID, "The `id` of the last event received, to get what was missed.", POSITION_PATTERN
        ),
    ),
    responses={200: None},
    media_type="text/event-stream",
    schema=EVENTS,
    errors=(403,),
    error_notes={
        429: "Past the rate limit, or the user already holds `UPDATE_STREAM_MAX_PER_USER` streams; "
        "`Retry-After` says when to retry.",
        503: "The database is out of reach, or this replica holds `UPDATE_STREAM_MAX_STREAMS` streams, or "
        "does not follow the changes at the moment; `Retry-After` says when to retry.",
    },
)
async def update_stream(request: web.Request) -> web.StreamResponse:
    session = own_session(request)
    after = _last_event_id(request)
    settings, hub, pool = request.app[SETTINGS], request.app[HUB], request.app[POOL]
    check = settings.update_stream_listen_check_seconds
    async with request.app[STREAM_CAPS].admitted(session.user_id):
        if not await hub.listening_within(check):
            raise Unavailable("This replica does not follow the changes at the moment.", headers={"Retry-After": "1"})
        given = after is None or await _given(hub, pool, after, check)
        stream = Stream(session, settings.update_stream_max_pending_events)
        live_from = hub.register(stream)
        try:
            # Once registered, an ending session closes the stream: one that ended before is refused.
            if not await session_is_live(pool, session.id_hash):
                raise Unauthenticated("The session is unknown or has expired.")
            replayed: list[Event] | None = []
            if after is not None:
                replayed = await replay(pool, session.user_id, after, live_from) if given else None
            # Before the answer starts, so that a failure is still an error answer.
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            )
            await response.prepare(request)
            try:
                opening = gap_text(_GAP) if replayed is None else b"".join(event_text(event) for event in replayed)
                async with asyncio.timeout(settings.update_stream_write_timeout_seconds):
                    await response.write(opening + ready_text(live_from))
                await _follow(response, stream, settings)
            except ConnectionError:
                return response  # the client went away
            except TimeoutError:
                stream.close(TOO_SLOW)
            if stream.closed == TOO_SLOW and request.transport is not None:
                request.transport.abort()  # what it has not read is dropped: it reconnects with Last-Event-ID
            return response
        finally:
            hub.unregister(stream)


async def _given(hub: Hub, pool: asyncpg.Pool, after: int, within: float) -> bool:
    """Whether `after` is a position this service gave; if it is ahead of this replica (it came
    from a replica further on), once this one has caught up with it, or Unavailable after `within`
    seconds."""
    if after <= hub.position:
        return True
    if after > await last_numbered(pool):
        return False
    if await hub.caught_up(after, within):
        return True
    raise Unavailable("This replica is behind the changes at the moment.", headers={"Retry-After": "1"})


async def _follow(response: web.StreamResponse, stream: Stream, settings: Settings) -> None:
    """Write the stream's events as they come, a comment when none comes for a while, until the
    stream is closed or the session expires. TimeoutError when a write waits too long."""
    keepalive, write_timeout = settings.update_stream_keepalive_seconds, settings.update_stream_write_timeout_seconds
    expires = stream.session.expires
    while stream.closed is None:
        left = (expires - datetime.now(UTC)).total_seconds()
        if left <= 0:
            stream.close("session expired")
            break
        try:
            async with asyncio.timeout(min(keepalive, left)):
                await stream.wake.wait()
        except TimeoutError:
            if (expires - datetime.now(UTC)).total_seconds() > 0:
                async with asyncio.timeout(write_timeout):
                    await response.write(_KEEPALIVE)
            continue
        stream.wake.clear()
        while stream.pending:
            async with asyncio.timeout(write_timeout):
                await response.write(stream.pending.popleft())
    if stream.closed != TOO_SLOW:
        async with asyncio.timeout(write_timeout):
            await response.write(frame("closed", json.dumps({"reason": stream.closed})))
