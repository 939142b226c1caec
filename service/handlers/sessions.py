"""Sessions: created from a signed identity token, read back, and ended."""

from __future__ import annotations

import hmac

from aiohttp import web

from core import sessions
from core.errors import Forbidden
from service.auth import SESSION_COOKIE, public
from service.http import json_response, parse_body
from service.keys import POOL, SESSION, SETTINGS
from service.models import CreatedSession, SessionInfo, SessionRequest
from service.openapi import PathParameter, operation


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
    path=(PathParameter("id", "The session id in use."),),
    responses={200: SessionInfo},
    errors=(403,),
)
async def get_session(request: web.Request) -> web.Response:
    session = request[SESSION]
    if not hmac.compare_digest(sessions.hash_session_id(request.match_info["id"]), session.id_hash):
        raise Forbidden("You may only read your own session.")
    return json_response(SessionInfo.model_validate(session, from_attributes=True))


@operation(summary="Destroy the current session", tag="sessions", responses={204: None})
async def logout(request: web.Request) -> web.Response:
    await sessions.end_session(request.app[POOL], request[SESSION])
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/api")
    return response
