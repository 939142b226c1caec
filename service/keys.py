"""Typed keys for what the app and each request carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from service.cursors import CursorCodec
from service.settings import Settings

if TYPE_CHECKING:
    from service.auth import Session

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
CURSORS = web.AppKey("cursors", CursorCodec)
SESSION: web.RequestKey[Session] = web.RequestKey("session", object)  # type: ignore[arg-type]
