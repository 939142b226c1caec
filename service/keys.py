"""Typed keys for what the app and each request carry."""

from __future__ import annotations

from aiohttp import web
import asyncpg

from core.replicas import Databases
from core.sessions import Session
from core.settings import Settings
from service.cursors import CursorCodec

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)  # the primary's
DATABASES = web.AppKey("databases", Databases)  # the primary and its read replicas
CURSORS = web.AppKey("cursors", CursorCodec)
SESSION = web.RequestKey("session", Session)
