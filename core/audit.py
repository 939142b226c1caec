"""The drift audit (README: "Drift audit"): the available updates recomputed from their definition
(the rule of core.updates over the imports, the resources' latest versions and the ignores) and
compared with the materialized table, pair by pair, in key order, a batch at a time, so that
memory stays bounded whatever the size of the tables.

Each batch is one statement, so it reads one snapshot: the consumer and the ignore endpoint
change the table and what defines it in one transaction, so a difference the audit reports is
never a write seen half done. A repair is the writers' own refresh of the drifted pairs, under
the same resource locks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import asyncpg

from core import updates


class DriftKind(StrEnum):
    MISSING = "missing"  # the definition has an update that the table lacks
    EXTRA = "extra"  # the table has an update that the definition does not
    DIFFERENT = "different"  # both have it, with another version or other pending courses


@dataclass(frozen=True)
class Drift:
    kind: DriftKind
    user_id: str
    resource_id: str
    stored_version: int | None
    stored_courses: str | None  # the pending courses as the table holds them (JSON)
    defined_version: int | None
    defined_courses: str | None  # as the definition gives them (JSON)

    def describe(self) -> str:
        """One line: the pair, then what the table holds and what the definition gives."""
        return (
            f"{self.kind:<9} user={self.user_id} resource={self.resource_id} "
            f"stored={_state(self.stored_version, self.stored_courses)} "
            f"defined={_state(self.defined_version, self.defined_courses)}"
        )


def _state(version: int | None, courses: str | None) -> str:
    return "none" if version is None else f"v{version}:{courses}"


@dataclass
class Summary:
    pairs: int = 0
    drift: Counter[DriftKind] = field(default_factory=Counter)
    repaired: int = 0

    @property
    def found(self) -> int:
        return sum(self.drift.values())


# The next $3 (user, resource) pairs after ($1, $2), in key order, of those that have an import or
# an available update ({scope} narrows them to one user or one resource, as $4), with what the
# table holds and what the definition gives for each: a pair's row when they differ, and the
# batch's last pair (to go on from) whatever it holds. Each source gives its first $3 pairs, so
# the first $3 of their union are the first $3 pairs of all.
_BATCH = f"""
WITH pairs AS (
    SELECT user_id, resource_id FROM (
        (SELECT DISTINCT user_id, resource_id FROM imports
         WHERE (user_id, resource_id) > ($1, $2) {{scope}}
         ORDER BY user_id, resource_id LIMIT $3)
        UNION
        (SELECT user_id, resource_id FROM available_updates
         WHERE (user_id, resource_id) > ($1, $2) {{scope}}
         ORDER BY user_id, resource_id LIMIT $3)
    ) candidates
    ORDER BY user_id, resource_id
    LIMIT $3
),
defined AS (
    SELECT c.* FROM pairs p
    CROSS JOIN LATERAL ({updates.COMPUTE.format(scope="i.user_id = p.user_id AND i.resource_id = p.resource_id")}) c
    WHERE c.courses IS NOT NULL
),
compared AS (
    SELECT p.user_id, p.resource_id,
           CASE WHEN a.user_id IS NULL AND d.user_id IS NOT NULL THEN 'missing'
                WHEN a.user_id IS NOT NULL AND d.user_id IS NULL THEN 'extra'
                WHEN (a.version_number, a.published_at, a.courses::text)
                     IS DISTINCT FROM (d.version_number, d.published_at, d.courses::text) THEN 'different'
           END AS kind,
           a.version_number AS stored_version, a.courses::text AS stored_courses,
           d.version_number AS defined_version, d.courses::text AS defined_courses,
           row_number() OVER (ORDER BY p.user_id DESC, p.resource_id DESC) = 1 AS last
    FROM pairs p
    LEFT JOIN available_updates a ON a.user_id = p.user_id AND a.resource_id = p.resource_id
    LEFT JOIN defined d ON d.user_id = p.user_id AND d.resource_id = p.resource_id
)
SELECT *, (SELECT count(*) FROM pairs) AS pairs FROM compared WHERE kind IS NOT NULL OR last
ORDER BY user_id, resource_id
"""
_ALL, _OF_USER, _OF_RESOURCE = (_BATCH.format(scope=s) for s in ("", "AND user_id = $4", "AND resource_id = $4"))


async def audit(
    pool: asyncpg.Pool,
    *,
    user_id: str | None = None,
    resource_id: str | None = None,
    repair: bool = False,
    batch_size: int = 5000,
    report: Callable[[Drift], None] = lambda drift: None,
) -> Summary:
    """Audit every pair (or those of one user or one resource), calling `report` for each
    difference in key order; with `repair`, bring each batch's drifted pairs in line with the
    definition before going on."""
    if user_id is not None and resource_id is not None:
        raise ValueError("audit one user or one resource, not both")
    if batch_size < 1:
        raise ValueError("a batch holds one pair at least")
    arguments: tuple[str, ...]
    if user_id is not None:
        statement, arguments = _OF_USER, (user_id,)
    elif resource_id is not None:
        statement, arguments = _OF_RESOURCE, (resource_id,)
    else:
        statement, arguments = _ALL, ()
    summary = Summary()
    after = ("", "")  # before every id: an id is never empty
    while True:
        rows = await pool.fetch(statement, *after, batch_size, *arguments)
        if not rows:
            return summary
        drifted = [_drift(row) for row in rows if row["kind"] is not None]
        for drift in drifted:
            report(drift)
            summary.drift[drift.kind] += 1
        if repair and drifted:
            summary.repaired += await _repair(pool, [(d.user_id, d.resource_id) for d in drifted])
        summary.pairs += rows[0]["pairs"]
        if rows[0]["pairs"] < batch_size:
            return summary
        last = next(row for row in rows if row["last"])
        after = (last["user_id"], last["resource_id"])


def _drift(row: asyncpg.Record) -> Drift:
    return Drift(
        kind=DriftKind(row["kind"]),
        user_id=row["user_id"],
        resource_id=row["resource_id"],
        stored_version=row["stored_version"],
        stored_courses=row["stored_courses"],
        defined_version=row["defined_version"],
        defined_courses=row["defined_courses"],
    )


async def _repair(pool: asyncpg.Pool, pairs: list[tuple[str, str]]) -> int:
    """Refresh the pairs as the consumer does, under their resources' locks; the rows changed."""
    async with pool.acquire() as conn, conn.transaction():
        await updates.lock_resources(conn, [resource_id for _, resource_id in pairs])
        return await updates.refresh(conn, pairs=pairs)
