"""The seed of check_fastapi.py, and what README.md's rules make of it.

A handful of users, sessions, resources, versions and imports chosen for the cases of the pending
rule (README.md "Updates and ignores"): pending, ignored-older, ignored-latest and current courses,
a held version that never arrived, two updates published at the same instant, another user's
update. Here as plain data, as the answers expected from them (`expected_items`, computed in
Python), and as the events that produce them through the service (`service_events`). Loading them
into a database is check_fastapi_fixtures.py's part.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def wire(value: datetime | None) -> str | None:
    """A date as pydantic writes it in JSON: ISO 8601, `Z` for UTC."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


# The seed -------------------------------------------------------------------------------------

# The sessions, presented as they are (the database holds their SHA-256); Ada's second is expired.
ADA_SESSION = "peer-check-session-ada"
ADA_EXPIRED = "peer-check-session-ada-expired"
BOB_SESSION = "peer-check-session-bob"

USERS = [("u-ada", "a-1", "Account One", "Ada", "ada@example.org"), ("u-bob", "a-1", "Account One", "Bob", "b@x.org")]

RESOURCES: dict[str, dict[str, Any]] = {
    "r-alpha": {
        "title": "Fractions",
        "description": "All about fractions",
        "type": "course",
        "account": ("a-1", "Account One"),
        "authors": [{"id": "p1", "name": "Pat", "avatarUrl": "https://img.example/p.png"}, {"id": "p2", "name": "Q"}],
        "tags": ["math", "k12"],
        "thumbnail": {"url": "https://img.example/t.png", "description": "a thumb"},
        "create_date": t("2025-12-01T08:00:00+00:00"),
        "update_date": t("2026-03-01T11:00:00+00:00"),
        "latest": 3,
    },
    "r-beta": {
        "title": "Decimals",
        "description": "",
        "type": "quiz",
        "account": ("a-2", "Account Two"),
        "authors": [],
        "tags": [],
        "thumbnail": None,
        "create_date": t("2025-11-01T00:00:00+00:00"),
        "update_date": t("2026-02-09T00:00:00+00:00"),
        "latest": 2,
    },
    "r-gamma": {
        "title": "Geometry",
        "description": "Shapes",
        "type": "module",
        "account": ("a-1", "Account One"),
        "authors": [{"id": "p3", "name": "Rae", "avatarUrl": None}],
        "tags": ["geo"],
        "thumbnail": {"url": "https://img.example/g.png", "description": ""},
        "create_date": t("2025-10-01T00:00:00+00:00"),
        "update_date": t("2026-02-10T00:00:00+00:00"),
        "latest": 2,
    },
    "r-delta": {
        "title": "Current",
        "description": "Nothing pending",
        "type": "page",
        "account": ("a-1", "Account One"),
        "authors": [],
        "tags": [],
        "thumbnail": None,
        "create_date": t("2025-10-01T00:00:00+00:00"),
        "update_date": t("2026-01-10T00:00:00+00:00"),
        "latest": 2,
    },
}

# (resource_id, version_number, published_at, update_date, notes); r-beta's version 1 never arrived.
VERSIONS = [
    ("r-alpha", 1, t("2026-01-01T00:00:00+00:00"), t("2026-01-01T00:00:00+00:00"), "first"),
    ("r-alpha", 2, t("2026-02-01T00:00:00+00:00"), t("2026-02-01T00:00:00+00:00"), "second"),
    ("r-alpha", 3, t("2026-03-01T12:00:00.123456+00:00"), t("2026-03-01T11:00:00+00:00"), "third: more exercises"),
    ("r-beta", 2, t("2026-02-10T00:00:00+00:00"), t("2026-02-09T00:00:00+00:00"), "beta two"),
    ("r-gamma", 1, t("2026-01-15T00:00:00+00:00"), t("2026-01-15T00:00:00+00:00"), "gamma one"),
    ("r-gamma", 2, t("2026-02-10T00:00:00+00:00"), t("2026-02-10T00:00:00+00:00"), "gamma two"),
    ("r-delta", 1, t("2026-01-01T00:00:00+00:00"), t("2026-01-01T00:00:00+00:00"), "delta one"),
    ("r-delta", 2, t("2026-01-10T00:00:00+00:00"), t("2026-01-10T00:00:00+00:00"), "delta two"),
]

# (user_id, resource_id, course_id, course_name, version_number, imported_at, ignored_version_number)
IMPORTS = [
    ("u-ada", "r-alpha", "c-1", "Math 1", 1, t("2026-01-05T00:00:00+00:00"), None),  # pending
    ("u-ada", "r-alpha", "c-2", "Math 2", 1, t("2026-02-05T00:00:00+00:00"), 2),  # pending again: ignored v2
    ("u-ada", "r-alpha", "c-5", "Math 5", 2, t("2026-02-05T00:00:00+00:00"), None),  # pending, ties with c-2
    ("u-ada", "r-alpha", "c-3", "Math 3", 2, t("2026-02-06T00:00:00+00:00"), 3),  # ignored the latest
    ("u-ada", "r-alpha", "c-4", "Math 4", 3, t("2026-03-02T00:00:00+00:00"), None),  # current
    ("u-ada", "r-beta", "c-1", "Math 1", 1, t("2026-01-10T00:00:00+00:00"), None),  # holds an unknown version
    ("u-ada", "r-gamma", "c-7", "Geo 7", 1, t("2026-01-20T09:30:00.5+00:00"), None),  # pending
    ("u-ada", "r-delta", "c-1", "Math 1", 2, t("2026-01-11T00:00:00+00:00"), None),  # current: no update
    ("u-bob", "r-alpha", "c-9", "Bob's", 1, t("2026-01-07T00:00:00+00:00"), None),  # another user's update
]

