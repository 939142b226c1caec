"""Colleagues: Canvas profiles and user search."""

from __future__ import annotations

from aiohttp import web

from core import users
from core.errors import Forbidden, NotFound
from service.http import decode_cursor, json_response, parse_query, path_id
from service.keys import CURSORS, SESSION
from service.models import PageMeta, Profile, UserPage, UserSearchQuery, UserSummary
from service.openapi import PathParameter, operation
from service.read_your_writes import read

MIN_QUERY_LENGTH = 3


@operation(
    summary="The Canvas profile URL of a user of your account",
    tag="users",
    path=(PathParameter("userId", "Any user of the caller's account."),),
    responses={200: Profile},
    errors=(404,),
)
async def get_profile(request: web.Request) -> web.Response:
    session = request[SESSION]
    user_id = path_id(request, "userId")
    row = await read(
        request, lambda db: users.canvas_identity(db, user_id, session.account_id), lambda _: session.user_id
    )
    if row is None:
        raise NotFound(f"No user {user_id!r} in your account.")
    if row["canvas_user_id"] is None or row["canvas_api_domain"] is None:
        raise NotFound(f"User {user_id!r} has no Canvas profile.")
    return json_response(Profile(url=f"https://{row['canvas_api_domain']}/about/{row['canvas_user_id']}"))


@operation(
    summary="Search the users of your account",
    description="Case-insensitive substring match on name or e-mail, ordered by name. Admins and "
    "group managers only. A `q` shorter than 3 characters finds nothing (an empty page). Each page reads a "
    "bounded number of users, so a page may hold fewer items than `size`, even none, and still have a "
    "`meta.cursor`: keep following it until it is null.",
    tag="users",
    query=UserSearchQuery,
    responses={200: UserPage},
    errors=(403,),
)
async def search_users(request: web.Request) -> web.Response:
    session = request[SESSION]
    if not session.may_search_users:
        raise Forbidden("Only admins and group managers may search users.")
    query = parse_query(request, UserSearchQuery)
    after = decode_cursor(request, query.cursor, "users", str, str)
    if len(query.q) < MIN_QUERY_LENGTH:
        return json_response(UserPage(items=[], meta=PageMeta(cursor=None)))
    page = await read(
        request,
        lambda db: users.search_users(db, session.account_id, query.q, after, query.size),
        lambda _: session.user_id,
    )
    # The cursor is where the page's search stopped: after its last item, or after the last user it
    # walked past when it found fewer (README: "Data model", user search).
    cursor = None if page.after is None else request.app[CURSORS].encode("users", *page.after)
    return json_response(
        UserPage(
            items=[UserSummary.model_validate(user._asdict()) for user in page.users],
            meta=PageMeta(cursor=cursor),
        )
    )
