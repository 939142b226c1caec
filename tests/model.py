"""The rule of available updates (README: "Updates and ignores") as a pure-Python reference, from
the set of events seen and the ignores recorded, and the service's tables read back to compare."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
import json
from typing import Any

import asyncpg

EventDocument = dict[str, Any]
Updates = dict[tuple[str, str], tuple[int, datetime, tuple[str, ...]]]


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass
class Model:
    seen: dict[str, EventDocument] = field(default_factory=dict)
    ignored: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def add(self, documents: list[EventDocument]) -> None:
        self.seen.update((document["eventId"], document) for document in documents)

    def of_type(self, kind: str) -> list[EventDocument]:
        return [e for e in self.seen.values() if e["type"] == kind]

    def latest_versions(self) -> dict[str, EventDocument]:
        """Each resource's highest (versionNumber, eventId) publication, deleted resources left out."""
        deleted = {e["resourceId"] for e in self.of_type("resource.deleted")}
        latest: dict[str, EventDocument] = {}
        for e in self.of_type("resource.version.published"):
            current = latest.get(e["resourceId"])
            if current is None or (e["versionNumber"], e["eventId"]) > (current["versionNumber"], current["eventId"]):
                latest[e["resourceId"]] = e
        return {resource: e for resource, e in latest.items() if resource not in deleted}

    def latest(self, resource: str) -> EventDocument | None:
        return self.latest_versions().get(resource)

    def version(self, resource: str, number: int) -> EventDocument:
        return max(
            (
                e
                for e in self.of_type("resource.version.published")
                if e["resourceId"] == resource and e["versionNumber"] == number
            ),
            key=lambda e: e["eventId"],
        )

    def held(self) -> dict[tuple[str, str, str], EventDocument]:
        """Each (user, resource, course): its latest (importedAt, versionNumber, versionId, courseName) import."""
        winners: dict[tuple[str, str, str], tuple[tuple[Any, ...], EventDocument]] = {}
        for e in self.of_type("resource.imported"):
            key = (e["userId"], e["resourceId"], e["courseId"])
            rank = (moment(e["importedAt"]), e["versionNumber"], e["versionId"], e["courseName"])
            if key not in winners or rank > winners[key][0]:
                winners[key] = (rank, e)
        return {key: e for key, (_, e) in winners.items()}

    def pending(self, user: str, resource: str) -> list[str]:
        latest = self.latest(resource)
        if latest is None:
            return []
        number = latest["versionNumber"]
        return sorted(
            c
            for (u, r, c), e in self.held().items()
            if (u, r) == (user, resource) and e["versionNumber"] < number and self.ignored.get((u, r, c), 0) < number
        )

    def available_updates(self) -> Updates:
        latest = self.latest_versions()
        found: Updates = {}
        for (user, resource, course), e in self.held().items():
            if resource not in latest:
                continue
            number = latest[resource]["versionNumber"]
            if e["versionNumber"] < number and self.ignored.get((user, resource, course), 0) < number:
                published = moment(self.version(resource, number)["publishedAt"])
                found[(user, resource)] = (number, published, tuple(self.pending(user, resource)))
        return found

    def ignore(self, user: str, resource: str, courses: list[str] | None) -> str:
        pending, latest = self.pending(user, resource), self.latest(resource)
        if not pending or latest is None:
            return "not found"
        if courses and set(courses) - set(pending):
            return "invalid"
        for course in courses or pending:
            self.ignored[(user, resource, course)] = latest["versionNumber"]
        return "ignored"


async def available_updates(pool: asyncpg.Pool) -> Updates:
    """The materialized table, as the model states it: the version, and the pending courses kept with it."""
    rows = await pool.fetch("SELECT user_id, resource_id, version_number, published_at, courses FROM available_updates")
    return {
        (r["user_id"], r["resource_id"]): (
            r["version_number"],
            r["published_at"],
            tuple(sorted(course["courseId"] for course in json.loads(r["courses"]))),
        )
        for r in rows
    }
