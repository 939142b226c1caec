"""The OpenAPI 3.1 document at /api/openapi.json: a valid document, complete for every route, and
true to what the service really answers."""

from __future__ import annotations

from collections.abc import Iterator
import copy
import json
import re
from typing import Any
from urllib.parse import quote

import asyncpg
from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from openapi_spec_validator import OpenAPIV31SpecValidator
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
import pytest
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from service.auth import SESSION_COOKIE, SESSION_HEADER, SESSION_QUERY, STATE_QUERY
from tests.factories import add_favorite, add_import, add_resource, add_user, at, login, token

OPENAPI_PATH = "/api/openapi.json"
DOCS_PATHS = ("/api/docs", "/api/docs/{asset}")
PROBLEM_REF = "#/components/schemas/Problem"
CAMEL_CASE = re.compile(r"^[a-z][a-zA-Z0-9]*$")

# What each operation must document: its success status, and the errors it can give (400 for a bad
# query/path/body, 401 without a session, 403 for another user's id, a missing role or a cross-site
# cookie logout, 404 for an unknown target, 413 for an oversized body, 429 past the rate limit, 503
# when the database is out of reach). Every operation that needs a session can answer 413: without
# an earlier source, the body of any request is read to find `sessionId`.
SESSION = {401, 413, 429, 503}
STATUSES: dict[tuple[str, str], tuple[int, set[int]]] = {
    ("post", "/api/sessions"): (201, {400, 401, 413, 429, 503}),
    ("get", "/api/sessions/logout"): (204, {403, *SESSION}),
    ("post", "/api/sessions/logout"): (204, {403, *SESSION}),
    ("get", "/api/sessions/{id}"): (200, {403, *SESSION}),
    ("get", "/api/users"): (200, {400, 403, *SESSION}),
    ("get", "/api/users/{userId}/profile"): (200, {400, 404, *SESSION}),
    ("get", "/api/users/{userId}/imports"): (200, {400, 403, *SESSION}),
    ("get", "/api/resources"): (200, {400, *SESSION}),
    ("get", "/api/users/{userId}/updates"): (200, {400, 403, *SESSION}),
    ("get", "/api/users/{userId}/updates/{resourceId}"): (200, {400, 403, 404, *SESSION}),
    ("get", "/api/users/{userId}/update-stream"): (200, {400, 403, *SESSION}),
    ("post", "/api/users/{userId}/updates/{resourceId}/ignore"): (204, {400, 403, 404, *SESSION}),
    ("get", "/api/users/{userId}/favorites"): (200, {400, 403, *SESSION}),
    ("post", "/api/users/{userId}/favorites"): (201, {400, 403, 404, *SESSION}),
    ("delete", "/api/users/{userId}/favorites/{resourceId}"): (204, {400, 403, *SESSION}),
}
MEDIA_TYPES = {"/api/users/{userId}/update-stream": "text/event-stream"}
# What the server checks path ids against: core.text.Identifier, and a session id's own shape.
IDENTIFIER = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[\x21-\x7e]+$"}
SESSION_ID = {"type": "string", "minLength": 43, "maxLength": 43, "pattern": "^[A-Za-z0-9_-]{43}$"}
PATH_SCHEMAS = {"userId": IDENTIFIER, "resourceId": IDENTIFIER, "id": SESSION_ID}
PAGE = {"cursor": False, "size": False}
QUERY_PARAMETERS: dict[tuple[str, str], dict[str, bool]] = {  # name -> required
    ("get", "/api/users"): {**PAGE, "q": True},
    ("get", "/api/users/{userId}/imports"): PAGE,
    ("get", "/api/resources"): {**PAGE, "onlyImported": True},
    ("get", "/api/users/{userId}/updates"): PAGE,
    ("get", "/api/users/{userId}/favorites"): PAGE,
}
REQUEST_BODIES = {  # schema, whether the body is required, its required properties, its properties
    ("post", "/api/sessions"): ("SessionRequest", True, {"jwt_token"}, {"jwt_token"}),
    ("post", "/api/users/{userId}/favorites"): ("FavoriteRequest", True, {"resourceId"}, {"resourceId"}),
    ("post", "/api/users/{userId}/updates/{resourceId}/ignore"): ("IgnoreRequest", False, set(), {"courseIds"}),
}
# The shapes README.md documents, property for property.
SHAPES = {
    "Resource": {
        "id",
        "title",
        "description",
        "type",
        "account",
        "authors",
        "tags",
        "thumbnail",
        "createDate",
        "updateDate",
        "versionId",
    },
    "Update": {"versionId", "versionNotes", "createDate", "updateDate", "courses", "resource"},
    "UpdateCourse": {"courseId", "courseName", "importDate", "versionCreateDate"},
    "Author": {"id", "name", "avatarUrl"},
    "Thumbnail": {"url", "description"},
    "UserSummary": {"id", "name", "email", "avatarUrl", "accountId"},
    "SessionInfo": {
        "sid",
        "expires",
        "userId",
        "userFullName",
        "accountId",
        "accountName",
        "canvasUserId",
        "canvasApiDomain",
        "roles",
        "isAdmin",
    },
    "PageMeta": {"cursor"},
    "Problem": {"type", "title", "status", "detail", "errors"},
    "FieldError": {"field", "location", "message"},
}


