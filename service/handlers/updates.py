"""Available updates: list, one, and ignoring one for some courses."""

from __future__ import annotations

from datetime import datetime

import asyncpg
from aiohttp import web

from service import ingest, queries
from service.errors import InvalidInput, NotFound
from service.handlers.resources import RESOURCE_ID, USER_ID, resource_from_row
from service.http import decode_cursor, json_response, own_session, page_meta, parse_body, parse_query
from service.keys import POOL
from service.models import FieldError, IgnoreRequest, PageQuery, Update, UpdateCourse, UpdatePage
from service.openapi import operation


def update_from_row(row: asyncpg.Record) -> Update:
    return Update(
        version_id=row["update_version_id"], version_notes=row["version_notes"],
        create_date=row["version_create_date"], update_date=row["version_update_date"],
        courses=[UpdateCourse.model_validate(course) for course in row["courses"]],
        resource=resource_from_row(row),
    )


def _no_update(resource_id: str) -> NotFound:
    return NotFound(f"You have no available update for resource {resource_id!r}.")


@operation(
    summary="List the user's available updates", description="Newest version first.",
    tag="updates", path=(USER_ID,), query=PageQuery, responses={200: UpdatePage}, errors=(403,),
)
async def list_updates(request: web.Request) -> web.Response:
    session = own_session(request)
    query = parse_query(request, PageQuery)
    after = decode_cursor(request, query.cursor, "updates", datetime, str)
    rows = await queries.available_updates(request.app[POOL], session.user_id, after, query.size + 1)
    return json_response(UpdatePage(
        items=[update_from_row(row) for row in rows[: query.size]],
        meta=page_meta(request, rows, query.size, "updates", "sort_key", "id"),
    ))


@operation(
    summary="The user's available update for one resource", tag="updates", path=(USER_ID, RESOURCE_ID),
    responses={200: Update}, errors=(403, 404),
)
async def get_update(request: web.Request) -> web.Response:
    session = own_session(request)
    resource_id = request.match_info["resourceId"]
    row = await queries.available_update(request.app[POOL], session.user_id, resource_id)
    if row is None:
        raise _no_update(resource_id)
    return json_response(update_from_row(row))


@operation(
    summary="Ignore an available update for some courses",
    description="Ignores the resource's current update for `courseIds` (absent or empty: every pending "
    "course). A newer version makes those courses pending again.",
    tag="updates", path=(USER_ID, RESOURCE_ID), body=IgnoreRequest, body_required=False,
    responses={204: None}, errors=(403, 404),
)
async def ignore_update(request: web.Request) -> web.Response:
    session = own_session(request)
    resource_id = request.match_info["resourceId"]
    body = await parse_body(request, IgnoreRequest, required=False)
    wanted = body.course_ids if body is not None and body.course_ids else None
    async with request.app[POOL].acquire() as conn, conn.transaction():
        # The same lock the consumer takes before changing the resource's updates: whichever comes
        # second sees the other's effect.
        latest = (await ingest.lock_resources(conn, [resource_id])).get(resource_id)
        pending = await queries.pending_courses(conn, session.user_id, resource_id, latest) if latest else []
        if not pending:
            raise _no_update(resource_id)
        if wanted is not None and (unknown := sorted(set(wanted) - set(pending))):
            message = f"not pending for this update: {', '.join(unknown)}"
            raise InvalidInput(f"Some courses are {message}.",
                               [FieldError(field="courseIds", location="body", message=message)])
        await queries.ignore_courses(conn, session.user_id, resource_id, wanted or pending, latest)
        await ingest.refresh_pairs(conn, [(session.user_id, resource_id)])
    return web.Response(status=204)
