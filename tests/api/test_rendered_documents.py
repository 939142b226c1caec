"""PostgreSQL renders the JSON of updates and resources (README: "Data model"); the API document
is generated from the pydantic models. For random events, whatever their text, dates and optional
parts, every page the API serves validates against its model and says what the events said."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
import json
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from core.events import ResourceImported, ResourceVersionPublished
from service.models import Resource, ResourcePage, Update, UpdatePage
from tests.factories import apply, login

Model = TypeVar("Model", bound=BaseModel)

# Any text an event may carry: no NUL, no lone surrogate; quotes, backslashes, controls and
# characters outside the BMP included.
texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
moments = st.builds(
    lambda seconds, micros, offset: (
        datetime(2025, 1, 1, tzinfo=timezone(timedelta(minutes=offset)))
        + timedelta(seconds=seconds, microseconds=micros)
    ),
    st.integers(0, 10**8),
    st.sampled_from([0, 1, 120_000, 999_999]),
    st.sampled_from([0, 90, -300]),
)
authors = st.fixed_dictionaries(
    {"id": st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True), "name": texts},
    optional={"avatarUrl": st.one_of(st.none(), texts)},
)
resources = st.fixed_dictionaries(
    {
        "title": texts,
        "type": texts,
        "account": st.fixed_dictionaries({"id": st.just("acct-1"), "name": texts}),
        "createDate": moments,
        "updateDate": moments,
    },
    optional={
        "description": texts,
        "authors": st.lists(authors, max_size=3),
        "tags": st.lists(texts, max_size=3),
        "thumbnail": st.one_of(st.none(), st.fixed_dictionaries({"url": texts}, optional={"description": texts})),
    },
)
courses = st.lists(st.tuples(texts, moments), min_size=1, max_size=3)


def version(number: int, notes: str, published_at: datetime, resource: dict[str, Any]) -> ResourceVersionPublished:
    return ResourceVersionPublished.model_validate(
        {
            "eventId": f"00000000-0000-0000-0000-00000000000{number}",
            "type": "resource.version.published",
            "schemaVersion": 1,
            "occurredAt": published_at.isoformat(),
            "resourceId": "r1",
            "versionId": f"r1-v{number}",
            "versionNumber": number,
            "versionNotes": notes,
            "publishedAt": published_at.isoformat(),
            "resource": {k: v.isoformat() if isinstance(v, datetime) else v for k, v in resource.items()},
        }
    )


def imports(course_list: list[tuple[str, datetime]]) -> list[ResourceImported]:
    return [
        ResourceImported.model_validate(
            {
                "eventId": f"10000000-0000-0000-0000-00000000000{n}",
                "type": "resource.imported",
                "schemaVersion": 1,
                "occurredAt": at.isoformat(),
                "resourceId": "r1",
                "userId": "u1",
                "courseId": f"c{n}",
                "courseName": name,
                "versionId": "r1-v1",
                "versionNumber": 1,
                "importedAt": at.isoformat(),
            }
        )
        for n, (name, at) in enumerate(course_list)
    ]


async def rendered(client: Any, headers: dict[str, str], url: str, model: type[Model]) -> Model:
    """The document at `url`, which must validate against `model` and be what pydantic itself
    would write of it: the same members, nulls and time formats."""
    body = await (await client.get(url, headers=headers)).read()
    document = model.model_validate_json(body)
    assert json.loads(body) == json.loads(document.model_dump_json(by_alias=True)), url
    return document


def says_the_same(resource: Resource, event: ResourceVersionPublished) -> None:
    document = event.resource
    assert (resource.id, resource.version_id) == (event.resource_id, event.version_id)
    assert (resource.title, resource.description, resource.type) == (
        document.title,
        document.description,
        document.type,
    )
    assert (resource.account.id, resource.account.name) == (document.account.id, document.account.name)
    assert [(a.id, a.name, a.avatar_url) for a in resource.authors] == [
        (a.id, a.name, a.avatar_url) for a in document.authors
    ]
    assert resource.tags == document.tags
    if document.thumbnail is None:
        assert resource.thumbnail is None
    else:
        assert resource.thumbnail is not None
        assert (resource.thumbnail.url, resource.thumbnail.description) == (
            document.thumbnail.url,
            document.thumbnail.description,
        )
    assert (resource.create_date, resource.update_date) == (document.create_date, document.update_date)
    assert resource.create_date.tzinfo == UTC


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    old=resources,
    new=resources,
    notes=texts,
    published_at=moments,
    course_list=courses,
)
async def test_pages_rendered_by_sql_validate_and_say_what_the_events_said(
    client, pool, old, new, notes, published_at, course_list
):
    await pool.execute(
        "TRUNCATE available_updates, imports, imported_resources, favorites, resources, resource_versions"
    )
    first, second = version(1, "first", published_at - timedelta(days=1), old), version(2, notes, published_at, new)
    await apply(pool, first, *imports(course_list), second)
    headers = {"X-Session-ID": await login(pool, "u1")}
    assert (await client.post("/api/users/u1/favorites", json={"resourceId": "r1"}, headers=headers)).status == 201

    page = await rendered(client, headers, "/api/users/u1/updates", UpdatePage)
    one = await rendered(client, headers, "/api/users/u1/updates/r1", Update)
    assert page.items == [one]
    assert (one.version_id, one.version_notes, one.create_date) == ("r1-v2", notes, second.published_at)
    assert one.update_date == second.resource.update_date
    says_the_same(one.resource, second)
    # Most recently imported first, then by course id.
    expected = sorted(
        ((f"c{n}", name, at) for n, (name, at) in enumerate(course_list)), key=lambda c: (-c[2].timestamp(), c[0])
    )
    assert [(c.course_id, c.course_name, c.import_date) for c in one.courses] == expected
    assert all(c.version_create_date == first.published_at for c in one.courses)

    for listing in ("/api/users/u1/imports", "/api/resources?onlyImported=true", "/api/users/u1/favorites"):
        resources_page = await rendered(client, headers, listing, ResourcePage)
        assert len(resources_page.items) == 1, listing
        says_the_same(resources_page.items[0], second)
