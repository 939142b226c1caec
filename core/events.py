"""The events upstream publishers emit, as pydantic models: the contract README.md documents.

Unknown fields are ignored; an unknown `type` is not an error (it is skipped and counted), so that
publishers can add events before this service knows them. Numbers, booleans and dates must have
their own JSON types: `"versionNumber": "3"` or `true` is refused, never converted.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, TypeAdapter, model_validator
from pydantic.alias_generators import to_camel

from core.text import UNSTORABLE_TEXT, HostName, Identifier, LongText, Text, UtcDatetime, unstorable_text_path

SUPPORTED_SCHEMA_VERSIONS = frozenset({1})


class EventModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: object) -> object:
        # Text PostgreSQL cannot store would fail the whole batch: such an event is dead-lettered.
        if (path := unstorable_text_path(data)) is not None:
            raise ValueError(f"{path or 'value'} {UNSTORABLE_TEXT}")
        return data


class Envelope(EventModel):
    """What every event carries; read first, to route or skip the event."""

    event_id: UUID
    type: str = Field(min_length=1, max_length=200)
    occurred_at: UtcDatetime
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
    create_date: UtcDatetime
    update_date: UtcDatetime


class ResourceVersionPublished(Envelope):
    type: Literal["resource.version.published"]
    resource_id: Identifier
    version_id: Identifier
    version_number: StrictInt = Field(ge=1, le=2**31 - 1)
    version_notes: LongText = ""
    published_at: UtcDatetime
    resource: ResourceDocument


class ResourceImported(Envelope):
    type: Literal["resource.imported"]
    resource_id: Identifier
    user_id: Identifier
    course_id: Identifier
    course_name: Text
    version_id: Identifier
    version_number: StrictInt = Field(ge=1, le=2**31 - 1)
    imported_at: UtcDatetime


class ResourceDeleted(Envelope):
    type: Literal["resource.deleted"]
    resource_id: Identifier
    deleted_at: UtcDatetime


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
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
# Which topic carries each type (see partition_key for the key).
RESOURCE_TYPES = frozenset({"resource.version.published", "resource.imported", "resource.deleted"})
USER_TYPES = frozenset({"user.upserted"})
KNOWN_TYPES = RESOURCE_TYPES | USER_TYPES


def partition_key(event: Event) -> str:
    """The key the event must be published under: all of a resource's events, or a user's, then
    share a partition and are applied one batch after another."""
    return event.user_id if isinstance(event, UserUpserted) else event.resource_id
