"""Text and dates from the outside world, bounded so that PostgreSQL can store them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, StringConstraints, field_validator

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]

# A host name with an optional port: it becomes part of a profile URL.
HostName = Annotated[
    str,
    StringConstraints(max_length=253, pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d{1,5})?$"),
]

# Free text, bounded so that rows and index entries stay within PostgreSQL's limits.
Text = Annotated[str, StringConstraints(max_length=500)]
LongText = Annotated[str, StringConstraints(max_length=20_000)]
UNSTORABLE_TEXT = "must be UTF-8 text without NUL characters"
# What TextModel refuses, as a JSON Schema pattern for documents: NUL. A lone surrogate, refused
# too, has no pattern that every regular expression dialect reads alike, so it is only described.
STORABLE_TEXT_PATTERN = r"^[^\x00]*$"


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode()  # a lone surrogate (JSON allows "\ud800") is not UTF-8
    except UnicodeEncodeError:
        return False
    return True


def unstorable_text_path(value: object, path: str = "") -> str | None:
    """Where in a JSON-like value a string PostgreSQL cannot store is ("" for the value itself),
    or None when there is none."""
    if isinstance(value, str):
        return None if _storable(value) else path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        inner = f"{path}.{key}" if path else str(key)
        if not _storable(str(key)):
            return inner
        if (found := unstorable_text_path(item, inner)) is not None:
            return found
    return None


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of the range of dates") from None


def _date_text(value: object) -> object:
    # A date travels as ISO 8601 text: a number is refused rather than read as a Unix time.
    if isinstance(value, (int, float)):
        raise ValueError("a date must be ISO 8601 text")
    return value


UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_date_text), AfterValidator(_to_utc)]


class TextModel(BaseModel):
    """Refuses, anywhere in its input, text that PostgreSQL cannot store."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        if unstorable_text_path(value) is not None:
            raise ValueError(UNSTORABLE_TEXT)
        return value
