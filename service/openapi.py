"""The OpenAPI 3.1 document, built from the routes and the pydantic models they declare."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.auth import (
    SESSION_BODY_PROPERTY,
    SESSION_COOKIE,
    SESSION_HEADER,
    SESSION_QUERY,
    STATE_QUERY,
    is_public,
)
from service.models import Problem

OPERATION_ATTRIBUTE = "__openapi_operation__"
_REF_TEMPLATE = "#/components/schemas/{model}"

Handler = TypeVar("Handler", bound=Callable[..., Any])


@dataclass(frozen=True)
class PathParameter:
    name: str
    description: str


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
    deprecated: bool = False
    description: str = ""
    response_headers: dict[str, str] = field(default_factory=dict)


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
        parameters.append(
            {"name": name, "in": "query", "required": name in required, "description": description, "schema": prop}
        )
    return parameters


def _content(model: type[BaseModel] | None, media_type: str = "application/json") -> dict[str, Any]:
    if model is None:
        return {}
    return {"content": {media_type: {"schema": {"$ref": _REF_TEMPLATE.format(model=model.__name__)}}}}


def build_document(app: web.Application, *, title: str, version: str) -> dict[str, Any]:
    described: list[tuple[str, str, Operation, bool]] = []
    for route in app.router.routes():
        op = getattr(route.handler, OPERATION_ATTRIBUTE, None)
        if op is not None and route.resource is not None and route.method != "HEAD":
            described.append((route.resource.canonical, route.method.lower(), op, is_public(route.handler)))

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
            {"name": p.name, "in": "path", "required": True, "description": p.description, "schema": {"type": "string"}}
            for p in op.path
        ]
        if op.query is not None:
            parameters += _query_parameters(op.query, query_schemas[op.query])
        if not public:
            parameters += _SESSION_PARAMETERS
        responses: dict[str, Any] = {}
        for status, model in op.responses.items():
            responses[str(status)] = {"description": HTTPStatus(status).phrase, **_content(model)}
            if op.response_headers:
                responses[str(status)]["headers"] = {
                    name: {"description": text, "schema": {"type": "string"}}
                    for name, text in op.response_headers.items()
                }
        error_statuses = {400, 413, *op.errors} if op.body else {400, *op.errors}
        if not public:
            error_statuses |= {401}
        for status in sorted(error_statuses):
            responses[str(status)] = {
                "description": HTTPStatus(status).phrase,
                **_content(Problem, "application/problem+json"),
            }
        entry: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": parameters,
            "responses": responses,
            "operationId": f"{method}{path.replace('/', '_').replace('{', '').replace('}', '')}",
        }
        if op.description:
            entry["description"] = op.description
        if op.deprecated:
            entry["deprecated"] = True
        if op.body is not None:
            entry["requestBody"] = {"required": op.body_required, **_content(op.body)}
        if not public:
            entry["security"] = [{"sessionCookie": []}, {"sessionHeader": []}]
        paths.setdefault(path, {})[method] = entry

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
                "sessionHeader": {"type": "apiKey", "in": "header", "name": SESSION_HEADER},
            },
        },
    }
