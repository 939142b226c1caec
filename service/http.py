"""Request parsing and response shaping shared by the handlers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
import asyncpg
from pydantic import BaseModel, TypeAdapter, ValidationError

from core import jsontext
from core.errors import FieldError, Forbidden, InvalidInput, Unauthenticated
from core.sessions import Session
from core.text import Identifier
from service import ratelimit
from service.auth import presented_hash
from service.keys import CURSORS, SESSION
from service.models import PageMeta
from service.problems import invalid_input
from service.read_your_writes import read

Model = TypeVar("Model", bound=BaseModel)


def parse_query(request: web.Request, model: type[Model]) -> Model:
    # The first value of each parameter, as for `state`.
    values: dict[str, str] = {}
    for name, value in request.query.items():
        values.setdefault(name, value)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise invalid_input(exc, "query") from None


async def parse_body(request: web.Request, model: type[Model], *, required: bool = True) -> Model | None:
    """The JSON body as `model`; None when the body is absent and not required."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise InvalidInput(
                "A JSON body is required.", [FieldError(field="body", location="body", message="missing")]
            )
        return None
    if request.content_type != "application/json":
        raise InvalidInput(
            "The body must be sent as application/json.",
            [FieldError(field="Content-Type", location="header", message=request.content_type)],
        )
    try:
        document = jsontext.loads(raw)
    except ValueError as exc:
        raise InvalidInput(
            "The body is not valid JSON.", [FieldError(field="body", location="body", message=str(exc))]
        ) from None
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise invalid_input(exc, "body") from None


_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


def path_id(request: web.Request, name: str) -> str:
    """An id from the path, checked like every other id."""
    try:
        return _IDENTIFIER.validate_python(request.match_info[name])
    except ValidationError as exc:
        message = exc.errors(include_url=False)[0]["msg"]
        raise InvalidInput(
            f"Invalid path parameter {name}.", [FieldError(field=name, location="path", message=message)]
        ) from None


def json_response(model: BaseModel, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=model.model_dump_json(by_alias=True), content_type="application/json", headers=headers
    )


def json_text_response(document: str, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A response whose JSON the database rendered, sent as it is."""
    return web.Response(status=status, body=document.encode(), content_type="application/json", headers=headers)


def document_page(
    request: web.Request, rows: Sequence[Any], size: int, kind: str, *key_columns: str, status: int = 200
) -> web.Response:
    """A page (README: "Paging") of rows whose `document` column is an item's JSON text, rendered
    by the database: up to `size` items, and the cursor after them when there are more."""
    cursor = page_meta(request, rows, size, kind, *key_columns).cursor
    items = ",".join(row["document"] for row in rows[:size])
    meta = "null" if cursor is None else f'"{cursor}"'  # a cursor is base64url: nothing to escape
    return json_text_response(f'{{"items":[{items}],"meta":{{"cursor":{meta}}}}}', status=status)


async def fetch_for_session(request: web.Request, statement: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of `statement` (made by core.sessions.for_session; `args` are its parameters from
    $2) on a route marked session_checked_in_statement: 401 when the session is unknown or has
    expired, counted by the rate limit, and 403 when the path names another user, as on every
    other route."""
    rows = await read(
        request,
        lambda db: db.fetch(statement, presented_hash(request), *args),
        lambda rows: rows[0]["session_user_id"] if rows else None,
    )
    if not rows:
        raise Unauthenticated("The session is unknown or has expired.")
    user_id = rows[0]["session_user_id"]
    await ratelimit.count_user(request, user_id)
    if request.match_info.get("userId", user_id) != user_id:
        raise Forbidden("You may only act on your own user id.")
    return [row for row in rows if row["found"]]


def own_session(request: web.Request) -> Session:
    """The caller's session, which must belong to the `{userId}` in the path."""
    session = request[SESSION]
    if request.match_info["userId"] != session.user_id:
        raise Forbidden("You may only act on your own user id.")
    return session


def decode_cursor(request: web.Request, cursor: str | None, kind: str, *types: type) -> tuple[Any, ...] | None:
    return None if cursor is None else request.app[CURSORS].decode(cursor, kind, *types)


def page_meta(request: web.Request, rows: Sequence[Any], size: int, kind: str, *key_columns: str) -> PageMeta:
    """The cursor after the last row, when the page is full (rows holds up to size + 1)."""
    if len(rows) <= size:
        return PageMeta(cursor=None)
    last = rows[size - 1]
    key: list[str | datetime] = [last[column] for column in key_columns]
    return PageMeta(cursor=request.app[CURSORS].encode(kind, *key))
