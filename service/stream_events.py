"""One client's live update stream, and the Server-Sent Events it is written in (README: "Live
updates")."""

from __future__ import annotations

import asyncio
from collections import deque
import json

from prometheus_client import Counter

from core.sessions import Session
from core.update_stream import Event

CLOSED_STREAMS = Counter(
    "commons_users_update_streams_closed_total", "Live update streams the server closed, by reason.", ["reason"]
)

# Why the server closes a stream, as its `closed` event says.
CLOSE_REASONS = ("session ended", "session expired", "server shutting down", "reconnect")
# A stream that its client does not read fast enough is cut off without a word.
TOO_SLOW = "too slow"


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


def gap_text(detail: str) -> bytes:
    return frame("gap", json.dumps({"detail": detail}))


def ready_text(position: int) -> bytes:
    return frame("ready", "{}", position)


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
            self.close(TOO_SLOW)
            return
        self.pending.append(text)
        self.wake.set()

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            CLOSED_STREAMS.labels(reason).inc()
            self.wake.set()