@pytest.fixture
async def document(client) -> dict[str, Any]:
    response = await client.get(OPENAPI_PATH)
    assert response.status == 200
    assert response.content_type == "application/json"
    return await response.json()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "delete", "patch", "head", "options", "trace"}:
                yield method, path, operation


def resolve(document: dict[str, Any], ref: str) -> Any:
    """The target of a local `$ref` (a JSON pointer into the document)."""
    assert ref.startswith("#/"), f"not a local reference: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve (at {part!r})"
        node = node[part]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def schemas_reachable(document: dict[str, Any], node: Any, seen: set[str] | None = None) -> set[str]:
    """The names of the component schemas `node` refers to, directly or through other schemas."""
    seen = set() if seen is None else seen
    for ref in refs(node):
        name = ref.rsplit("/", 1)[-1]
        if ref.startswith("#/components/schemas/") and name not in seen:
            seen.add(name)
            schemas_reachable(document, resolve(document, ref), seen)
    return seen


# --- validity ------------------------------------------------------------------------------------


async def test_is_a_valid_openapi_31_document(document):
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] and document["info"]["version"]
    OpenAPIV31SpecValidator(document).validate()


@pytest.mark.parametrize("breakage", ["response without description", "parameter in nowhere", "dangling $ref"])
async def test_the_validator_refuses_a_broken_document(document, breakage):
    """The validator is not a rubber stamp: a broken copy of the document fails it."""
    broken = copy.deepcopy(document)
    operation = broken["paths"]["/api/resources"]["get"]
    if breakage == "response without description":
        del operation["responses"]["200"]["description"]
    elif breakage == "parameter in nowhere":
        operation["parameters"][0]["in"] = "nowhere"
    else:
        operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] += "Gone"
    with pytest.raises((OpenAPIValidationError, Unresolvable)):
        OpenAPIV31SpecValidator(broken).validate()


async def test_every_ref_resolves(document):
    found = list(refs(document))
    assert len(found) >= 10
    for ref in found:
        resolve(document, ref)


# --- completeness -----------------------------------------------------------------------------


async def test_every_route_is_documented_and_nothing_else(client, document):
    # The document covers the API under /api, but for itself and its reader (the page at /api/docs
    # and its files, tests/api/test_docs_in_a_browser.py); /healthz, /readyz and /metrics are for operators.
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in client.server.app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        and route.resource.canonical not in {OPENAPI_PATH, *DOCS_PATHS}
        and route.resource.canonical.startswith("/api/")
    }
    documented = {(method, path) for method, path, _ in operations(document)}
    assert routes == documented
    assert routes == set(STATUSES)  # the tables below cover every route


@pytest.mark.parametrize(("method", "path"), STATUSES)
async def test_path_parameters(document, method, path):
    parameters = document["paths"][path][method]["parameters"]
    in_path = {p["name"]: p for p in parameters if p["in"] == "path"}
    assert set(in_path) == set(re.findall(r"{(\w+)}", path))
    for name, parameter in in_path.items():
        assert parameter["required"] is True
        assert parameter["schema"] == PATH_SCHEMAS[name]


