"""Schemathesis against the live app: every operation of /api/openapi.json, called with a teacher's
and an admin's session, with data that fits the document and data that does not. No answer may be a
server error, every answer must be one the document promises (its status, content type, schema and
headers), data that fits the document must not be refused as bad input and data that does not must
be refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
import re
from typing import Any

import asyncpg
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
import pytest
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.cursors import CURSOR_PATTERN
from tests.factories import add_favorite, add_import, add_resource, add_user, at, login

# A fixed number of examples for each operation, role, choice of path and mode, drawn from a fixed
# seed: every run sends the same requests, and the whole test takes seconds.
EXAMPLES = 8
FUZZ = hypothesis_settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # a failure is reported as found, unshrunk
    suppress_health_check=list(HealthCheck),
)
LOGOUT = "/api/sessions/logout"


@dataclass(frozen=True)
class Role:
    name: str
    user_id: str
    claims: dict[str, Any]


ROLES = [Role("teacher", "u1", {}), Role("admin", "a1", {"isAdmin": True})]


def refused_for_what_no_schema_says(response: Any, case: schemathesis.Case) -> bool:
    """A 400 that no document could have foretold: a well-formed cursor this service did not sign,
    or courses the update is not pending for (README: "Lists and cursors", "Endpoints")."""
    if response.status_code != 400:
        return False
    cursor = (case.query or {}).get("cursor")

    def unforeseeable(error: dict[str, str]) -> bool:
        if error["field"] == "cursor":
            return isinstance(cursor, str) and re.fullmatch(CURSOR_PATTERN, cursor) is not None
        return error["field"] == "courseIds" and error["message"].startswith("not pending")

    errors = response.json().get("errors", [])
    return bool(errors) and all(unforeseeable(error) for error in errors)


def fitting_data_is_accepted(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """Schemathesis's positive_data_acceptance, but for the refusals no schema can express."""
    if refused_for_what_no_schema_says(response, case):
        return None
    return positive_data_acceptance(ctx, response, case)


@pytest.fixture
async def world(pool: asyncpg.Pool) -> None:
    """u1 (a teacher) imported r1..r3, each with an available update, and marked two favorites;
    a1 is an admin; u2 and u3 are colleagues to find."""
    for role in ROLES:
        await login(pool, role.user_id, **role.claims)  # the users, as a session writes them
    for n, rid in enumerate(("r1", "r2", "r3")):
        await add_resource(pool, rid)
        await add_import(pool, "u1", rid, f"course-{n}", at(n))
        await add_resource(pool, rid, version=2, published_at=at(10 + n))
    await add_favorite(pool, "u1", "r1", at(1))
    await add_favorite(pool, "u1", "r2", at(2))
    for uid in ("u2", "u3"):
        await add_user(pool, uid)


def first_failure(strategy: Any, call: Callable[[schemathesis.Case], object]) -> BaseException | None:
    """Call each example the strategy draws; the first failure, if any."""

    @FUZZ
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        call(case)

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:
        return exc
    return None


def fuzz(document: dict[str, Any], base_url: str, new_session: Callable[[Role], str]) -> list[str]:
    """Every operation, as each role, with drawn path parameters and with the role's own; returns
    the failures, each after a line saying where."""
    # The session is sent in its header; drawn values of the other sources would only shadow it.
    # An event stream is read up to its first event (it would go on until the session ends).
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}, "max-stream-events": 1})
    schema = schemathesis.openapi.from_dict(document, config=config)
    http = requests.Session()
    failures: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        for role in ROLES:
            session_id = new_session(role)
            own = {"userId": role.user_id, "id": session_id, "resourceId": "r1"}
            own_path = {name: value for name, value in own.items() if f"{{{name}}}" in operation.path}

            def call(case: schemathesis.Case, role: Role = role, session_id: str = session_id) -> object:
                # A logout ends its session: each one gets a new session.
                sid = new_session(role) if case.operation.path == LOGOUT else session_id
                return case.call_and_validate(
                    base_url=base_url,
                    session=http,
                    headers={"X-Session-ID": sid},
                    excluded_checks=[positive_data_acceptance],
                    additional_checks=[fitting_data_is_accepted],
                )

            for path_parameters in ({}, own_path) if own_path else ({},):
                for mode in GenerationMode:
                    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
                    if (failure := first_failure(strategy, call)) is not None:
                        path = path_parameters or "drawn"
                        failures.append(f"{operation.label} as {role.name}, {mode.value} data, path {path}:\n{failure}")
    return failures


async def test_schemathesis_finds_nothing(client, pool, world):
    document = await (await client.get("/api/openapi.json")).json()
    base_url = str(client.make_url("")).rstrip("/")
    loop = asyncio.get_running_loop()

    def new_session(role: Role) -> str:
        return asyncio.run_coroutine_threadsafe(login(pool, role.user_id, **role.claims), loop).result(timeout=10)

    # Schemathesis sends blocking requests: they run in a thread while this loop serves them.
    failures = await asyncio.to_thread(fuzz, document, base_url, new_session)
    assert not failures, "\n\n".join(failures)
