"""Refusals a client can cause or fix, raised where the rule they break lives. The API answers
each with a problem+json document of its status (service/problems.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _encodable(text: object) -> object:
    # What a client sent may come back in an error (a body property's name, say); a lone surrogate
    # there could not be written as JSON, so it becomes "?".
    return text.encode("utf-8", "replace").decode() if isinstance(text, str) else text


# Text of an error answer: any text is kept, NUL included, but it must encode.
ErrorText = Annotated[str, BeforeValidator(_encodable)]


class FieldError(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: ErrorText = Field(description="The parameter, body property or claim at fault.")
    location: str = Field(description="Where it was: `query`, `path`, `body` or `token`.")
    message: ErrorText


@dataclass
class Refused(Exception):
    """A request refused for a reason the client can fix; `slug` names its problem type."""

    detail: str
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # fields the answer carries
    status = HTTPStatus.BAD_REQUEST
    slug = "bad-request"


class InvalidInput(Refused):
    slug = "invalid-input"


class Unauthenticated(Refused):
    status = HTTPStatus.UNAUTHORIZED
    slug = "unauthenticated"


class Forbidden(Refused):
    status = HTTPStatus.FORBIDDEN
    slug = "forbidden"


class TooManyRequests(Refused):
    status = HTTPStatus.TOO_MANY_REQUESTS
    slug = "rate-limited"


class NotFound(Refused):
    status = HTTPStatus.NOT_FOUND
    slug = "not-found"


class TooManyStreams(Refused):
    status = HTTPStatus.TOO_MANY_REQUESTS
    slug = "too-many-streams"


class Unavailable(Refused):
    """Not now, from this replica: another one, or this one a moment later, may serve it."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    slug = "unavailable"