@pytest.mark.parametrize(("method", "path"), STATUSES)
async def test_query_parameters(document, method, path):
    parameters = document["paths"][path][method]["parameters"]
    documented = {p["name"]: p for p in parameters if p["in"] == "query"}
    expected = QUERY_PARAMETERS.get((method, path), {})
    for name, required in expected.items():
        assert name in documented, f"{method} {path} lacks ?{name}"
        assert documented[name]["required"] is required, name
    if "size" in expected:
        size = documented["size"]["schema"]
        assert (size["type"], size["minimum"], size["maximum"], size["default"]) == ("integer", 1, 100, 24)
    if "onlyImported" in expected:
        assert documented["onlyImported"]["schema"]["type"] == "boolean"
    # Nothing the handler does not read (the session sources aside).
    assert set(documented) - {"session-id", "state"} == set(expected)


@pytest.mark.parametrize(("method", "path"), STATUSES)
async def test_request_bodies(document, method, path):
    operation = document["paths"][path][method]
    if (method, path) not in REQUEST_BODIES:
        assert "requestBody" not in operation
        return
    name, body_required, required, properties = REQUEST_BODIES[(method, path)]
    body = operation["requestBody"]
    assert body["required"] is body_required
    schema_ref = body["content"]["application/json"]["schema"]["$ref"]
    assert schema_ref == f"#/components/schemas/{name}"
    schema = resolve(document, schema_ref)
    assert set(schema.get("required", [])) == required
    assert properties <= set(schema["properties"])
    assert schema.get("additionalProperties") is False  # unknown fields are refused, and documented so


@pytest.mark.parametrize(("method", "path"), STATUSES)
async def test_status_codes(document, method, path):
    responses = document["paths"][path][method]["responses"]
    success, errors = STATUSES[(method, path)]
    assert str(success) in responses
    if success == 204:
        assert "content" not in responses["204"]
    else:
        assert set(responses[str(success)]["content"]) == {MEDIA_TYPES.get(path, "application/json")}
    for status in errors:
        assert str(status) in responses, f"{method} {path} does not document {status}"
        content = responses[str(status)]["content"]
        assert content == {"application/problem+json": {"schema": {"$ref": PROBLEM_REF}}}
    for status, response in responses.items():
        assert response["description"]
        if status.startswith(("4", "5")):
            assert set(response["content"]) == {"application/problem+json"}


async def test_only_imports_is_deprecated(document):
    deprecated = {(method, path) for method, path, op in operations(document) if op.get("deprecated")}
    assert deprecated == {("get", "/api/users/{userId}/imports")}
    headers = document["paths"]["/api/users/{userId}/imports"]["get"]["responses"]["200"]["headers"]
    assert {"Deprecation", "Link"} <= set(headers)


# --- the limits the server enforces are declared -------------------------------------------------


def parameter_schema(document: dict[str, Any], method: str, path: str, name: str) -> dict[str, Any]:
    [parameter] = [p for p in document["paths"][path][method]["parameters"] if p["name"] == name]
    return parameter["schema"]


def body_property(document: dict[str, Any], model: str, name: str) -> dict[str, Any]:
    return document["components"]["schemas"][model]["properties"][name]


def fits(schema: dict[str, Any], value: Any) -> bool:
    return Draft202012Validator(schema, format_checker=FormatChecker()).is_valid(value)


@pytest.fixture
async def teacher(pool: asyncpg.Pool) -> dict[str, str]:
    return {"X-Session-ID": await login(pool, "u1")}


async def test_a_real_session_id_fits_its_declared_shape(document, teacher):
    schema = parameter_schema(document, "get", "/api/sessions/{id}", "id")
    assert fits(schema, teacher["X-Session-ID"])
    assert not fits(schema, "logout")  # so the document never sends GET /api/sessions/{id} to the logout