# (user_id, resource_id): version_number and published_at are the resource's latest.
AVAILABLE = [("u-ada", "r-alpha"), ("u-ada", "r-beta"), ("u-ada", "r-gamma"), ("u-bob", "r-alpha")]


# The answers ----------------------------------------------------------------------------------


def version(resource_id: str, number: int) -> tuple[str, int, datetime, datetime, str] | None:
    return next((v for v in VERSIONS if v[0] == resource_id and v[1] == number), None)


def expected_items(user_id: str) -> list[dict[str, Any]]:
    """The user's updates as README.md defines them, computed here in Python from the seed."""
    items: list[dict[str, Any]] = []
    for user, resource_id in AVAILABLE:
        if user != user_id:
            continue
        resource = RESOURCES[resource_id]
        latest = version(resource_id, resource["latest"])
        assert latest is not None
        courses = sorted(
            (
                i
                for i in IMPORTS
                if i[0] == user_id and i[1] == resource_id and i[4] < resource["latest"] and (i[6] or 0) < latest[1]
            ),
            key=lambda i: (-i[5].timestamp(), i[2]),
        )
        items.append(
            {
                "versionId": f"{resource_id}-v{latest[1]}",
                "versionNotes": latest[4],
                "createDate": wire(latest[2]),
                "updateDate": wire(latest[3]),
                "courses": [
                    {
                        "courseId": i[2],
                        "courseName": i[3],
                        "importDate": wire(i[5]),
                        "versionCreateDate": wire(held[2]) if (held := version(resource_id, i[4])) else None,
                    }
                    for i in courses
                ],
                "resource": {
                    "id": resource_id,
                    "title": resource["title"],
                    "description": resource["description"],
                    "type": resource["type"],
                    "account": {"id": resource["account"][0], "name": resource["account"][1]},
                    "authors": [
                        {"id": a["id"], "name": a["name"], "avatarUrl": a.get("avatarUrl")} for a in resource["authors"]
                    ],
                    "tags": resource["tags"],
                    "thumbnail": resource["thumbnail"],
                    "createDate": wire(resource["create_date"]),
                    "updateDate": wire(resource["update_date"]),
                    "versionId": f"{resource_id}-v{resource['latest']}",
                },
                "_order": (latest[2], resource_id),
            }
        )
    items.sort(key=lambda item: item["_order"], reverse=True)
    for item in items:
        del item["_order"]
    return items


# The seed as events ---------------------------------------------------------------------------


def service_events(stage: int) -> list[dict[str, Any]]:
    """The same seed as events (README.md "Events"), in two stages: stage 1 ends before the latest
    version of r-alpha, so that c-2 can ignore version 2 and be pending again once version 3 arrives."""

    def common(at: datetime) -> dict[str, Any]:
        return {"eventId": str(uuid4()), "occurredAt": at.isoformat(), "schemaVersion": 1}

    documents: list[dict[str, Any]] = []
    if stage == 1:
        documents += [
            common(t("2025-01-01T00:00:00+00:00"))
            | {"type": "user.upserted", "userId": u, "accountId": a, "accountName": an, "name": n, "email": e}
            for u, a, an, n, e in USERS
        ]
    for rid, number, published_at, update_date, notes in VERSIONS:
        if (stage == 2) != (rid == "r-alpha" and number == 3):
            continue
        r = RESOURCES[rid]
        resource: dict[str, Any] = {
            "title": r["title"],
            "description": r["description"],
            "type": r["type"],
            "account": {"id": r["account"][0], "name": r["account"][1]},
            "authors": r["authors"],
            "tags": r["tags"],
            "createDate": r["create_date"].isoformat(),
            "updateDate": update_date.isoformat(),
        }
        if r["thumbnail"] is not None:
            resource["thumbnail"] = r["thumbnail"]
        documents.append(
            common(published_at)
            | {
                "type": "resource.version.published",
                "resourceId": rid,
                "versionId": f"{rid}-v{number}",
                "versionNumber": number,
                "versionNotes": notes,
                "publishedAt": published_at.isoformat(),
                "resource": resource,
            }
        )
    for user, rid, course, name, number, imported_at, _ in IMPORTS:
        if (stage == 2) != (number == 3):
            continue
        documents.append(
            common(imported_at)
            | {
                "type": "resource.imported",
                "resourceId": rid,
                "userId": user,
                "courseId": course,
                "courseName": name,
                "versionId": f"{rid}-v{number}",
                "versionNumber": number,
                "importedAt": imported_at.isoformat(),
            }
        )
    return documents
