"""Sessions: created from a signed identity token, read back, and destroyed."""

from __future__ import annotations

import hmac

from aiohttp import web

from service import auth, queries
from service.errors import Forbidden
from service.http import json_response, parse_body
from service.keys import POOL, SESSION, SETTINGS
from service.models import CreatedSession, SessionInfo, SessionRequest
from service.openapi import PathParameter, operation


@operation(
    summary="Create a session from a signed identity token",
    description="Verifies the JWT, upserts its user and opens a session. The session id is returned "
    "and set as the `session` cookie (HttpOnly, Secure, SameSite=Lax).",
    tag="sessions", body=SessionRequest, responses={201: CreatedSession}, errors=(401,), public=True,
)
async def create_session(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await parse_body(request, SessionRequest)
    assert body is not None
    claims = auth.decode_identity(body.jwt_token, settings)
    session_id, session = await auth.create_session(request.app[POOL], claims, settings.session_ttl_seconds)
    response = json_response(CreatedSession(session_id=session_id, **session.info.model_dump()), status=201)
    response.set_cookie(
        auth.SESSION_COOKIE, session_id, max_age=settings.session_ttl_seconds, path="/api",
        httponly=True, secure=True, samesite="Lax",
    )
    return response


@operation(
    summary="The current session",
    description="Only the caller's own session can be read: `{id}` must be the session id in use.",
    tag="sessions", path=(PathParameter("id", "The session id in use."),),
    responses={200: SessionInfo}, errors=(403,),
)
async def get_session(request: web.Request) -> web.Response:
    session = request[SESSION]
    if not hmac.compare_digest(auth.hash_session_id(request.match_info["id"]), session.id_hash):
        raise Forbidden("You may only read your own session.")
    return json_response(session.info)


@operation(summary="Destroy the current session", tag="sessions", responses={204: None})
async def logout(request: web.Request) -> web.Response:
    await queries.delete_session(request.app[POOL], request[SESSION].id_hash)
    response = web.Response(status=204)
    response.del_cookie(auth.SESSION_COOKIE, path="/api")
    return response
