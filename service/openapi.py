"""The OpenAPI 3.1 document, built from the routes and the pydantic models they declare."""

from __future__ import annotations

from collections.abc import Callable
import copy
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from core.text import Identifier
from service.auth import (
    SESSION_BODY_PROPERTY,
    SESSION_COOKIE,
    SESSION_HEADER,
    SESSION_QUERY,
    STATE_QUERY,
    is_public,
)
from service.models import Problem
from service.ratelimit import BY_ADDRESS

OPERATION_ATTRIBUTE = "__openapi_operation__"
_REF_TEMPLATE = "#/components/schemas/{model}"

Handler = TypeVar("Handler", bound=Callable[..., Any])


@dataclass(frozen=True)
class PathParameter:
    """A path parameter; `type` is what the server checks it against (an id, unless told)."""

    name: str
    description: str
    type: Any = Identifier


@dataclass(frozen=True)
class HeaderParameter:
    """A request header the operation reads: a text, of this pattern."""

    name: str
    description: str
    pattern: str


@dataclass(frozen=True)
class Operation:
    """What a handler accepts and answers, for the document."""

    summary: str
    tag: str
    responses: dict[int, type[BaseModel] | None]
    path: tuple[PathParameter, ...] = ()
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    errors: tuple[int, ...] = ()
    # What an error status means on this operation, where it says more than the usual text.
    error_notes: dict[int, str] = field(default_factory=dict)
    deprecated: bool = False
    description: str = ""
    response_headers: dict[str, str] = field(default_factory=dict)
    headers: tuple[HeaderParameter, ...] = ()
    # The successful answer's media type, and its schema when no model describes it.
    media_type: str = "application/json"
    schema: dict[str, Any] | None = None


def operation(**kwargs: Any) -> Callable[[Handler], Handler]:
    """Attach an Operation to a handler; routing stays aiohttp's own."""
    described = Operation(**kwargs)

    def attach(handler: Handler) -> Handler:
        setattr(handler, OPERATION_ATTRIBUTE, described)
        return handler

    return attach


_SESSION_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": SESSION_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": f"Session id (the second of five sources, after the `{SESSION_COOKIE}` cookie).",
    },
    {
        "name": SESSION_QUERY,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "Session id (third source).",
    },
    {
        "name": STATE_QUERY,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": f"Session id, its first value (fourth source; the body's `{SESSION_BODY_PROPERTY}` is the "
        "fifth).",
    },
]


def _query_parameters(model: type[BaseModel], schema: dict[str, Any]) -> list[dict[str, Any]]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    parameters = []
    for name, prop in properties.items():
        prop = dict(prop)
        description = prop.pop("description", "")
        # An optional parameter is absent, never null: a query string cannot say null.
        if prop.get("default", ...) is None and len(variants := prop.get("anyOf", [])) == 2:
            (prop,) = (variant for variant in variants if variant != {"type": "null"})
        parameters.append(
            {"name": name, "in": "query", "required": name in required, "description": description, "schema": prop}
        )
    return parameters


def _content(model: type[BaseModel] | None, media_type: str = "application/json") -> dict[str, Any]:
    if model is None:
        return {}
    return {"content": {media_type: {"schema": {"$ref": _REF_TEMPLATE.format(model=model.__name__)}}}}


# The session sources a security scheme can name; the body's `sessionId` (the fifth) cannot be one.
_SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "sessionCookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
    "sessionHeader": {"type": "apiKey", "in": "header", "name": SESSION_HEADER},
    "sessionQuery": {"type": "apiKey", "in": "query", "name": SESSION_QUERY},
    "stateQuery": {"type": "apiKey", "in": "query", "name": STATE_QUERY, "description": "Its first value."},
}
_ERROR_DESCRIPTIONS = {
    413: "The body is over `MAX_BODY_BYTES`. Without an earlier session source, the body of any request is "
    f"read to find `{SESSION_BODY_PROPERTY}`.",
    429: "Over the rate limit; `Retry-After` says when to retry.",
    503: "The database is out of reach; `Retry-After` says when to retry.",
}
# The rate limit's fields (README: "Rate limit"), on the answers of the routes it counts.
_RATE_LIMIT_HEADERS = {
    "RateLimit-Policy": "The rate limit policy: its quota `q` and window `w` in seconds.",
    "RateLimit": "The requests left, `r`, and the seconds until the window ends, `t`.",
}
_RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}