@pytest.mark.parametrize(
    ("path", "name", "url"),
    [
        ("/api/users/{userId}/profile", "userId", "/api/users/{bad}/profile"),
        ("/api/users/{userId}/updates/{resourceId}", "resourceId", "/api/users/u1/updates/{bad}"),
        ("/api/users/{userId}/favorites/{resourceId}", "resourceId", "/api/users/u1/favorites/{bad}"),
    ],
)
@pytest.mark.parametrize("bad", ["é", "a b", "a" * 201])
async def test_path_ids_outside_their_declared_shape_are_400(client, document, teacher, path, name, url, bad):
    method = "delete" if "favorites" in path else "get"
    assert not fits(parameter_schema(document, method, path, name), bad)
    assert fits(parameter_schema(document, method, path, name), "r-1.a_b~c")
    response = await client.request(method, url.format(bad=quote(bad, safe="")), headers=teacher)
    assert response.status == 400
    assert [e["field"] for e in (await response.json())["errors"]] == [name]


async def test_the_cursor_declares_its_shape(client, document, pool):
    """`cursor=0` used to fit the document and be refused: now it does not fit."""
    headers = {"X-Session-ID": await login(pool, "u1", isAdmin=True)}
    for uid in ("u2", "u3"):
        await add_user(pool, uid)
    first = await (await client.get("/api/users", params={"q": "user", "size": "1"}, headers=headers)).json()
    schema = parameter_schema(document, "get", "/api/users", "cursor")
    assert fits(schema, first["meta"]["cursor"])
    for malformed in ("0", "abc", "a.b", "....", "AAAAA." + "A" * 22, "AA." + "A" * 21):
        assert not fits(schema, malformed), malformed
        response = await client.get("/api/users", params={"q": "user", "cursor": malformed}, headers=headers)
        assert response.status == 400


def largest_json(document: dict[str, Any], schema: dict[str, Any]) -> int:
    """The most bytes a compact JSON value that fits `schema` can take: 12 a character at worst (an
    escaped surrogate pair), 2 for an Identifier's (an escaped quote or backslash)."""
    if "$ref" in schema:
        return largest_json(document, resolve(document, schema["$ref"]))
    if "anyOf" in schema:
        return max(largest_json(document, variant) for variant in schema["anyOf"])
    kind = schema.get("type")
    if kind == "null":
        return len("null")
    if kind == "string":
        assert "maxLength" in schema, f"an unbounded string: {schema}"
        return 2 + schema["maxLength"] * (2 if schema.get("pattern") == IDENTIFIER["pattern"] else 12)
    if kind == "array":
        assert "maxItems" in schema, f"an unbounded array: {schema}"
        return 2 + schema["maxItems"] * (largest_json(document, schema["items"]) + 1)
    if kind == "object":
        assert schema.get("additionalProperties") is False, f"an open object: {schema}"
        properties = schema["properties"].items()
        return 2 + sum(len(json.dumps(name)) + 2 + largest_json(document, value) for name, value in properties)
    raise AssertionError(f"no bound for {schema}")


@pytest.mark.parametrize("model", sorted({name for name, _, _, _ in REQUEST_BODIES.values()}))
async def test_every_body_the_document_allows_fits_the_body_limit(document, settings, model):
    """So that a body is refused for what the document says (400), not for its size (413)."""
    assert largest_json(document, {"$ref": f"#/components/schemas/{model}"}) <= settings.max_body_bytes


async def test_a_token_past_its_declared_length_is_400_not_413(client, document, settings):
    """A body of the default size holds the longest token, even spelled 12 bytes a character."""
    schema = body_property(document, "SessionRequest", "jwt_token")
    longest = schema["maxLength"]
    assert len(json.dumps({"jwt_token": "\U0001f600" * (longest + 1)})) <= settings.max_body_bytes
    too_long = await client.post("/api/sessions", json={"jwt_token": "\U0001f600" * (longest + 1)})
    assert too_long.status == 400
    assert [e["field"] for e in (await too_long.json())["errors"]] == ["jwt_token"]
    longest_token = await client.post("/api/sessions", json={"jwt_token": "\U0001f600" * longest})
    assert longest_token.status == 401  # not a token, but not too long nor too large


