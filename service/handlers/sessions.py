"""Sessions: created from a signed identity token, read back, and ended."""

from __future__ import annotations

import hmac
from typing import Annotated

from aiohttp import web
from pydantic import StringConstraints

from core import sessions
from core.errors import Forbidden
from service.auth import SESSION_COOKIE, check_origin, from_cookie, public
from service.http import json_response, parse_body
from service.keys import POOL, SESSION, SETTINGS
from service.models import CreatedSession, SessionInfo, SessionRequest
from service.openapi import PathParameter, operation
from service.read_your_writes import wrote

# A session id as core.sessions.open_session makes it: 256 random bits in unpadded base64url. The
# `{id}` of a session must be the one in use, so no other string is ever served.
SessionId = Annotated[str, StringConstraints(min_length=43, max_length=43, pattern=r"^[A-Za-z0-9_-]{43}$")]
CROSS_SITE = "cross-site"


@public
@operation(
    summary="Create a session from a signed identity token",
    description="Verifies the JWT, upserts its user and opens a session. The session id is returned "
    f"and set as the `{SESSION_COOKIE}` cookie (HttpOnly, Secure, SameSite=Lax).",
    tag="sessions",
    body=SessionRequest,
    responses={201: CreatedSession},
    errors=(401,),
)
async def create_session(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await parse_body(request, SessionRequest)
    assert body is not None
    claims = sessions.verify_token(body.jwt_token, settings)
    session_id, session = await sessions.create_session(request.app[POOL], claims, settings.session_ttl_seconds)
    await wrote(request, session.user_id)
    info = SessionInfo.model_validate(session, from_attributes=True)
    response = json_response(CreatedSession(session_id=session_id, **info.model_dump()), status=201)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=settings.session_ttl_seconds,
        path="/api",
        httponly=True,
        secure=True,
        samesite="Lax",
    )
    return response


@operation(
    summary="The current session",
    description="Only the caller's own session can be read: `{id}` must be the session id in use.",
    tag="sessions",
    path=(PathParameter("id", "The session id in use.", SessionId),),
    responses={200: SessionInfo},
    errors=(403,),
)
async def get_session(request: web.Request) -> web.Response:
    session = request[SESSION]
    if not hmac.compare_digest(sessions.hash_session_id(request.match_info["id"]), session.id_hash):
        raise Forbidden("You may only read your own session.")
    return json_response(SessionInfo.model_validate(session, from_attributes=True))


def _check_cookie_logout(request: web.Request) -> None:
    """A cookie session ends only at its user's will (README: "Authentication and sessions").
    Browsers send the SameSite=Lax cookie on a top-level GET navigation from any site, so a link
    elsewhere could end the session: a logout the browser marks cross-site is refused unless an
    allowed Origin sent it, and one whose Origin (or else Referer) is not allowed is refused. A GET
    that says neither (a same-origin navigation, a typed URL) is served; a POST needs an allowed
    origin like every cookie POST."""
    if not from_cookie(request):
        return
    headers = request.headers
    if headers.get("Sec-Fetch-Site") == CROSS_SITE and "Origin" not in headers:
        raise Forbidden("A cookie session may not be ended from another site.")
    if "Origin" in headers or "Referer" in headers:
        check_origin(request)


@operation(
    summary="Destroy the current session",
    description="Ends the session in use and clears the cookie. Through the cookie, refused (403) when the "
    "browser marks the request `Sec-Fetch-Site: cross-site` without an allowed `Origin`, or when its `Origin` "
    "(or else `Referer`) is not an allowed origin; a `POST` needs an allowed origin, as every cookie `POST`.",
    tag="sessions",
    responses={204: None},
    errors=(403,),
)
async def logout(request: web.Request) -> web.Response:
    _check_cookie_logout(request)
    await sessions.end_session(request.app[POOL], request[SESSION])
    await wrote(request, request[SESSION].user_id)
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/api")
    return response
