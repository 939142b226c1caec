"""Available updates: list, one, and ignoring one for some courses."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from core import updates
from service.auth import session_checked_in_statement
from service.handlers.resources import RESOURCE_ID, USER_ID
from service.http import (
    decode_cursor,
    document_page,
    fetch_for_session,
    json_text_response,
    own_session,
    parse_body,
    parse_query,
    path_id,
)
from service.keys import POOL
from service.models import IgnoreRequest, PageQuery, Update, UpdatePage
from service.openapi import operation
from service.read_your_writes import wrote


@operation(
    summary="List the user's available updates",
    description="Newest version first.",
    tag="updates",
    path=(USER_ID,),
    query=PageQuery,
    responses={200: UpdatePage},
    errors=(403,),
)
@session_checked_in_statement
async def list_updates(request: web.Request) -> web.Response:
    query = parse_query(request, PageQuery)
    after = decode_cursor(request, query.cursor, "updates", datetime, str)
    rows = await fetch_for_session(request, updates.PAGE_SQL, *(after or (None, None)), query.size + 1)
    return document_page(request, rows, query.size, "updates", "published_at", "resource_id")


@operation(
    summary="The user's available update for one resource",
    tag="updates",
    path=(USER_ID, RESOURCE_ID),
    responses={200: Update},
    errors=(403, 404),
)
@session_checked_in_statement
async def get_update(request: web.Request) -> web.Response:
    resource_id = path_id(request, "resourceId")
    rows = await fetch_for_session(request, updates.ONE_SQL, resource_id)
    if not rows:
        raise updates.no_update(resource_id)
    return json_text_response(rows[0]["document"])


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
    await wrote(request, session.user_id)
    return web.Response(status=204)
