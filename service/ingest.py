"""Applying events to the tables: the write side of §4, shared by the consumer.

Every function here is set-based: one batch of events becomes a constant number of statements,
whatever the number of events or of the users a new version fans out to. All of them are
idempotent and commutative, so the tables end the same for any delivery order and any number of
redeliveries:
- a resource keeps its highest (versionNumber, eventId);
- an import keeps its latest (importedAt, versionNumber, versionId, courseName);
- a deletion is final;
- a user keeps its latest (occurredAt, eventId).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
import json

import asyncpg

from service import queries
from service.events import Event, ResourceDeleted, ResourceImported, ResourceVersionPublished, UserUpserted


@dataclass(frozen=True)
class Applied:
    """What a batch changed, for logs and metrics."""

    events: int
    fanned_out_rows: int


async def lock_resources(conn: asyncpg.Connection, resource_ids: Iterable[str]) -> dict[str, int]:
    """Lock the rows of these resources until the transaction ends, in id order (no deadlocks),
    and return their latest version numbers. Every writer of a resource's available updates (the
    consumer and the ignore endpoint) takes this lock first, so none of them loses another's effect."""
    ids = sorted(set(resource_ids))
    if not ids:
        return {}
    rows = await conn.fetch(
        "SELECT id, version_number FROM resources WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE", ids,
    )
    return {row["id"]: row["version_number"] for row in rows}


async def apply_events(conn: asyncpg.Connection, events: Sequence[Event]) -> Applied:
    """Apply one batch inside the caller's transaction."""
    published = [e for e in events if isinstance(e, ResourceVersionPublished)]
    imported = [e for e in events if isinstance(e, ResourceImported)]
    deleted = [e for e in events if isinstance(e, ResourceDeleted)]
    users = [e for e in events if isinstance(e, UserUpserted)]

    await lock_resources(conn, [e.resource_id for e in (*published, *imported, *deleted)])
    if deleted:
        await _delete_resources(conn, deleted)
    if published:
        await _publish_versions(conn, published)
    if imported:
        await _record_imports(conn, imported)
    fanned_out = 0
    if published or deleted:
        fanned_out += await refresh_resources(conn, {e.resource_id for e in (*published, *deleted)})
    if imported:
        fanned_out += await refresh_pairs(conn, {(e.user_id, e.resource_id) for e in imported})
    if users:
        await upsert_users(conn, users)
    return Applied(events=len(events), fanned_out_rows=fanned_out)


async def _delete_resources(conn: asyncpg.Connection, deleted: Sequence[ResourceDeleted]) -> None:
    await conn.execute(
        """
        WITH tombstones AS (
            INSERT INTO resource_deletions (resource_id, deleted_at)
            SELECT resource_id, min(deleted_at) FROM unnest($1::text[], $2::timestamptz[]) AS d(resource_id, deleted_at)
            GROUP BY resource_id
            ON CONFLICT (resource_id) DO UPDATE SET deleted_at = least(resource_deletions.deleted_at, EXCLUDED.deleted_at)
            RETURNING resource_id
        ),
        versions AS (DELETE FROM resource_versions WHERE resource_id IN (SELECT resource_id FROM tombstones))
        DELETE FROM resources WHERE id IN (SELECT resource_id FROM tombstones)
        """,
        [e.resource_id for e in deleted], [e.deleted_at for e in deleted],
    )


