"""Ignoring an available update: the API's one write to the updates the consumer maintains."""

from __future__ import annotations

import asyncpg

from service import ingest, queries
from service.errors import InvalidInput, NotFound
from service.models import FieldError


def no_update(resource_id: str) -> NotFound:
    return NotFound(f"You have no available update for resource {resource_id!r}.")


async def ignore_update(pool: asyncpg.Pool, user_id: str, resource_id: str, course_ids: list[str] | None) -> None:
    """Ignore the resource's current update for `course_ids` (None or empty: all pending courses).

    404 when there is no update; 400, changing nothing, when a course is not pending for it.
    """
    async with pool.acquire() as conn, conn.transaction():
        # The lock the consumer takes before it changes this resource's updates: whichever of the
        # two comes second sees the other's effect, so neither is lost.
        latest = (await ingest.lock_resources(conn, [resource_id])).get(resource_id)
        pending = await queries.pending_courses(conn, user_id, resource_id, latest) if latest else []
        if not pending:
            raise no_update(resource_id)
        if course_ids and (unknown := sorted(set(course_ids) - set(pending))):
            message = f"not pending for this update: {', '.join(unknown)}"
            raise InvalidInput(f"Some courses are {message}.",
                               [FieldError(field="courseIds", location="body", message=message)])
        await queries.ignore_courses(conn, user_id, resource_id, course_ids or pending, latest)
        await ingest.refresh_pairs(conn, [(user_id, resource_id)])
