"""Parsing JSON from the outside world."""

from __future__ import annotations

import json


def loads(raw: bytes | str) -> object:
    """`json.loads`, reporting nesting too deep for the parser as the ValueError it is."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
