"""The API's shapes: requests, responses and problems, as pydantic models (camelCase on the wire).

These models are the single source of the OpenAPI document, so the two cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from core.errors import ErrorText, FieldError
from core.text import STORABLE_TEXT_PATTERN, Identifier, Text, TextModel
from service.auth import SESSION_BODY_PROPERTY
from service.cursors import CURSOR_PATTERN


class ApiModel(TextModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


# Responses -------------------------------------------------------------------------------------


class Account(ApiModel):
    id: str
    name: str


class Author(ApiModel):
    id: Text
    name: Text
    avatar_url: Text | None = None


class Thumbnail(ApiModel):
    url: Text
    description: Text = ""


class Resource(ApiModel):
    id: str
    title: str
    description: str
    type: str
    account: Account
    authors: list[Author]
    tags: list[str]
    thumbnail: Thumbnail | None
    create_date: datetime
    update_date: datetime
    version_id: str


class PageMeta(ApiModel):
    cursor: str | None = Field(description="Pass as `?cursor=` for the next page; null on the last page.")


class ResourcePage(ApiModel):
    items: list[Resource]
    meta: PageMeta


class UpdateCourse(ApiModel):
    course_id: str
    course_name: str
    import_date: datetime = Field(description="When the course's copy was imported.")
    version_create_date: datetime | None = Field(
        description="When the version the course holds was published (null if that version is unknown here)."
    )


class Update(ApiModel):
    version_id: str = Field(description="The new version.")
    version_notes: str
    create_date: datetime = Field(description="When the new version was published.")
    update_date: datetime = Field(description="The resource's update date as of the new version.")
    courses: list[UpdateCourse] = Field(description="The courses the update is pending for.")
    resource: Resource


class UpdatePage(ApiModel):
    items: list[Update]
    meta: PageMeta


class UserSummary(ApiModel):
    id: str
    name: str
    email: str
    avatar_url: str | None
    account_id: str


class UserPage(ApiModel):
    items: list[UserSummary]
    meta: PageMeta


class Profile(ApiModel):
    url: str = Field(description="The user's Canvas profile page.")


class SessionInfo(ApiModel):
    sid: str = Field(description="A public handle of the session (not the secret session id).")
    expires: datetime
    user_id: str
    user_full_name: str
    account_id: str
    account_name: str
    canvas_user_id: str | None
    canvas_api_domain: str | None
    roles: list[str]
    is_admin: bool


class CreatedSession(SessionInfo):
    session_id: str = Field(description="The secret session id; also set as the `session` cookie.")


class Problem(BaseModel):
    """An RFC 9457 problem detail."""

    model_config = ConfigDict(frozen=True)

    type: str
    title: str
    status: int
    detail: ErrorText
    errors: list[FieldError] | None = None


# Requests --------------------------------------------------------------------------------------


class RequestModel(ApiModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Request bodies are bounded so that every body the document allows fits in one of the default
# MAX_BODY_BYTES however it is spelled, and a little more: too long or too many is then refused as
# such (400), not as too large (413). JSON spells a character in 12 bytes at worst (an escaped
# surrogate pair), a character of an Identifier in 2 (an escaped quote or backslash).


class BodyWithSession(RequestModel):
    # A session id may travel in the body (the last of the five session sources).
    session_id: str | None = Field(
        None,
        alias=SESSION_BODY_PROPERTY,
        max_length=200,
        pattern=STORABLE_TEXT_PATTERN,
        description="Session id, when sent in the body.",
    )


class PageQuery(TextModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    cursor: str | None = Field(
        None, pattern=CURSOR_PATTERN, description="From a previous page's `meta.cursor`, unchanged: it is signed."
    )
    size: int = Field(24, ge=1, le=100, description="Items per page.")


class ResourcesQuery(PageQuery):
    only_imported: bool = Field(
        validation_alias=AliasChoices("onlyImported"),
        description="Must be `true`: the only listing this service offers.",
        json_schema_extra={"const": True},  # the handler refuses false (README: "Endpoints")
    )


class UserSearchQuery(PageQuery):
    q: str = Field(
        max_length=200,
        pattern=STORABLE_TEXT_PATTERN,
        description="Text searched for in names and e-mails (3 characters at least); no NUL nor lone surrogate.",
    )


class FavoriteRequest(BodyWithSession):
    resource_id: Identifier


class IgnoreRequest(BodyWithSession):
    course_ids: list[Identifier] | None = Field(
        None, max_length=100, description="Courses to ignore the update for; absent or empty: all pending ones."
    )


# Bounded as every request body (above); real tokens are base64url, one byte a character, and far shorter.
JWT_MAX_LENGTH = 4096


class SessionRequest(RequestModel):
    jwt_token: str = Field(
        alias="jwt_token",
        min_length=1,
        max_length=JWT_MAX_LENGTH,
        pattern=STORABLE_TEXT_PATTERN,
        description="The signed identity token (a JWT).",
    )
