"""The one HTTP seam: bearer tokens on requests, and httpx's failures as colabremote errors.

Every HTTP client in the SDK (the Colab control plane and v1beta API, Google's OAuth endpoints,
the Jupyter REST API) goes through here, so a 401 is handled in one place, every translated
error keeps httpx's exception as its ``__cause__``, and no message carries a token: texts that
come from a server or from httpx are passed through :func:`scrub`, URLs are shown without their
query string.
"""

from __future__ import annotations

import html
import json
import re
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Protocol

import httpx

from .exceptions import ColabRemoteError, ConfigurationError

__all__ = [
    "BearerAuth",
    "ErrorFactory",
    "TokenSource",
    "clean_token",
    "display_url",
    "mapped_errors",
    "refusal",
    "scrub",
    "server_reason",
]

ErrorFactory = Callable[[str, int | None], ColabRemoteError]
"""Builds the colabremote error for a message and an HTTP status (``None``: no answer came)."""

# Query parameters and header values that carry secrets, wherever they show up in a text.
_SECRET_PARAMS = re.compile(
    r"\b((?:access_|refresh_|id_)?token|code|code_verifier|client_secret|key)=[^&\s#\"'<>]+",
    re.IGNORECASE,
)
_SECRET_HEADERS = re.compile(r"\b(Bearer|Authorization:\s*\w+)\s+[^\s\"'<>,;]+", re.IGNORECASE)


_NOT_IN_TOKENS = re.compile(r"[\s\x00-\x1f\x7f]")


def clean_token(token: str, *, what: str = "the access token") -> str:
    """``token`` without surrounding white space (a newline from a file or a shell).

    White space or control characters inside it are refused with a ConfigurationError naming
    ``what``, never the token: sent on, they would break the header, and the HTTP library's
    error would quote it.
    """
    cleaned = token.strip()
    if _NOT_IN_TOKENS.search(cleaned):
        raise ConfigurationError(
            f"{what} contains white space or control characters; check how it was copied"
        )
    return cleaned


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with each of ``secrets`` blotted out, and any ``token=``-like query value or
    ``Bearer`` value too (for texts a server or httpx wrote, which may echo what we sent)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _SECRET_PARAMS.sub(r"\1=***", text)
    return _SECRET_HEADERS.sub(r"\1 ***", text)


def display_url(url: httpx.URL | str) -> str:
    """``url`` fit for a message: no query string, fragment or user info."""
    parsed = httpx.URL(url) if isinstance(url, str) else url
    return str(parsed.copy_with(query=None, fragment=None, userinfo=b""))


def refusal(response: httpx.Response, doing: str, *, detail: str = "") -> str:
    """The message for an error status: what was being done, the method, the URL without its
    query, the status; ``detail`` (already scrubbed) after a colon. A known status is shown
    with its standard phrase: a server's own words there belong in ``detail``
    (:func:`server_reason`), where they are scrubbed."""
    request = response.request
    status = response.status_code
    phrase = _status_phrase(status) or scrub(response.reason_phrase)
    text = (
        f"{doing}: {request.method} {display_url(request.url)} answered HTTP {status} {phrase}"
    ).rstrip()
    return text + (f": {detail}" if detail else "")


#: The most of a server's reason a message shows: two lines, each this long at most.
_REASON_LINES = 2
_REASON_WIDTH = 200
#: What an HTML error page says outside its text (scripts, the head), and the tags around it.
_TAGS = re.compile(
    r"<(script|style|noscript|head|title)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>",
    re.IGNORECASE | re.DOTALL,
)


