"""Refusals a client can cause or fix, raised where the rule they break lives. The API answers
each with a problem+json document of its status (service/problems.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from core.text import TextModel


class FieldError(TextModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    field: str = Field(description="The parameter, body property or claim at fault.")
    location: str = Field(description="Where it was: `query`, `path`, `body` or `token`.")
    message: str


@dataclass
class Refused(Exception):
    """A request refused for a reason the client can fix; `slug` names its problem type."""

    detail: str
    errors: list[FieldError] = field(default_factory=list)
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


class NotFound(Refused):
    status = HTTPStatus.NOT_FOUND
    slug = "not-found"
