"""Keeping secrets out of what the emulator records and logs.

The request log (:class:`~._model.RequestRecord`) gets headers and query parameters with every
secret replaced by ``<redacted>``; tornado's handlers log an uncaught exception by the request's
method and path only, since the full URI may carry a token or an authorization code.
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
    """For tornado handlers: log an uncaught exception by the request's summary only.

    tornado's own ``log_exception`` also logs ``repr(request)``, whose URI may carry tokens.
    """

    def _request_summary(self) -> str:
        request: Any = getattr(self, "request", None)
        return f"{getattr(request, 'method', '?')} {getattr(request, 'path', '?')}"

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        if not isinstance(value, tornado.web.HTTPError):
            log_uncaught(self._request_summary(), value)
