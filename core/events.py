"""The events upstream publishers emit, as pydantic models: the contract README.md documents.

Unknown fields are ignored; an unknown `type` is not an error (it is skipped and counted), so that
publishers can add events before this service knows them. Numbers, booleans and dates must have
their own JSON types: `"versionNumber": "3"` or `true` is refused, never converted.

The consumer reads every record with `EVENT_ADAPTER.validate_json` (a model's `model_validate_json`
does the same): the JSON goes straight to the models in pydantic's compiled validator, with no
Python function per field or nested object, and text PostgreSQL cannot store is looked for in the
bytes. Events built from Python data (`validate_python`, `model_validate`) are held to the same
rules by Python validators (tests/consumer/test_decoding.py checks that both agree).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
import re
from typing import Annotated, Any, Generic, Literal, Self, TypeVar, cast
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from pydantic.config import ExtraValues
import pydantic_core
from pydantic_core import core_schema

from core.text import UNSTORABLE_TEXT, HostName, Identifier, LongText, Text, UtcDatetime, unstorable_text_path

SUPPORTED_SCHEMA_VERSIONS = frozenset({1})


class _EventDatetime:
    """An aware date and time, given as ISO 8601 text (a number is refused, never read as a Unix
    time), within the range PostgreSQL and Python both hold. From JSON it is checked by pydantic's
    compiled validator (strict: text only; the bounds keep its conversion to UTC in range); from
    Python data by core.text.UtcDatetime, which also converts it to UTC."""

    # A day inside Python's range of dates at either end: converting any offset to UTC stays in it.
    EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
    LATEST = datetime(9999, 12, 30, tzinfo=UTC)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        from_json = core_schema.datetime_schema(strict=True, tz_constraint="aware", gt=cls.EARLIEST, lt=cls.LATEST)
        return core_schema.json_or_python_schema(
            json_schema=from_json, python_schema=handler.generate_schema(UtcDatetime)
        )


EventDatetime = Annotated[datetime, _EventDatetime]


# In JSON text, NUL can only be written `\u0000` (a raw control character is not JSON), and a lone
# surrogate only as an escape too (raw, it is not UTF-8): text without such an escape holds neither.
# An escaped backslash followed by "u0000" matches as well; the search is then done on the parsed
# document, as for Python data.
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _may_hold_unstorable_text(json_data: str | bytes | bytearray) -> bool:
    if isinstance(json_data, str):
        try:
            json_data = json_data.encode()
        except UnicodeEncodeError:  # a lone surrogate in the text itself
            return True
    return _UNSTORABLE_ESCAPE.search(json_data) is not None


def _parse_or_refuse(
    json_data: str | bytes | bytearray, validate_json: Callable[[str | bytes | bytearray], object]
) -> object:
    """The parsed JSON document. JSON that does not parse raises, from `validate_json`, the
    ValidationError (json_invalid) that a caller of validate_json expects."""
    try:
        return pydantic_core.from_json(json_data)
    except ValueError:
        validate_json(json_data)
        raise


def _refuse_unstorable_text(title: str, data: object) -> None:
    """Raise the ValidationError of text PostgreSQL cannot store (NUL, a lone surrogate) anywhere
    in `data`, keys and ignored fields too: it would fail the whole batch, so such an event is
    dead-lettered."""
    if (path := unstorable_text_path(data)) is not None:
        error = ValueError(f"{path or 'value'} {UNSTORABLE_TEXT}")
        raise ValidationError.from_exception_data(
            title, [{"type": "value_error", "loc": (), "input": data, "ctx": {"error": error}}]
        )


class EventModel(BaseModel):
    """Build events with `model_validate` or `model_validate_json` (or EVENT_ADAPTER), which refuse
    text PostgreSQL cannot store; a model's own validator does not look for it, so that JSON is
    validated without a Python function per event, nested object or field."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    @classmethod
    def model_validate(
        cls,
        obj: Any,
        *,
        strict: bool | None = None,
        extra: ExtraValues | None = None,
        from_attributes: bool | None = None,
        context: Any | None = None,
        by_alias: bool | None = None,
        by_name: bool | None = None,
    ) -> Self:
        _refuse_unstorable_text(cls.__name__, obj)
        return super().model_validate(
            obj,
            strict=strict,
            extra=extra,
            from_attributes=from_attributes,
            context=context,
            by_alias=by_alias,
            by_name=by_name,
        )

    @classmethod
    def model_validate_json(
        cls,
        json_data: str | bytes | bytearray,
        *,
        strict: bool | None = None,
        extra: ExtraValues | None = None,
        context: Any | None = None,
        by_alias: bool | None = None,
        by_name: bool | None = None,
    ) -> Self:
        if _may_hold_unstorable_text(json_data):
            return cls.model_validate(
                _parse_or_refuse(json_data, cls.__pydantic_validator__.validate_json),
                strict=strict,
                extra=extra,
                context=context,
                by_alias=by_alias,
                by_name=by_name,
            )
        return super().model_validate_json(
            json_data, strict=strict, extra=extra, context=context, by_alias=by_alias, by_name=by_name
        )


