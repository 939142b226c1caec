"""The FastAPI peer's models (fastapi_updates.py): SQLAlchemy mapped classes and pydantic responses.

The mapped classes cover the base tables of the first migration, and only the columns the endpoint
reads: sessions, available_updates, resources, resource_versions and imports. The relationships are
`lazy="raise"`: the endpoint states how each is loaded. The response models write the service's
JSON (camelCase, README.md "Endpoints") and are validated straight from the mapped objects; the few
fields whose names differ are plain properties on the mapped classes.
"""

# The peer's libraries (fastapi, SQLAlchemy) are in .venv-peers, not in the .venv mypy runs from:
# their names are Any here, and so are the classes, values and decorators made from them.
# mypy: disable-error-code="import-not-found, import-untyped"
# mypy: allow-subclassing-any, no-warn-return-any, allow-untyped-decorators

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from sqlalchemy import Integer, LargeBinary, Text, and_, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, foreign, mapped_column, relationship
from sqlalchemy.types import DateTime

# ORM: the base tables (sql/migrations/20261127000000_schema.sql), only the columns read here -----


class Base(DeclarativeBase):
    pass


class UserSession(Base):
    __tablename__ = "sessions"

    id_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    user_id: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Resource(Base):
    __tablename__ = "resources"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(Text)
    account_id: Mapped[str] = mapped_column(Text)
    account_name: Mapped[str] = mapped_column(Text)
    authors: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text))
    thumbnail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    create_date: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_date: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version_id: Mapped[str] = mapped_column(Text)
    version_number: Mapped[int] = mapped_column(Integer)

    @property
    def account(self) -> dict[str, str]:
        return {"id": self.account_id, "name": self.account_name}


class ResourceVersion(Base):
    __tablename__ = "resource_versions"

    resource_id: Mapped[str] = mapped_column(Text, primary_key=True)
    version_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[str] = mapped_column(Text)
    version_notes: Mapped[str] = mapped_column(Text)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_date: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Import(Base):
    __tablename__ = "imports"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    resource_id: Mapped[str] = mapped_column(Text, primary_key=True)
    course_id: Mapped[str] = mapped_column(Text, primary_key=True)
    course_name: Mapped[str] = mapped_column(Text)
    version_id: Mapped[str] = mapped_column(Text)
    version_number: Mapped[int] = mapped_column(Integer)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ignored_version_number: Mapped[int | None] = mapped_column(Integer)

    # The version this course holds; the table has no foreign keys (an import may arrive first).
    held_version: Mapped[ResourceVersion | None] = relationship(
        primaryjoin=lambda: and_(
            foreign(Import.resource_id) == ResourceVersion.resource_id,
            foreign(Import.version_number) == ResourceVersion.version_number,
        ),
        viewonly=True,
        lazy="raise",
    )

    @property
    def import_date(self) -> datetime:
        return self.imported_at

    @property
    def version_create_date(self) -> datetime | None:
        return self.held_version.published_at if self.held_version is not None else None


class AvailableUpdate(Base):
    __tablename__ = "available_updates"

    user_id: Mapped[str] = mapped_column(Text, primary_key=True)
    resource_id: Mapped[str] = mapped_column(Text, primary_key=True)
    version_number: Mapped[int] = mapped_column(Integer)
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    resource: Mapped[Resource] = relationship(
        primaryjoin=lambda: foreign(AvailableUpdate.resource_id) == Resource.id, viewonly=True, lazy="raise"
    )
    version: Mapped[ResourceVersion] = relationship(
        primaryjoin=lambda: and_(
            foreign(AvailableUpdate.resource_id) == ResourceVersion.resource_id,
            foreign(AvailableUpdate.version_number) == ResourceVersion.version_number,
        ),
        viewonly=True,
        lazy="raise",
    )
    # The pending courses (README: "Updates and ignores"), most recently imported first.
    courses: Mapped[list[Import]] = relationship(
        primaryjoin=lambda: and_(
            foreign(Import.user_id) == AvailableUpdate.user_id,
            foreign(Import.resource_id) == AvailableUpdate.resource_id,
            Import.version_number < AvailableUpdate.version_number,
            func.coalesce(Import.ignored_version_number, 0) < AvailableUpdate.version_number,
        ),
        order_by=lambda: (Import.imported_at.desc(), Import.course_id),
        viewonly=True,
        lazy="raise",
    )

    @property
    def version_id(self) -> str:
        return self.version.version_id

    @property
    def version_notes(self) -> str:
        return self.version.version_notes

    @property
    def create_date(self) -> datetime:
        return self.version.published_at

    @property
    def update_date(self) -> datetime:
        return self.version.update_date


# Response models: camelCase on the wire, read from the ORM objects -----------------------------


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class Account(ApiModel):
    id: str
    name: str


class Author(ApiModel):
    id: str
    name: str
    avatar_url: str | None = None


class Thumbnail(ApiModel):
    url: str
    description: str = ""


class ResourceOut(ApiModel):
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


class UpdateCourse(ApiModel):
    course_id: str
    course_name: str
    import_date: datetime
    version_create_date: datetime | None


class Update(ApiModel):
    version_id: str
    version_notes: str
    create_date: datetime
    update_date: datetime
    courses: list[UpdateCourse]
    resource: ResourceOut


class PageMeta(ApiModel):
    cursor: str | None


class UpdatePage(ApiModel):
    items: list[Update]
    meta: PageMeta
