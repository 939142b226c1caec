"""Available updates: list, one, and ignoring one for some courses."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
import asyncpg

from core import updates
from service.handlers.resources import RESOURCE_ID, USER_ID, resource_from_row
from service.http import decode_cursor, json_response, own_session, page_meta, parse_body, parse_query, path_id
from service.keys import POOL
from service.models import IgnoreRequest, PageQuery, Update, UpdateCourse, UpdatePage
from service.openapi import operation


def update_from_row(row: asyncpg.Record) -> Update:
    return Update(
        version_id=row["update_version_id"],
        version_notes=row["version_notes"],
        create_date=row["version_create_date"],
        update_date=row["version_update_date"],
        courses=[UpdateCourse.model_validate(course) for course in row["courses"]],
        resource=resource_from_row(row),
    )


@operation(
    summary="List the user's available updates",
    description="Newest version first.",
    tag="updates",
    path=(USER_ID,),
    query=PageQuery,
    responses={200: UpdatePage},
    errors=(403,),
)
async def list_updates(request: web.Request) -> web.Response:
    session = own_session(request)
    query = parse_query(request, PageQuery)
    after = decode_cursor(request, query.cursor, "updates", datetime, str)
    rows = await updates.available_updates(request.app[POOL], session.user_id, after, query.size + 1)
    return json_response(
        UpdatePage(
            items=[update_from_row(row) for row in rows[: query.size]],
            meta=page_meta(request, rows, query.size, "updates", "published_at", "resource_id"),
        )
    )


@operation(
    summary="The user's available update for one resource",
    tag="updates",
    path=(USER_ID, RESOURCE_ID),
    responses={200: Update},
    errors=(403, 404),
)
async def get_update(request: web.Request) -> web.Response:
    session = own_session(request)
    resource_id = path_id(request, "resourceId")
    row = await updates.available_update(request.app[POOL], session.user_id, resource_id)
    if row is None:
        raise updates.no_update(resource_id)
    return json_response(update_from_row(row))


@operation(
    summary="Ignore an available update for some courses",
    description="Ignores the resource's current update for `courseIds` (absent or empty: every pending "
    "course). A newer version makes those courses pending again.",
    tag="updates",
    path=(USER_ID, RESOURCE_ID),
    body=IgnoreRequest,
    body_required=False,
    responses={204: None},
    errors=(403, 404),
)
async def ignore_update(request: web.Request) -> web.Response:
    session = own_session(request)
    body = await parse_body(request, IgnoreRequest, required=False)
    course_ids = body.course_ids if body is not None else None
    await updates.ignore_update(request.app[POOL], session.user_id, path_id(request, "resourceId"), course_ids)
    return web.Response(status=204)