async def _publish_versions(conn: asyncpg.Connection, published: Sequence[ResourceVersionPublished]) -> None:
    columns = (
        [e.resource_id for e in published], [e.version_number for e in published],
        [e.version_id for e in published], [e.version_notes for e in published],
        [e.published_at for e in published], [e.event_id for e in published],
        [e.resource.title for e in published], [e.resource.description for e in published],
        [e.resource.type for e in published], [e.resource.account.id for e in published],
        [e.resource.account.name for e in published],
        # Lists travel as JSON text: unnest() cannot take arrays of arrays of different lengths.
        [_json([a.model_dump(by_alias=True) for a in e.resource.authors]) for e in published],
        [_json(e.resource.tags) for e in published],
        [_json(e.resource.thumbnail.model_dump(by_alias=True)) if e.resource.thumbnail else None for e in published],
        [e.resource.create_date for e in published], [e.resource.update_date for e in published],
    )
    await conn.execute(
        """
        WITH incoming AS (
            SELECT DISTINCT ON (e.resource_id, e.version_number) e.*
            FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::timestamptz[], $6::uuid[],
                        $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                        $13::text[], $14::text[], $15::timestamptz[], $16::timestamptz[])
                 AS e(resource_id, version_number, version_id, version_notes, published_at, event_id,
                      title, description, type, account_id, account_name, authors, tags, thumbnail,
                      create_date, update_date)
            WHERE NOT EXISTS (SELECT FROM resource_deletions d WHERE d.resource_id = e.resource_id)
            ORDER BY e.resource_id, e.version_number, e.event_id DESC
        ),
        versions AS (
            INSERT INTO resource_versions (resource_id, version_number, version_id, version_notes, published_at,
                                           update_date, event_id)
            SELECT resource_id, version_number, version_id, version_notes, published_at, update_date, event_id
            FROM incoming
            ON CONFLICT (resource_id, version_number) DO UPDATE SET
                version_id = EXCLUDED.version_id, version_notes = EXCLUDED.version_notes,
                published_at = EXCLUDED.published_at, update_date = EXCLUDED.update_date, event_id = EXCLUDED.event_id
            WHERE resource_versions.event_id < EXCLUDED.event_id
        )
        INSERT INTO resources (id, title, description, type, account_id, account_name, authors, tags, thumbnail,
                               create_date, update_date, version_id, version_number, event_id)
        SELECT DISTINCT ON (resource_id)
               resource_id, title, description, type, account_id, account_name, authors::jsonb,
               ARRAY(SELECT jsonb_array_elements_text(tags::jsonb)), thumbnail::jsonb, create_date, update_date,
               version_id, version_number, event_id
        FROM incoming
        ORDER BY resource_id, version_number DESC, event_id DESC
        ON CONFLICT (id) DO UPDATE SET
            title = EXCLUDED.title, description = EXCLUDED.description, type = EXCLUDED.type,
            account_id = EXCLUDED.account_id, account_name = EXCLUDED.account_name, authors = EXCLUDED.authors,
            tags = EXCLUDED.tags, thumbnail = EXCLUDED.thumbnail, create_date = EXCLUDED.create_date,
            update_date = EXCLUDED.update_date, version_id = EXCLUDED.version_id,
            version_number = EXCLUDED.version_number, event_id = EXCLUDED.event_id
        WHERE (resources.version_number, resources.event_id) < (EXCLUDED.version_number, EXCLUDED.event_id)
        """,
        *columns,
    )


async def _record_imports(conn: asyncpg.Connection, imported: Sequence[ResourceImported]) -> None:
    await conn.execute(
        """
        INSERT INTO imports (user_id, resource_id, course_id, course_name, version_id, version_number, imported_at)
        SELECT DISTINCT ON (user_id, resource_id, course_id) *
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::timestamptz[])
             AS e(user_id, resource_id, course_id, course_name, version_id, version_number, imported_at)
        ORDER BY user_id, resource_id, course_id, imported_at DESC, version_number DESC, version_id DESC,
                 course_name DESC
        ON CONFLICT (user_id, resource_id, course_id) DO UPDATE SET
            course_name = EXCLUDED.course_name, version_id = EXCLUDED.version_id,
            version_number = EXCLUDED.version_number, imported_at = EXCLUDED.imported_at
        WHERE (imports.imported_at, imports.version_number, imports.version_id, imports.course_name)
            < (EXCLUDED.imported_at, EXCLUDED.version_number, EXCLUDED.version_id, EXCLUDED.course_name)
        """,
        [e.user_id for e in imported], [e.resource_id for e in imported], [e.course_id for e in imported],
        [e.course_name for e in imported], [e.version_id for e in imported],
        [e.version_number for e in imported], [e.imported_at for e in imported],
    )


