"""No lost update: ignores (API) racing fan-outs and imports (consumer) for the same resource."""

import asyncio
import random

from core import ingest, updates
from tests.factories import apply, at, imported, login, published

USERS = [f"u{n}" for n in range(12)]

# The rule (README: "Updates and ignores") computed afresh from the base tables, independently of
# the materialized table.
DEFINITION = """
    SELECT DISTINCT i.user_id, i.resource_id, r.version_number
    FROM imports i JOIN resources r ON r.id = i.resource_id
    WHERE i.version_number < r.version_number AND coalesce(i.ignored_version_number, 0) < r.version_number
"""


async def test_ignores_racing_fan_outs_and_imports_lose_nothing(client, pool):
    sessions = {user: {"X-Session-ID": await login(pool, user)} for user in USERS}
    await apply(
        pool,
        published("r1", 1, at_time=at(0)),
        *(imported(user, "r1", course, at(1)) for user in USERS for course in ("c1", "c2", "c3")),
        published("r1", 2, at_time=at(2)),
    )
    rng = random.Random(7)
    statuses = []

    async def ignoring(user):
        for _ in range(6):
            body = {"courseIds": [rng.choice(["c1", "c2", "c3"])]} if rng.random() < 0.7 else None
            response = await client.post(f"/api/users/{user}/updates/r1/ignore", json=body, headers=sessions[user])
            statuses.append(response.status)
            await asyncio.sleep(0)

    async def publishing():
        for version in range(3, 9):
            await apply(pool, published("r1", version, at_time=at(version)))
            await asyncio.sleep(0)

    async def importing():
        for n in range(30):
            user, course = rng.choice(USERS), rng.choice(["c1", "c2", "c3", "c4"])
            await apply(pool, imported(user, "r1", course, at(10 + n), version=rng.randint(1, 8)))

    await asyncio.gather(publishing(), importing(), *(ignoring(user) for user in USERS))

    assert set(statuses) <= {204, 400, 404} and statuses.count(204) > 10
    assert await definition_holds(pool)
    # Every ignore that succeeded is recorded (fan-outs never touch it).
    assert await pool.fetchval("SELECT count(*) FROM imports WHERE ignored_version_number IS NOT NULL") > 0


async def definition_holds(pool):
    materialized = await pool.fetch("SELECT user_id, resource_id, version_number FROM available_updates")
    return {tuple(r) for r in materialized} == {tuple(r) for r in await pool.fetch(DEFINITION)}


async def test_an_ignore_waits_for_a_fan_out_in_progress_and_applies_to_its_version(client, pool):
    headers = {"X-Session-ID": await login(pool, "u1")}
    await apply(pool, published("r1", 1), imported("u1", "r1", "c1", at(1)), published("r1", 2, at_time=at(2)))
    async with pool.acquire() as conn:
        fan_out = conn.transaction()
        await fan_out.start()
        await ingest.apply_events(conn, [published("r1", 3, at_time=at(3))])
        ignoring = asyncio.create_task(client.post("/api/users/u1/updates/r1/ignore", headers=headers))
        await asyncio.sleep(0.3)
        assert not ignoring.done()  # held by the fan-out's lock on the resource
        await fan_out.commit()
    assert (await ignoring).status == 204
    assert await pool.fetchval("SELECT ignored_version_number FROM imports") == 3  # the version it saw
    assert await definition_holds(pool)


async def test_a_fan_out_waits_for_an_ignore_in_progress(pool):
    await apply(pool, published("r1", 1), imported("u1", "r1", "c1", at(1)), published("r1", 2, at_time=at(2)))
    async with pool.acquire() as conn:
        ignore = conn.transaction()
        await ignore.start()
        await updates.lock_resources(conn, ["r1"])  # what ignore_update takes first
        fan_out = asyncio.create_task(apply(pool, published("r1", 3, at_time=at(3))))
        await asyncio.sleep(0.3)
        assert not fan_out.done()
        await ignore.commit()
    await fan_out
    assert await definition_holds(pool)
