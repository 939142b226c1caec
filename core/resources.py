"""Resources: each kept as of its highest published (versionNumber, eventId), every version kept
for its notes and date, and a deletion final (a tombstone in resource_deletions)."""

from __future__ import annotations

from collections.abc import Sequence

from core.db import Connection
from core.events import ResourceDeleted, ResourceVersionPublished


async def delete_resources(conn: Connection, deleted: Sequence[ResourceDeleted]) -> None:
    """Tombstone the resources and drop their rows (favorites follow by cascade)."""
    await conn.execute(
        """
        WITH tombstones AS (
            INSERT INTO resource_deletions (resource_id, deleted_at)
            SELECT resource_id, min(deleted_at)
            FROM jsonb_to_recordset($1::jsonb) AS e(resource_id text, deleted_at timestamptz)
            GROUP BY resource_id
            ON CONFLICT (resource_id) DO UPDATE
                SET deleted_at = least(resource_deletions.deleted_at, EXCLUDED.deleted_at)
            RETURNING resource_id
        ),
        versions AS (DELETE FROM resource_versions WHERE resource_id IN (SELECT resource_id FROM tombstones))
        DELETE FROM resources WHERE id IN (SELECT resource_id FROM tombstones)
        """,
        [event.model_dump(include={"resource_id", "deleted_at"}) for event in deleted],
    )


def _version_row(event: ResourceVersionPublished) -> dict[str, object]:
    resource = event.resource
    return {
        "resource_id": event.resource_id,
        "version_number": event.version_number,
        "version_id": event.version_id,
        "version_notes": event.version_notes,
        "published_at": event.published_at,
        "event_id": event.event_id,
        "title": resource.title,
        "description": resource.description,
        "type": resource.type,
        "account_id": resource.account.id,
        "account_name": resource.account.name,
        "authors": [author.model_dump(by_alias=True) for author in resource.authors],
        "tags": resource.tags,
        "thumbnail": resource.thumbnail.model_dump(by_alias=True) if resource.thumbnail else None,
        "create_date": resource.create_date,
        "update_date": resource.update_date,
    }


async def publish_versions(conn: Connection, published: Sequence[ResourceVersionPublished]) -> list[str]:
    """Record the versions, and move each resource to its highest one. Versions of deleted
    resources are dropped. Returns the resources whose latest version was published again under
    the same number (other notes, title or version id): their updates changed though no row of
    them did."""
    rows = await conn.fetch(
        """
        WITH incoming AS (
            SELECT DISTINCT ON (e.resource_id, e.version_number) e.*
            FROM jsonb_to_recordset($1::jsonb) AS e(
                resource_id text, version_number integer, version_id text, version_notes text,
                published_at timestamptz, event_id uuid, title text, description text, type text,
                account_id text, account_name text, authors jsonb, tags jsonb, thumbnail jsonb,
                create_date timestamptz, update_date timestamptz)
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
                published_at = EXCLUDED.published_at, update_date = EXCLUDED.update_date,
                event_id = EXCLUDED.event_id
            WHERE resource_versions.event_id < EXCLUDED.event_id
        ),
        moved AS (
            INSERT INTO resources (id, title, description, type, account_id, account_name, authors, tags, thumbnail,
                                   create_date, update_date, version_id, version_number, version_notes, published_at,
                                   event_id)
            SELECT DISTINCT ON (resource_id)
                   resource_id, title, description, type, account_id, account_name, authors,
                   ARRAY(SELECT jsonb_array_elements_text(tags)), thumbnail, create_date, update_date,
                   version_id, version_number, version_notes, published_at, event_id
            FROM incoming
            ORDER BY resource_id, version_number DESC, event_id DESC
            ON CONFLICT (id) DO UPDATE SET
                title = EXCLUDED.title, description = EXCLUDED.description, type = EXCLUDED.type,
                account_id = EXCLUDED.account_id, account_name = EXCLUDED.account_name, authors = EXCLUDED.authors,
                tags = EXCLUDED.tags, thumbnail = EXCLUDED.thumbnail, create_date = EXCLUDED.create_date,
                update_date = EXCLUDED.update_date, version_id = EXCLUDED.version_id,
                version_number = EXCLUDED.version_number, version_notes = EXCLUDED.version_notes,
                published_at = EXCLUDED.published_at, event_id = EXCLUDED.event_id
            WHERE (resources.version_number, resources.event_id) < (EXCLUDED.version_number, EXCLUDED.event_id)
            RETURNING id, version_number
        )
        -- The statement reads the rows as they were before it: the same number is a republication.
        SELECT moved.id FROM moved JOIN resources r ON r.id = moved.id AND r.version_number = moved.version_number
        """,
        [_version_row(event) for event in published],
    )
    return [row["id"] for row in rows]