@pytest.mark.parametrize(
    ("where", "locate"),
    [
        ("q", lambda doc: parameter_schema(doc, "get", "/api/users", "q")),
        ("jwt_token", lambda doc: body_property(doc, "SessionRequest", "jwt_token")),
        ("sessionId", lambda doc: resolve(doc, "#/components/schemas/FavoriteRequest")["properties"]["sessionId"]),
    ],
)
async def test_nul_is_declared_where_text_refuses_it(document, where, locate):
    schema = locate(document)
    schema = next((v for v in schema.get("anyOf", []) if v.get("type") == "string"), schema)
    assert fits(schema, "plain text, é")
    assert not fits(schema, "a\x00b")


async def test_nul_in_q_is_400(client, pool):
    headers = {"X-Session-ID": await login(pool, "u1", isAdmin=True)}
    response = await client.get("/api/users", params={"q": "use\x00r"}, headers=headers)
    assert response.status == 400
    assert [e["field"] for e in (await response.json())["errors"]] == ["q"]


async def test_only_imported_declares_that_it_must_be_true(document):
    schema = parameter_schema(document, "get", "/api/resources", "onlyImported")
    assert fits(schema, True)
    assert not fits(schema, False)


async def test_a_body_on_any_session_route_can_be_413(client, document, settings):
    """Without an earlier session source, the body of a GET too is read to find `sessionId`."""
    for method, path, operation in operations(document):
        if operation.get("security") or "requestBody" in operation:
            assert "413" in operation["responses"], f"{method} {path}"
    oversized = b'{"sessionId": "' + b"x" * settings.max_body_bytes + b'"}'
    response = await client.get("/api/users/u1/favorites", data=oversized, headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert response.content_type == "application/problem+json"


async def test_every_session_source_a_scheme_can_name_is_one(document):
    schemes = document["components"]["securitySchemes"]
    named = {(scheme["in"], scheme["name"]) for scheme in schemes.values()}
    assert named == {
        ("cookie", SESSION_COOKIE),
        ("header", SESSION_HEADER),
        ("query", SESSION_QUERY),
        ("query", STATE_QUERY),
    }
    assert all(scheme["type"] == "apiKey" for scheme in schemes.values())
    for method, path, operation in operations(document):
        if method == "post" and path == "/api/sessions":
            assert "security" not in operation
        else:  # any one of the sources will do
            assert sorted(name for [name] in map(list, operation["security"])) == sorted(schemes), path


async def test_rate_limited_operations_declare_429_and_the_rate_limit_fields(client, document, teacher):
    for method, path, operation in operations(document):
        responses = operation["responses"]
        for status in ("429", "503"):
            retry_after = responses[status]["headers"]["Retry-After"]
            assert retry_after["required"] is True, f"{method} {path} {status}"
        for status, response in responses.items():
            if status != "401":  # a request refused 401 is not counted
                assert {"RateLimit", "RateLimit-Policy"} <= set(response["headers"]), f"{method} {path} {status}"
    response = await client.get("/api/users/u1/favorites", headers=teacher)
    assert response.status == 200
    assert {"RateLimit", "RateLimit-Policy"} <= set(response.headers)


# --- shapes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "properties"), SHAPES.items(), ids=SHAPES.keys())
async def test_contract_shapes(document, name, properties):
    assert set(document["components"]["schemas"][name]["properties"]) == properties


async def test_response_schemas_use_camel_case(document):
    responses = [op["responses"] for _, _, op in operations(document)]
    names = schemas_reachable(document, responses)
    assert {"Resource", "ResourcePage", "UserSummary", "CreatedSession", "Problem"} <= names
    for name in names:
        for prop in document["components"]["schemas"][name].get("properties", {}):
            assert CAMEL_CASE.match(prop), f"{name}.{prop} is not camelCase"


# --- real responses against their documented schemas -------------------------------------------


@pytest.fixture
async def world(pool: asyncpg.Pool) -> dict[str, str]:
    session = await login(pool, "u1", isAdmin=True)
    await add_user(pool, "u2")
    for n, rid in enumerate(("r1", "r2")):
        await add_resource(pool, rid)
        await add_import(pool, "u1", rid, f"course-{n}", at(n))
    await add_resource(pool, "r1", version=2, published_at=at(10))  # an available update
    await add_favorite(pool, "u1", "r1", at(1))
    return {"X-Session-ID": session}


# (documented method, documented path, status, concrete path, request options); "{sid}" is the session id.
REAL_RESPONSES = [
    ("get", "/api/users/{userId}/favorites", 200, "/api/users/u1/favorites", {}),
    ("post", "/api/users/{userId}/favorites", 201, "/api/users/u1/favorites", {"json": {"resourceId": "r2"}}),
    ("get", "/api/users/{userId}/imports", 200, "/api/users/u1/imports", {}),
    ("get", "/api/resources", 200, "/api/resources", {"params": {"onlyImported": "true"}}),
    ("get", "/api/users/{userId}/updates", 200, "/api/users/u1/updates", {}),
    ("get", "/api/users/{userId}/updates/{resourceId}", 200, "/api/users/u1/updates/r1", {}),
    ("get", "/api/users/{userId}/updates/{resourceId}", 404, "/api/users/u1/updates/r2", {}),
    (
        "post",
        "/api/users/{userId}/updates/{resourceId}/ignore",
        400,
        "/api/users/u1/updates/r1/ignore",
        {"json": {"courseIds": ["course-9"]}},
    ),
    ("get", "/api/users", 200, "/api/users", {"params": {"q": "user"}}),
    ("get", "/api/users/{userId}/profile", 200, "/api/users/u2/profile", {}),
    ("get", "/api/sessions/{id}", 200, "/api/sessions/{sid}", {}),
    ("post", "/api/sessions", 201, "/api/sessions", {"json": {"jwt_token": token("u3")}}),
    ("get", "/api/resources", 400, "/api/resources", {}),
    ("post", "/api/users/{userId}/favorites", 400, "/api/users/u1/favorites", {"json": {"resourceId": 1}}),
    ("post", "/api/sessions", 401, "/api/sessions", {"json": {"jwt_token": "not-a-jwt"}}),
    ("get", "/api/users/{userId}/favorites", 403, "/api/users/u2/favorites", {}),
    ("post", "/api/users/{userId}/favorites", 404, "/api/users/u1/favorites", {"json": {"resourceId": "nope"}}),
]


def snake_case(name: str) -> str:
    return re.sub(r"[A-Z]", lambda match: "_" + match[0].lower(), name)


def documented_validator(
    document: dict[str, Any], method: str, path: str, status: int, media_type: str
) -> Draft202012Validator:
    schema = document["paths"][path][method]["responses"][str(status)]["content"][media_type]["schema"]
    registry = Registry().with_resource("urn:openapi", DRAFT202012.create_resource(document))
    rooted = {key: (f"urn:openapi{value}" if key == "$ref" else value) for key, value in schema.items()}
    return Draft202012Validator(rooted, registry=registry, format_checker=FormatChecker())


@pytest.mark.parametrize(
    ("method", "path", "status", "url", "options"),
    REAL_RESPONSES,
    ids=[f"{m} {p} {s}" for m, p, s, _, _ in REAL_RESPONSES],
)
async def test_real_response_matches_its_schema(client, document, world, method, path, status, url, options):
    response = await client.request(method, url.replace("{sid}", world["X-Session-ID"]), headers=world, **options)
    assert response.status == status, await response.text()
    media_type = response.content_type
    assert media_type == ("application/json" if status < 400 else "application/problem+json")
    body = await response.json()
    validator = documented_validator(document, method, path, status, media_type)
    validator.validate(body)
    # The check has teeth: without its first member, or with snake_case names, the body is refused.
    with pytest.raises(ValidationError):
        validator.validate(dict(list(body.items())[1:]))
    target = body["items"][0] if body.get("items") else body
    if any(snake_case(name) != name for name in target):
        renamed = {snake_case(name): value for name, value in target.items()}
        with pytest.raises(ValidationError):
            validator.validate({**body, "items": [renamed]} if target is not body else renamed)


async def test_deleted_favorite_is_an_empty_204(client, document, world):
    response = await client.delete("/api/users/u1/favorites/r1", headers=world)
    assert response.status == 204
    assert await response.read() == b""
    assert (
        "content" not in document["paths"]["/api/users/{userId}/favorites/{resourceId}"]["delete"]["responses"]["204"]
    )
