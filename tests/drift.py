"""A table of available updates with drift of every kind, for the tests of the audit (its code
and its command)."""

import asyncpg

from core.audit import DriftKind
from tests.factories import T0, apply, at, imported, published

USERS = ["u-ada", "u-alan", "u-grace", "u-linus"]
RESOURCES = ["r-fractions", "r-decimals", "r-geometry"]
# The pairs in the table: every user has an update for r-fractions (at version 2), and all but
# u-linus, who imported version 2, for r-decimals (at version 2); r-geometry is at version 1.
CONSISTENT_ROWS = 7


async def seed(pool: asyncpg.Pool) -> None:
    """Every user imported version 1 of every resource in two courses, but u-linus took version 2
    of r-decimals; then r-fractions and r-decimals moved to version 2."""
    await apply(pool, *(published(resource, 1) for resource in RESOURCES))
    pairs = [(user, resource, course) for user in USERS for resource in RESOURCES for course in "ab"]
    await apply(
        pool,
        *(
            imported(user, resource, f"{user}-{resource}-{course}", at(n), 2 if user == "u-linus" else 1)
            if resource == "r-decimals"
            else imported(user, resource, f"{user}-{resource}-{course}", at(n))
            for n, (user, resource, course) in enumerate(pairs)
        ),
    )
    await apply(pool, published("r-fractions", 2, at_time=at(100)), published("r-decimals", 2, at_time=at(101)))


async def table(pool: asyncpg.Pool) -> list[tuple]:
    rows = await pool.fetch(
        "SELECT user_id, resource_id, version_number, published_at, courses::text AS courses "
        "FROM available_updates ORDER BY 1, 2"
    )
    return [tuple(row) for row in rows]


async def corrupt(pool: asyncpg.Pool) -> dict[tuple[str, str], DriftKind]:
    """One row removed; one added for a pair with nothing pending, and one for a pair without any
    import; one row with other courses, and one with another version."""
    await pool.execute("DELETE FROM available_updates WHERE (user_id, resource_id) = ('u-ada', 'r-fractions')")
    await pool.execute(
        """
        INSERT INTO available_updates (user_id, resource_id, version_number, published_at, courses)
        VALUES ('u-alan', 'r-geometry', 1, $1, '[]'), ('u-nobody', 'r-fractions', 2, $1, '[]')
        """,
        T0,
    )
    await pool.execute(
        "UPDATE available_updates SET courses = '[]' WHERE (user_id, resource_id) = ('u-grace', 'r-fractions')"
    )
    await pool.execute(
        "UPDATE available_updates SET version_number = 1 WHERE (user_id, resource_id) = ('u-grace', 'r-decimals')"
    )
    return {
        ("u-ada", "r-fractions"): DriftKind.MISSING,
        ("u-alan", "r-geometry"): DriftKind.EXTRA,
        ("u-nobody", "r-fractions"): DriftKind.EXTRA,
        ("u-grace", "r-fractions"): DriftKind.DIFFERENT,
        ("u-grace", "r-decimals"): DriftKind.DIFFERENT,
    }
