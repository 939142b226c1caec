"""The HTTP edge of sessions: where a request's session id comes from, the Origin check on
cookie sessions, and the middleware that authenticates every route not marked public (or, on
routes whose statement checks the session, requires that one was presented)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from core import jsontext
from core.errors import Forbidden, Unauthenticated
from core.sessions import Session, find_session, hash_session_id
from service.keys import SESSION, SETTINGS
from service.proxies import client
from service.read_your_writes import read

# Where a session id may come from, in the order they are read (README: "Authentication and sessions").
SESSION_COOKIE = "session"
SESSION_HEADER = "X-Session-ID"
SESSION_QUERY = "session-id"
STATE_QUERY = "state"  # its first value
SESSION_BODY_PROPERTY = "sessionId"
SOURCES_IN_WORDS = (
    f"the `{SESSION_COOKIE}` cookie, the {SESSION_HEADER} header, the `{SESSION_QUERY}` or `{STATE_QUERY}` "
    f"query parameter or the body's `{SESSION_BODY_PROPERTY}`"
)

_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PUBLIC_ATTRIBUTE = "__public_route__"
_CHECKED_IN_STATEMENT_ATTRIBUTE = "__session_checked_in_statement__"
_PRESENTED_HASH = web.RequestKey("hash of the session id presented", bytes)
_PRESENTED_IN_BODY = web.RequestKey("session id presented in the body", str)
_FROM_COOKIE = web.RequestKey("session came from the cookie", bool)

RouteHandler = TypeVar("RouteHandler", bound=Callable[..., Any])


def public(handler: RouteHandler) -> RouteHandler:
    """Mark a handler as answering without a session; every other route needs one."""
    setattr(handler, _PUBLIC_ATTRIBUTE, True)
    return handler


def is_public(handler: Callable[..., Any]) -> bool:
    return getattr(handler, _PUBLIC_ATTRIBUTE, False) is True


def session_checked_in_statement(handler: RouteHandler) -> RouteHandler:
    """Mark a read-only handler whose one statement checks the session itself (service.http's
    fetch_for_session), so that the request costs one round trip to the database, not two. The
    middleware then only requires that a session id was presented."""
    setattr(handler, _CHECKED_IN_STATEMENT_ATTRIBUTE, True)
    return handler


def checked_in_statement(request: web.Request) -> bool:
    return getattr(request.match_info.handler, _CHECKED_IN_STATEMENT_ATTRIBUTE, False) is True


def presented_hash(request: web.Request) -> bytes:
    """On a route whose statement checks the session: the hash of the session id presented."""
    return request[_PRESENTED_HASH]


async def _session_id_from_body(request: web.Request) -> str | None:
    if not request.can_read_body or request.content_type != "application/json":
        return None
    try:
        body = jsontext.loads(await request.read())
    except ValueError:
        return None  # the handler reports the bad body, once the caller is known
    value = body.get(SESSION_BODY_PROPERTY) if isinstance(body, dict) else None
    if not isinstance(value, str):
        return None
    request[_PRESENTED_IN_BODY] = value
    return value


def presented_in_body(request: web.BaseRequest) -> str | None:
    """The body's session id, once authentication has read it (the access log redacts it)."""
    return request.get(_PRESENTED_IN_BODY)


async def presented_session_id(request: web.Request) -> tuple[str | None, bool]:
    """The session id from the first source that has one, in the documented order, and whether
    it came from the cookie."""
    if cookie := request.cookies.get(SESSION_COOKIE):
        return cookie, True
    for candidate in (
        request.headers.get(SESSION_HEADER),
        request.query.get(SESSION_QUERY),
        request.query.get(STATE_QUERY),  # the first value of `state`
    ):
        if candidate:
            return candidate, False
    return await _session_id_from_body(request), False


def check_origin(request: web.Request) -> None:
    """CSRF defence for cookie sessions: the request must come from an allowed origin, or from the
    origin the client sent it to (behind a trusted proxy, the one the proxy names)."""
    allowed = {*request.app[SETTINGS].allowed_origins, client(request).origin}
    origin = request.headers.get("Origin")
    if origin is None and (referer := request.headers.get("Referer")):
        try:
            origin = str(URL(referer).origin())
        except ValueError:  # a relative or malformed Referer names no origin, so none that is allowed
            origin = "null"
    if origin is None or origin.rstrip("/") not in allowed:
        raise Forbidden("A cookie session may change data only from an allowed Origin.")


async def _required_session_id(request: web.Request) -> tuple[str, bool]:
    session_id, from_cookie = await presented_session_id(request)
    if not session_id:
        raise Unauthenticated(f"No session: send one in {SOURCES_IN_WORDS}.")
    return session_id, from_cookie


def _user_of(session: Session | None) -> str | None:
    return None if session is None else session.user_id


async def authenticate(request: web.Request) -> Session:
    session_id, from_cookie = await _required_session_id(request)
    # On a replica when one has the user's last write; a session unknown there (one opened a moment ago?) is
    # looked for on the primary.
    session: Session | None = await read(request, lambda db: find_session(db, session_id), _user_of)
    if session is None:
        raise Unauthenticated("The session is unknown or has expired.")
    if from_cookie and request.method in _UNSAFE_METHODS:
        check_origin(request)
    request[_FROM_COOKIE] = from_cookie
    return session


def from_cookie(request: web.Request) -> bool:
    """Whether the authenticated session came from the cookie, the one source a browser sends on
    its own."""
    return request.get(_FROM_COOKIE) is True


def needs_session(request: web.Request) -> bool:
    """Every route needs a session but those marked public. A request that matches no route gets
    its 404 or 405 without one."""
    match_info = request.match_info
    return match_info.http_exception is None and not is_public(match_info.handler)


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not needs_session(request):
        pass
    elif checked_in_statement(request):
        session_id, from_cookie = await _required_session_id(request)
        request[_PRESENTED_HASH] = hash_session_id(session_id)
        request[_FROM_COOKIE] = from_cookie
    else:
        request[SESSION] = await authenticate(request)
    return await handler(request)
