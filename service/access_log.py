"""Access log lines with every session id taken out (they may travel in the query or the path)."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

from service.auth import SESSION_QUERY, STATE_QUERY
from service.observability import REQUEST_ID_HEADER

REDACTED = "REDACTED"
_SECRET_QUERY = (SESSION_QUERY, STATE_QUERY)
# What follows /api/sessions/ is a session id, unless it is exactly "logout".
_SESSION_PATH = re.compile(r"^(/+api/+sessions/+)(?!logout$).+")


def redacted_target(request: web.BaseRequest) -> str:
    """The request's path and query as they may be logged."""
    path = _SESSION_PATH.sub(rf"\g<1>{REDACTED}", request.path)
    query = [(name, REDACTED if name in _SECRET_QUERY else value) for name, value in request.query.items()]
    return str(URL.build(path=path, query=query))


# Probes and scrapes arrive every few seconds; their metrics say all there is to say of them.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.path in _QUIET_PATHS and response.status < 400:
            return
        self.logger.info(
            '%s "%s %s" %s %s %.1fms',
            request.remote,
            request.method,
            redacted_target(request),
            response.status,
            response.body_length,
            time * 1000,
            extra={"request_id": response.headers.get(REQUEST_ID_HEADER)},
        )