class Envelope(EventModel):
    """What every event carries; read first, to route or skip the event."""

    event_id: UUID
    type: str = Field(min_length=1, max_length=200)
    occurred_at: EventDatetime
    schema_version: StrictInt


class AccountRef(EventModel):
    id: Identifier
    name: Text


class AuthorDocument(EventModel):
    id: Text
    name: Text
    avatar_url: Text | None = None


class ThumbnailDocument(EventModel):
    url: Text
    description: Text = ""


class ResourceDocument(EventModel):
    """The resource as of a version, as the API shows it."""

    title: Text
    description: LongText = ""
    type: Text
    account: AccountRef
    authors: list[AuthorDocument] = Field([], max_length=100)
    tags: list[Text] = Field([], max_length=100)
    thumbnail: ThumbnailDocument | None = None
    create_date: EventDatetime
    update_date: EventDatetime


class ResourceVersionPublished(Envelope):
    type: Literal["resource.version.published"]
    resource_id: Identifier
    version_id: Identifier
    version_number: StrictInt = Field(ge=1, le=2**31 - 1)
    version_notes: LongText = ""
    published_at: EventDatetime
    resource: ResourceDocument


class ResourceImported(Envelope):
    type: Literal["resource.imported"]
    resource_id: Identifier
    user_id: Identifier
    course_id: Identifier
    course_name: Text
    version_id: Identifier
    version_number: StrictInt = Field(ge=1, le=2**31 - 1)
    imported_at: EventDatetime


class ResourceDeleted(Envelope):
    type: Literal["resource.deleted"]
    resource_id: Identifier
    deleted_at: EventDatetime


class UserUpserted(Envelope):
    type: Literal["user.upserted"]
    user_id: Identifier
    account_id: Identifier
    account_name: Text
    name: Text = Field(min_length=1)
    email: Text
    avatar_url: Text | None = None
    canvas_user_id: Identifier | None = None
    canvas_api_domain: HostName | None = None
    is_admin: StrictBool = False
    roles: list[Text] = Field([], max_length=50)


Event = Annotated[
    ResourceVersionPublished | ResourceImported | ResourceDeleted | UserUpserted,
    Field(discriminator="type"),
]

T = TypeVar("T")


class EventAdapter(Generic[T]):
    """A TypeAdapter of events that refuses text PostgreSQL cannot store, as EventModel does: JSON
    without an escape that could spell it goes straight to the compiled validator; other JSON is
    parsed and validated as Python data, which is searched for it."""

    def __init__(self, type_: Any) -> None:
        self._adapter: TypeAdapter[T] = TypeAdapter(type_)
        self._title = "Event"

    def validate_json(self, json_data: str | bytes | bytearray) -> T:
        if _may_hold_unstorable_text(json_data):
            return self.validate_python(_parse_or_refuse(json_data, self._adapter.validate_json))
        return self._adapter.validate_json(json_data)

    def validate_python(self, data: object) -> T:
        _refuse_unstorable_text(self._title, data)
        return self._adapter.validate_python(data)


EVENT_ADAPTER: EventAdapter[Event] = EventAdapter(Event)
# Which topic carries each type (see partition_key for the key).
RESOURCE_TYPES = frozenset({"resource.version.published", "resource.imported", "resource.deleted"})
USER_TYPES = frozenset({"user.upserted"})
KNOWN_TYPES = RESOURCE_TYPES | USER_TYPES


def partition_key(event: Event) -> str:
    """The key the event must be published under: all of a resource's events, or a user's, then
    share a partition and are applied one batch after another."""
    # By exact type: isinstance on a pydantic model goes through ABCMeta's check, in Python, and
    # this runs for every record.
    if type(event) is UserUpserted:
        return event.user_id
    return cast(ResourceVersionPublished | ResourceImported | ResourceDeleted, event).resource_id
