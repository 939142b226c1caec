"""Events read from JSON bytes (the consumer's path: pydantic's compiled validator, the text searched
for NUL on the bytes) are held to the same rules as events built from Python data (a Python
validator per date and a search of every text): the same documents are accepted and refused."""

from __future__ import annotations

import json

from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError
import pytest

from consumers.decoding import decode
from core.events import EVENT_ADAPTER, RESOURCE_TYPES, Envelope, ResourceImported
from tests.factories import at, imported, published
from tests.kafka import document

IMPORT = document(imported("u1", "r1", "c1", at(1)))
PUBLISHED = document(published("r1", 2, at_time=at(5)))

ACCEPTED = {
    "an import": IMPORT,
    "a version": PUBLISHED,
    "a date with an offset": {**IMPORT, "importedAt": "2026-01-01T10:00:00+05:30"},
    "a date with Z": {**IMPORT, "importedAt": "2026-01-01T10:00:00Z"},
    "an escaped backslash before u0000 (text, not NUL)": {**IMPORT, "courseName": "a\\u0000b"},
    "text beyond ASCII": {**IMPORT, "courseName": "Cours de mathématiques 数学 🧮"},
    "an unknown field": {**IMPORT, "somethingNew": {"nested": [1, 2]}},
}
REFUSED = {
    "versionNumber true": {**IMPORT, "versionNumber": True},
    "versionNumber text": {**IMPORT, "versionNumber": "3"},
    "versionNumber float": {**IMPORT, "versionNumber": 3.0},
    "schemaVersion text": {**IMPORT, "schemaVersion": "1"},
    "a date as a number": {**IMPORT, "importedAt": 1767225600},
    "a date as a fraction": {**IMPORT, "importedAt": 1767225600.5},
    "a date without offset": {**IMPORT, "importedAt": "2026-01-01T10:00:00"},
    "a date alone": {**IMPORT, "importedAt": "2026-01-01"},
    "a date beyond the range": {**IMPORT, "importedAt": "0001-01-01T00:00:00+01:00"},
    "a nested date as a number": {**PUBLISHED, "resource": {**PUBLISHED["resource"], "createDate": 0}},
    "NUL in a field": {**IMPORT, "courseName": "a\u0000b"},
    "NUL in an ignored field": {**IMPORT, "ignored": "a\u0000b"},
    "NUL in a key": {**IMPORT, "a\u0000b": 1},
    "NUL in a nested field": {**PUBLISHED, "resource": {**PUBLISHED["resource"], "title": "\u0000"}},
    "a lone surrogate": {**IMPORT, "courseName": "a\ud800b"},
    "a missing field": {k: v for k, v in IMPORT.items() if k != "courseId"},
    "an id with a space": {**IMPORT, "courseId": "c 1"},
}


def python_accepts(data: object) -> bool:
    try:
        EVENT_ADAPTER.validate_python(data)
    except ValidationError:
        return False
    return True


def json_accepts(raw: bytes) -> bool:
    try:
        EVENT_ADAPTER.validate_json(raw)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_alike_from_json_and_from_python(name):
    data = ACCEPTED[name]
    assert python_accepts(data)
    assert json_accepts(json.dumps(data).encode())
    assert json_accepts(json.dumps(data, ensure_ascii=False).encode())
    assert EVENT_ADAPTER.validate_json(json.dumps(data)) == EVENT_ADAPTER.validate_python(data)


@pytest.mark.parametrize("name", REFUSED)
def test_refused_alike_from_json_and_from_python(name):
    data = REFUSED[name]
    assert not python_accepts(data)
    assert not json_accepts(json.dumps(data).encode())


def test_dates_from_json_are_the_same_instants():
    event = EVENT_ADAPTER.validate_json(json.dumps({**IMPORT, "importedAt": "2026-01-01T10:00:00+05:30"}))
    assert isinstance(event, ResourceImported)
    assert event.imported_at == at(0).replace(hour=4, minute=30)


def test_a_model_read_from_json_refuses_nul_too():
    with pytest.raises(ValidationError, match="must be UTF-8 text without NUL"):
        Envelope.model_validate_json(json.dumps({**IMPORT, "other": "\u0000"}))
    with pytest.raises(ValidationError, match="must be UTF-8 text without NUL"):
        ResourceImported.model_validate({**IMPORT, "courseName": "\u0000"})
    with pytest.raises(ValidationError, match=r"Invalid JSON"):
        Envelope.model_validate_json(b'{"courseName": "\\u0000"')  # not JSON: the error says so


def record(value: bytes, key: bytes = b"r1") -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("resource-events", 0, 0, 0, 0, key, value, None, len(key), len(value), ())


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        (json.dumps(IMPORT).encode(), "event"),
        (json.dumps({**IMPORT, "type": "resource.renamed"}).encode(), "unknown"),
        (json.dumps({**IMPORT, "schemaVersion": 2}).encode(), "unsupported schemaVersion 2"),
        (json.dumps(document(imported("u1", "r2", "c1", at(1)))).encode(), "the message key must be 'r2'"),
        (b"{not json", "invalid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({**IMPORT, "courseName": "\u0000"}).encode(), "courseName must be UTF-8 text without NUL"),
        (json.dumps(IMPORT).encode("utf-16"), "invalid JSON"),
    ],
)
def test_decode_says_what_each_record_is(value, outcome):
    decoded = decode(record(value), RESOURCE_TYPES)
    if outcome == "event":
        assert decoded.event is not None and decoded.failure is None
    elif outcome == "unknown":
        assert decoded.unknown_type == "resource.renamed" and decoded.event is None
    else:
        assert decoded.event is None and outcome in (decoded.failure or "")
