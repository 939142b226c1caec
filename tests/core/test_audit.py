"""The drift audit finds each kind of difference between the available updates and their
definition, in any batch size and scope, changes nothing unless told to repair, and repairs each
kind as the consumer would have written it."""

import asyncpg
import pytest

from core import audit
from core.audit import DriftKind
from tests.drift import CONSISTENT_ROWS, RESOURCES, USERS, corrupt, seed, table


async def found(pool: asyncpg.Pool, **options) -> tuple[audit.Summary, dict[tuple[str, str], DriftKind]]:
    reported: list[audit.Drift] = []
    summary = await audit.audit(pool, report=reported.append, **options)
    assert [(d.user_id, d.resource_id) for d in reported] == sorted((d.user_id, d.resource_id) for d in reported)
    return summary, {(d.user_id, d.resource_id): d.kind for d in reported}


async def test_a_consistent_table_has_no_drift(pool):
    await seed(pool)
    assert len(await table(pool)) == CONSISTENT_ROWS
    summary, drift = await found(pool)
    assert drift == {} and summary.found == 0
    assert summary.pairs == len(USERS) * len(RESOURCES)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5000])
async def test_the_audit_reports_each_kind_of_drift_and_changes_nothing(pool, batch_size):
    await seed(pool)
    expected = await corrupt(pool)
    before = await table(pool)
    summary, drift = await found(pool, batch_size=batch_size)
    assert drift == expected
    assert summary.drift == {DriftKind.MISSING: 1, DriftKind.EXTRA: 2, DriftKind.DIFFERENT: 2}
    assert summary.pairs == len(USERS) * len(RESOURCES) + 1  # and u-nobody's, who imported nothing
    assert await table(pool) == before


async def test_a_difference_shows_what_the_table_holds_and_what_the_definition_gives(pool):
    await seed(pool)
    await corrupt(pool)
    reported: list[audit.Drift] = []
    await audit.audit(pool, user_id="u-grace", resource_id=None, report=reported.append)
    wrong_version = next(d for d in reported if d.resource_id == "r-decimals")
    assert (wrong_version.stored_version, wrong_version.defined_version) == (1, 2)
    assert wrong_version.stored_courses == wrong_version.defined_courses
    line = wrong_version.describe()
    assert line.startswith("different user=u-grace resource=r-decimals stored=v1:[") and "defined=v2:[" in line


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (
            {"user_id": "u-grace"},
            {("u-grace", "r-fractions"): DriftKind.DIFFERENT, ("u-grace", "r-decimals"): DriftKind.DIFFERENT},
        ),
        (
            {"resource_id": "r-fractions"},
            {
                ("u-ada", "r-fractions"): DriftKind.MISSING,
                ("u-grace", "r-fractions"): DriftKind.DIFFERENT,
                ("u-nobody", "r-fractions"): DriftKind.EXTRA,
            },
        ),
        ({"resource_id": "r-geometry"}, {("u-alan", "r-geometry"): DriftKind.EXTRA}),
    ],
)
async def test_the_audit_of_one_user_or_one_resource_reads_only_theirs(pool, scope, expected):
    await seed(pool)
    await corrupt(pool)
    summary, drift = await found(pool, batch_size=1, **scope)
    assert drift == expected
    assert summary.pairs == (
        len(RESOURCES) if "user_id" in scope else len(USERS) + (scope["resource_id"] == "r-fractions")
    )


async def test_the_repair_writes_what_the_consumer_would_have_written(pool):
    await seed(pool)
    consistent = await table(pool)
    await corrupt(pool)
    summary, drift = await found(pool, repair=True, batch_size=2)
    assert len(drift) == 5 and summary.repaired == 5
    assert await table(pool) == consistent
    summary, drift = await found(pool)
    assert drift == {} and summary.found == 0


async def test_one_user_and_one_resource_at_once_is_refused(pool):
    with pytest.raises(ValueError, match="one user or one resource"):
        await audit.audit(pool, user_id="u-ada", resource_id="r-fractions")