def server_reason(
    status: int,
    phrase: str | None,
    content_type: str | None,
    body: bytes | bytearray | str,
    *secrets: str | None,
) -> str:
    """A server's own reason for an error answer, fit for a message, or "" when it gives none
    beyond the status (``403: Forbidden``): the status line's own words (Enterprise Gateway
    puts its reason there), the ``message`` and ``reason`` of a JSON body (jupyter_server's
    form), else the text of a plain or HTML body. At most two lines, scrubbed of ``secrets``
    and of anything that looks like a token."""
    text = body if isinstance(body, str) else bytes(body).decode("utf-8", "replace")
    content_type = (content_type or "").lower()
    if "json" in content_type or text.lstrip().startswith("{"):
        text = _json_reason(text)
    elif "html" in content_type or text.lstrip().startswith("<"):
        text = html.unescape(_TAGS.sub("\n", text))
    text = scrub(f"{phrase or ''}\n{text}", *secrets)  # before trimming, which could cut a token
    standard = _status_phrase(status).lower()
    said: list[str] = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        bare = line.lower().removeprefix(str(status)).strip(" :-.")
        if bare in ("", standard, "error", "unknown http error") or line in said:
            continue  # a repeat of the status says nothing new
        said.append(line if len(line) <= _REASON_WIDTH else line[: _REASON_WIDTH - 3] + "...")
        if len(said) == _REASON_LINES:
            break
    return " / ".join(said)


def _json_reason(text: str) -> str:
    """The human parts of a JSON error body, one a line (not a traceback the server sent)."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if not isinstance(data, dict):
        return ""
    found: list[str] = []
    for key in ("message", "reason", "error", "detail"):
        value = data.get(key)
        if isinstance(value, dict):  # Google's {"error": {"message": ...}}
            value = value.get("message")
        if isinstance(value, str) and value.strip():
            found.append(value.strip())
    return "\n".join(found)


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


@contextmanager
def mapped_errors(
    doing: str, *, where: str, error: ErrorFactory, hide: Iterable[str] = ()
) -> Iterator[None]:
    """httpx's failures inside the block become ``error(message, status)``, raised from them.

    A time-out reads "``where`` did not answer in time", any other transport failure "cannot
    reach ``where``" (status ``None``: no answer came), and an :class:`httpx.HTTPStatusError`
    (a 429 or 5xx the retry policy gave up on) "``where`` answered HTTP n; try again later".
    ``hide`` (read only when an error happens) lists secrets to blot out of httpx's text.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        raise error(
            f"{doing}: {where} did not answer in time ({type(exc).__name__})", None
        ) from exc
    except httpx.TransportError as exc:
        name = type(exc).__name__
        detail = scrub(str(exc), *hide)
        reason = f"{name}: {detail}" if detail else name
        raise error(f"{doing}: cannot reach {where} ({reason})", None) from exc
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        raise error(f"{doing}: {where} answered HTTP {status}; try again later", status) from exc


class TokenSource(Protocol):
    """Hands out access tokens. ``invalidate()``, where an object has it, drops a cached one."""

    async def token(self) -> str: ...


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` from ``credentials`` on each request (none for an empty
    token). A 401 drops the cached token (the credentials' ``invalidate()``, where they have one)
    and, with ``retry_on_401``, sends the request once more with a freshly asked-for token.

    ``credentials`` may be a plain token string: sent as is, never refreshed.
    """

    def __init__(self, credentials: TokenSource | str, *, retry_on_401: bool = True) -> None:
        self._credentials = credentials
        self._retry_on_401 = retry_on_401
        self._sent: deque[str] = deque(maxlen=4)

    def __repr__(self) -> str:
        return f"BearerAuth(retry_on_401={self._retry_on_401})"

    @property
    def sent_tokens(self) -> Iterable[str]:
        """The tokens sent lately (a live view), to blot out of texts should a server echo one."""
        return self._sent

    async def _token(self) -> str:
        if isinstance(self._credentials, str):
            return self._credentials
        return await self._credentials.token()

    def _invalidate(self) -> None:
        forget = getattr(self._credentials, "invalidate", None)
        if callable(forget):
            forget()

    def _authorize(self, request: httpx.Request, token: str) -> None:
        request.headers.pop("Authorization", None)
        token = clean_token(token)
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
            if token not in self._sent:
                self._sent.append(token)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        self._authorize(request, await self._token())
        response = yield request
        if response.status_code != 401:
            return
        # A token can stop working before its stated expiry (revoked, a password change):
        # without dropping it, the retry would send the same token again.
        self._invalidate()
        if self._retry_on_401:
            # A request of its own, so the refused one stays as it was sent.
            retry = httpx.Request(
                request.method,
                request.url,
                headers=request.headers.copy(),
                stream=request.stream,
                extensions=request.extensions,
            )
            self._authorize(retry, await self._token())
            yield retry

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError("BearerAuth asks for tokens asynchronously: use httpx.AsyncClient")