async def upsert_users(conn: asyncpg.Connection, users: Sequence[UserUpserted]) -> None:
    """Write user identities, each unless a newer one (by occurredAt, then eventId) is there."""
    await conn.execute(
        """
        INSERT INTO users (id, account_id, account_name, name, email, avatar_url, canvas_user_id,
                           canvas_api_domain, is_admin, roles, updated_at, event_id)
        SELECT DISTINCT ON (id) id, account_id, account_name, name, email, avatar_url, canvas_user_id,
               canvas_api_domain, is_admin, ARRAY(SELECT jsonb_array_elements_text(roles::jsonb)), updated_at,
               event_id
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                    $8::text[], $9::bool[], $10::text[], $11::timestamptz[], $12::uuid[])
             AS e(id, account_id, account_name, name, email, avatar_url, canvas_user_id, canvas_api_domain,
                  is_admin, roles, updated_at, event_id)
        ORDER BY id, updated_at DESC, event_id DESC
        ON CONFLICT (id) DO UPDATE SET
            account_id = EXCLUDED.account_id, account_name = EXCLUDED.account_name, name = EXCLUDED.name,
            email = EXCLUDED.email, avatar_url = EXCLUDED.avatar_url, canvas_user_id = EXCLUDED.canvas_user_id,
            canvas_api_domain = EXCLUDED.canvas_api_domain, is_admin = EXCLUDED.is_admin,
            roles = EXCLUDED.roles, updated_at = EXCLUDED.updated_at, event_id = EXCLUDED.event_id
        WHERE (users.updated_at, users.event_id) < (EXCLUDED.updated_at, EXCLUDED.event_id)
        """,
        [e.user_id for e in users], [e.account_id for e in users], [e.account_name for e in users],
        [e.name for e in users], [e.email for e in users], [e.avatar_url for e in users],
        [e.canvas_user_id for e in users], [e.canvas_api_domain for e in users], [e.is_admin for e in users],
        [_json(e.roles) for e in users], [e.occurred_at for e in users], [e.event_id for e in users],
    )


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


# Available updates ------------------------------------------------------------------------------

# Recompute §4's definition for the (user, resource) pairs in `scope`: insert or refresh the pairs
# with a pending course, delete the others. One statement, whatever the number of pairs.
_REFRESH = f"""
WITH scope AS ({{scope}}),
wanted AS (
    SELECT DISTINCT ON (s.user_id, s.resource_id) s.user_id, s.resource_id, r.version_number, v.published_at
    FROM scope s
    JOIN resources r ON r.id = s.resource_id
    JOIN resource_versions v ON v.resource_id = r.id AND v.version_number = r.version_number
    JOIN imports i ON i.user_id = s.user_id AND i.resource_id = s.resource_id
    WHERE {queries.pending("i", "r.version_number")}
),
removed AS (
    DELETE FROM available_updates a
    USING scope s
    WHERE a.user_id = s.user_id AND a.resource_id = s.resource_id
      AND NOT EXISTS (SELECT FROM wanted w WHERE w.user_id = a.user_id AND w.resource_id = a.resource_id)
    RETURNING 1
),
upserted AS (
    INSERT INTO available_updates (user_id, resource_id, version_number, published_at)
    SELECT user_id, resource_id, version_number, published_at FROM wanted
    ON CONFLICT (user_id, resource_id) DO UPDATE SET
        version_number = EXCLUDED.version_number, published_at = EXCLUDED.published_at
    WHERE (available_updates.version_number, available_updates.published_at)
          IS DISTINCT FROM (EXCLUDED.version_number, EXCLUDED.published_at)
    RETURNING 1
)
SELECT (SELECT count(*) FROM removed) + (SELECT count(*) FROM upserted)
"""

_RESOURCE_SCOPE = """
    SELECT DISTINCT user_id, resource_id FROM imports WHERE resource_id = ANY($1::text[])
    UNION
    SELECT user_id, resource_id FROM available_updates WHERE resource_id = ANY($1::text[])
"""
_PAIR_SCOPE = "SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS p(user_id, resource_id)"


async def refresh_resources(conn: asyncpg.Connection, resource_ids: Iterable[str]) -> int:
    """Fan-out: refresh every importer of these resources. Returns the rows changed."""
    return await conn.fetchval(_REFRESH.format(scope=_RESOURCE_SCOPE), list(resource_ids))


async def refresh_pairs(conn: asyncpg.Connection, pairs: Iterable[tuple[str, str]]) -> int:
    pairs = list(pairs)
    return await conn.fetchval(_REFRESH.format(scope=_PAIR_SCOPE), [u for u, _ in pairs], [r for _, r in pairs])
