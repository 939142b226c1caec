"""Log lines of the HTTP server with every session id taken out: the access log, redacted by value
(every id the request presents, wherever it shows in the line, and anything shaped like an id this
service issues), and the server's own parse errors, kept from echoing request bytes."""

from __future__ import annotations

import logging
import re
from urllib.parse import quote

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from service.auth import SESSION_COOKIE, SESSION_HEADER, SESSION_QUERY, STATE_QUERY, presented_in_body
from service.observability import REQUEST_ID_HEADER
from service.proxies import client

REDACTED = "REDACTED"
_SECRET_QUERY = (SESSION_QUERY, STATE_QUERY)
# A session id this service issues: 43 characters of the base64url alphabet (core/sessions.py).
_ISSUED_ID = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
# Shorter values are no session id of ours, and replacing them would garble the line.
_SHORTEST_CANDIDATE = 8


def presented_ids(request: web.BaseRequest) -> set[str]:
    """Every value the request offers as a session id, from any of the five sources."""
    values = [
        request.cookies.get(SESSION_COOKIE),
        request.headers.get(SESSION_HEADER),
        *request.query.getall(SESSION_QUERY, []),
        *request.query.getall(STATE_QUERY, []),
        presented_in_body(request),
    ]
    return {value for value in values if value and len(value) >= _SHORTEST_CANDIDATE}


def redact(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            text = text.replace(form, REDACTED)
    return _ISSUED_ID.sub(REDACTED, text)


def redacted_target(request: web.BaseRequest) -> str:
    """The request's path and query as they may be logged."""
    query = [(name, REDACTED if name in _SECRET_QUERY else value) for name, value in request.query.items()]
    try:
        target = str(URL.build(path=request.path, query=query))
    except ValueError:  # a target yarl cannot rebuild: log its path alone
        target = request.path
    return redact(target, presented_ids(request))


# Probes and scrapes arrive every few seconds; their metrics say all there is to say of them.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.path in _QUIET_PATHS and response.status < 400:
            return
        self.logger.info(
            '%s "%s %s" %s %s %.1fms',
            client(request).address,
            request.method,
            redacted_target(request),
            response.status,
            response.body_length,
            time * 1000,
            extra={"request_id": response.headers.get(REQUEST_ID_HEADER)},
        )


class _ParseErrorsWithoutRequestBytes(logging.Filter):
    """aiohttp logs a request it cannot parse with the error, whose text quotes up to 100 bytes of
    it: a Cookie header or a query that may hold a session id. Log the kind of error alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg = f"{record.msg}: {type(error).__name__} ({error.code}); the request is not quoted"
            record.exc_info, record.exc_text = None, None
        return True


def keep_request_bytes_out_of_server_errors() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(existing, _ParseErrorsWithoutRequestBytes) for existing in server_log.filters):
        server_log.addFilter(_ParseErrorsWithoutRequestBytes())