def _headers(described: dict[str, str]) -> dict[str, Any]:
    return {name: {"description": text, "schema": {"type": "string"}} for name, text in described.items()}


def _responses(op: Operation, *, public: bool, rate_limited: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, model in op.responses.items():
        content = {"content": {op.media_type: {"schema": op.schema}}} if op.schema else _content(model, op.media_type)
        responses[str(status)] = {"description": HTTPStatus(status).phrase, **content}
        if op.response_headers:
            responses[str(status)]["headers"] = _headers(op.response_headers)
    error_statuses = {400, *op.errors}
    if op.body is not None or not public:
        error_statuses.add(413)
    if not public:
        error_statuses.add(401)
    if rate_limited:
        error_statuses.add(429)
    error_statuses.add(503)  # every operation reads the database, if only to find the session
    for status in sorted(error_statuses):
        responses[str(status)] = {
            "description": op.error_notes.get(status) or _ERROR_DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            **_content(Problem, "application/problem+json"),
        }
    if rate_limited:
        for code, response in responses.items():
            if code != "401" or public:  # a session refused 401 before the request is counted
                response["headers"] = {**response.get("headers", {}), **_headers(_RATE_LIMIT_HEADERS)}
    for code in ("429", "503"):
        if code in responses:
            response = responses[code]
            response["headers"] = {**response.get("headers", {}), "Retry-After": copy.deepcopy(_RETRY_AFTER)}
    return responses


# Each document built, by its title, version and operations: every app of a process has the same
# routes, and building their document costs as much as the rest of an app's start (the tests
# start an app for each test). Nothing changes a document once built.
_BUILT: dict[tuple[Any, ...], dict[str, Any]] = {}


def build_document(app: web.Application, *, title: str, version: str) -> dict[str, Any]:
    described: list[tuple[str, str, Operation, bool]] = []
    for route in app.router.routes():
        op = getattr(route.handler, OPERATION_ATTRIBUTE, None)
        if op is not None and route.resource is not None and route.method != "HEAD":
            described.append((route.resource.canonical, route.method.lower(), op, is_public(route.handler)))
    key = (title, version, *((path, method, id(op), public) for path, method, op, public in described))
    if key not in _BUILT:
        _BUILT[key] = _document(described, title=title, version=version)
    return _BUILT[key]


def _document(described: list[tuple[str, str, Operation, bool]], *, title: str, version: str) -> dict[str, Any]:
    models: set[type[BaseModel]] = {Problem}
    for _, _, op, _ in described:
        models.update(m for m in op.responses.values() if m is not None)
    _, definitions = models_json_schema(
        [(m, "serialization") for m in models]
        + [(op.body, "validation") for _, _, op, _ in described if op.body is not None],
        ref_template=_REF_TEMPLATE,
    )
    schemas = definitions.get("$defs", {})
    query_schemas = {
        op.query: op.query.model_json_schema(by_alias=True, ref_template=_REF_TEMPLATE)
        for _, _, op, _ in described
        if op.query is not None
    }

    paths: dict[str, dict[str, Any]] = {}
    for path, method, op, public in described:
        parameters: list[dict[str, Any]] = [
            {
                "name": p.name,
                "in": "path",
                "required": True,
                "description": p.description,
                "schema": TypeAdapter(p.type).json_schema(),
            }
            for p in op.path
        ]
        if op.query is not None:
            parameters += _query_parameters(op.query, query_schemas[op.query])
        parameters += [
            {
                "name": h.name,
                "in": "header",
                "required": False,
                "description": h.description,
                "schema": {"type": "string", "pattern": h.pattern},
            }
            for h in op.headers
        ]
        if not public:
            parameters += _SESSION_PARAMETERS
        rate_limited = not public or (method.upper(), path) in BY_ADDRESS
        entry: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": parameters,
            "responses": _responses(op, public=public, rate_limited=rate_limited),
            "operationId": f"{method}{path.replace('/', '_').replace('{', '').replace('}', '')}",
        }
        if op.description:
            entry["description"] = op.description
        if op.deprecated:
            entry["deprecated"] = True
        if op.body is not None:
            entry["requestBody"] = {"required": op.body_required, **_content(op.body)}
        if not public:
            entry["security"] = [{name: []} for name in _SECURITY_SCHEMES]
        paths.setdefault(path, {})[method] = entry

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {name: dict(scheme) for name, scheme in _SECURITY_SCHEMES.items()},
        },
    }
