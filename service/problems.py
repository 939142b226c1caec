"""The one middleware that turns every failure into problem+json (RFC 9457)."""

from __future__ import annotations

from http import HTTPStatus
import logging

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from core import db
from core.errors import FieldError, InvalidInput, Refused
from service.models import Problem

log = logging.getLogger(__name__)

PROBLEM_TYPE_BASE = "urn:commons-users:problem:"


def invalid_input(exc: ValidationError, location: str) -> InvalidInput:
    """A pydantic validation failure, each error naming the field at fault and where it was."""
    errors = [
        FieldError(
            field=".".join(str(part) for part in err["loc"]) or location,
            location=location,
            message=err["msg"],
        )
        for err in exc.errors(include_url=False)
    ]
    fields = ", ".join(dict.fromkeys(e.field for e in errors))
    return InvalidInput(f"Invalid {location}: {fields}", errors)


def problem_response(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    phrase = HTTPStatus(status).phrase
    problem = Problem(
        type=PROBLEM_TYPE_BASE + slug if slug else "about:blank",
        title=phrase,
        status=status,
        detail=detail,
        errors=errors or None,
    )
    return web.Response(
        status=status,
        body=problem.model_dump_json(by_alias=True, exclude_none=True),
        content_type="application/problem+json",
        headers=headers,
    )


_PASSED_HEADERS = ("Allow",)


def _route(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Refused as exc:
        return problem_response(exc.status, exc.detail, slug=exc.slug, errors=exc.errors, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {name: exc.headers[name] for name in _PASSED_HEADERS if name in exc.headers}
        # aiohttp's own texts ("Maximum request body size ...") say more than the bare reason.
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return problem_response(exc.status, detail, headers=headers)
    except Exception as exc:
        if db.out_of_reach(exc):  # it comes back by itself: the pool replaces broken connections
            log.warning("the database is out of reach in %s %s: %r", request.method, _route(request), exc)
            return problem_response(
                503,
                "The database is out of reach; try again shortly.",
                slug="unavailable",
                headers={"Retry-After": "1"},
            )
        log.exception("unhandled error in %s %s", request.method, _route(request))
        return problem_response(500, "The server could not complete the request.")
