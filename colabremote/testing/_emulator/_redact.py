"""Keeping secrets out of what the emulator records and logs.

The request log (:class:`~._model.RequestRecord`) gets headers and query parameters with every
secret replaced by ``<redacted>``. Every handler of the emulator, the runtime proxies' included,
mixes in :class:`RedactedLogs`, so that tornado's access log and its uncaught-exception log name
a request by method, path and peer only: the full URI may carry a token or an authorization code,
and tornado's own exception log also writes ``repr(request)`` and its argument-decoding errors
write the argument's value.
"""

from __future__ import annotations

import logging
from typing import Any

import tornado.web

# The secret-bearing names redacted from the request log.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "x-goog-colab-token",
        "x-colab-runtime-proxy-token",
        "cookie",
        "set-cookie",
    }
)
SECRET_PARAMS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "colab-runtime-proxy-token",
        "code",
        "code_verifier",
        "client_secret",
        "id_token",
    }
)
REDACTED = "<redacted>"

LOG = logging.getLogger("colabremote.emulator")


def redact_headers(headers: Any) -> dict[str, str]:
    """A tornado ``HTTPHeaders`` as a dict, secret values replaced."""
    out: dict[str, str] = {}
    for name, value in headers.get_all():
        out[name] = REDACTED if name.lower() in SECRET_HEADERS else value
    return out


def redact_query(arguments: dict[str, list[bytes]]) -> dict[str, list[str]]:
    """A request's query arguments, decoded, secret values replaced."""
    return {
        name: [REDACTED if name in SECRET_PARAMS else v.decode(errors="replace") for v in values]
        for name, values in arguments.items()
    }


def log_uncaught(summary: str, error: BaseException | None) -> None:
    """Log a handler's uncaught exception by its summary only (never the query or headers)."""
    LOG.error("uncaught exception in %s: %r", summary, error, exc_info=error)


class RedactedLogs:
    """For tornado handlers (HTTP and WebSocket): what tornado logs about a request names it by
    method, path and peer, never by the query string or headers.

    ``_request_summary`` feeds tornado's access log. ``log_exception`` replaces tornado's, which
    writes ``repr(request)`` (the URI with its query) for an uncaught exception, and for an
    ``HTTPError`` its message, which may quote a secret argument (``Invalid unicode in token:
    b'...'``); the status alone reaches the access log.
    """

    def _request_summary(self) -> str:
        request: Any = getattr(self, "request", None)
        method = getattr(request, "method", "?")
        return f"{method} {getattr(request, 'path', '?')} ({getattr(request, 'remote_ip', '?')})"

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        if not isinstance(value, tornado.web.HTTPError):
            log_uncaught(self._request_summary(), value)
