"""The events upstream publishers emit, as pydantic models (the contract is in README.md).

Unknown fields are ignored; an unknown `type` is not an error (it is skipped and counted), so that
publishers can add events before this service knows them.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic.alias_generators import to_camel

from service.models import Author, HostName, Identifier, Thumbnail, nul_path

SUPPORTED_SCHEMA_VERSIONS = frozenset({1})


class EventModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: object) -> object:
        # PostgreSQL text cannot hold NUL: such an event is refused whole (and dead-lettered).
        if (path := nul_path(data)) is not None:
            raise ValueError(f"{path or 'value'} must not contain NUL characters")
        return data


class Envelope(EventModel):
    """What every event carries; read first, to route or skip the event."""

    event_id: UUID
    type: str = Field(min_length=1)
    occurred_at: AwareDatetime
    schema_version: int


class _Event(Envelope):
    pass


class AccountRef(EventModel):
    id: Identifier
    name: str


class ResourceDocument(EventModel):
    """The resource as of a version, as the API shows it."""

    title: str
    description: str = ""
    type: str
    account: AccountRef
    authors: list[Author] = []
    tags: list[str] = []
    thumbnail: Thumbnail | None = None
    create_date: AwareDatetime
    update_date: AwareDatetime


class ResourceVersionPublished(_Event):
    type: Literal["resource.version.published"]
    resource_id: Identifier
    version_id: Identifier
    version_number: int = Field(ge=1, le=2**31 - 1)
    version_notes: str = ""
    published_at: AwareDatetime
    resource: ResourceDocument


class ResourceImported(_Event):
    type: Literal["resource.imported"]
    resource_id: Identifier
    user_id: Identifier
    course_id: Identifier
    course_name: str
    version_id: Identifier
    version_number: int = Field(ge=1, le=2**31 - 1)
    imported_at: AwareDatetime


class ResourceDeleted(_Event):
    type: Literal["resource.deleted"]
    resource_id: Identifier
    deleted_at: AwareDatetime


class UserUpserted(_Event):
    type: Literal["user.upserted"]
    user_id: Identifier
    account_id: Identifier
    account_name: str
    name: str = Field(min_length=1)
    email: str
    avatar_url: str | None = None
    canvas_user_id: Identifier | None = None
    canvas_api_domain: HostName | None = None
    is_admin: bool = False
    roles: list[str] = []


Event = Annotated[
    Union[ResourceVersionPublished, ResourceImported, ResourceDeleted, UserUpserted],
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
KNOWN_TYPES = frozenset({"resource.version.published", "resource.imported", "resource.deleted", "user.upserted"})

# Which topic carries each type, and which field is its key (for producers).
RESOURCE_TYPES = frozenset({"resource.version.published", "resource.imported", "resource.deleted"})
USER_TYPES = frozenset({"user.upserted"})
