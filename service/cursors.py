"""Opaque keyset cursors: a page's last sort key, signed so that a tampered cursor is refused."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
import hashlib
import hmac
import json

from core.errors import FieldError, InvalidInput

_MAC_BYTES = 16
_B64URL = "[A-Za-z0-9_-]"
# What encode() makes: the payload in unpadded base64url (never 1 character past a multiple of 4),
# a dot, and the 16-byte MAC in unpadded base64url (22 characters). Declared in the OpenAPI document.
CURSOR_PATTERN = rf"^(?:{_B64URL}{{4}})*{_B64URL}{{2,4}}\.{_B64URL}{{22}}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = datetime.resolution


class InvalidCursor(InvalidInput):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _to_wire(value: str | datetime) -> str | int:
    if isinstance(value, datetime):
        return (value - _EPOCH) // _MICROSECOND
    return value


class CursorCodec:
    """Encodes and checks cursors. `kind` names the listing, so one listing's cursor is refused by
    another; `types` are the key's column types, `str` or `datetime`."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.digest(self._key, payload, hashlib.sha256)[:_MAC_BYTES]

    def encode(self, kind: str, *key: str | datetime) -> str:
        payload = json.dumps([kind, *map(_to_wire, key)], separators=(",", ":")).encode()
        return _b64(payload) + "." + _b64(self._mac(payload))

    def decode(self, cursor: str, kind: str, *types: type) -> tuple[str | datetime, ...]:
        try:
            payload_text, mac_text = cursor.split(".")
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except (ValueError, binascii.Error):
            raise _invalid("The cursor is malformed.") from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise _invalid("The cursor was not issued by this service.")
        decoded = json.loads(payload)
        if decoded[0] != kind or len(decoded) != len(types) + 1:
            raise _invalid("The cursor belongs to another listing.")
        return tuple(_from_wire(value, wanted) for value, wanted in zip(decoded[1:], types, strict=True))


def _from_wire(value: object, wanted: type) -> str | datetime:
    if wanted is datetime and isinstance(value, int):
        return _EPOCH + value * _MICROSECOND
    if wanted is str and isinstance(value, str):
        return value
    raise _invalid("The cursor belongs to another listing.")


def _invalid(detail: str) -> InvalidCursor:
    return InvalidCursor(detail, [FieldError(field="cursor", location="query", message=detail)])
