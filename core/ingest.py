"""Applying a batch of events to the tables, inside the caller's transaction.

Every write is set-based: one batch becomes a constant number of statements, whatever the number
of events or of the users a new version fans out to. Every write is also idempotent and
commutative (each aggregate's module says by which rule), so the tables end the same for any
delivery order and any number of redeliveries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core import imports, resources, updates, users
from core.db import Connection
from core.events import Event, ResourceDeleted, ResourceImported, ResourceVersionPublished, UserUpserted


@dataclass(frozen=True)
class Applied:
    """What a batch changed, for logs and metrics."""

    events: int
    fanned_out_rows: int


async def apply_events(conn: Connection, events: Sequence[Event]) -> Applied:
    published: list[ResourceVersionPublished] = []
    imported: list[ResourceImported] = []
    deleted: list[ResourceDeleted] = []
    upserted: list[UserUpserted] = []
    # One pass, by exact type: isinstance on a pydantic model goes through ABCMeta, in Python.
    for e in events:
        if type(e) is ResourceImported:
            imported.append(e)
        elif type(e) is ResourceVersionPublished:
            published.append(e)
        elif type(e) is ResourceDeleted:
            deleted.append(e)
        elif type(e) is UserUpserted:
            upserted.append(e)

    touched = [e.resource_id for e in published] + [e.resource_id for e in imported] + [e.resource_id for e in deleted]
    await updates.lock_resources(conn, touched)
    if deleted:
        await resources.delete_resources(conn, deleted)
    republished: list[str] = []
    if published:
        republished = await resources.publish_versions(conn, published)
    if imported:
        await imports.record_imports(conn, imported)
    fanned_out = 0
    if published or deleted or imported:
        fanned_out = await updates.refresh(
            conn,
            resources=[e.resource_id for e in published] + [e.resource_id for e in deleted],
            pairs=[(e.user_id, e.resource_id) for e in imported],
            republished=republished,
        )
    if upserted:
        await users.upsert_users(conn, upserted)
    return Applied(events=len(events), fanned_out_rows=fanned_out)
