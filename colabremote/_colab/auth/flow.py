"""The browser half of signing in: PKCE, the authorization URL's pieces, a pasted code, and
the one-shot loopback listener that sends the browser on to Google and receives the redirect."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import html
import logging
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from ...exceptions import AuthError, OAuthError

log = logging.getLogger("colabremote.auth")


def make_pkce_pair() -> tuple[str, str]:
    """``(verifier, challenge)``: 128 unreserved characters from 96 random bytes, and S256 of it.

    The verifier is built as the extension's library builds it (colab-protocol.md §2.3).
    """
    raw = base64.b64encode(secrets.token_bytes(96)).decode("ascii")
    verifier = raw.translate(str.maketrans("+=/", "~_-"))
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
    return verifier, challenge


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


@dataclass(frozen=True)
class AuthorizationRequest:
    """A browser URL and what must be remembered to finish it (never shown in the repr)."""

    url: str
    redirect_uri: str
    state: str = field(repr=False)
    verifier: str = field(repr=False)

    def __repr__(self) -> str:
        return f"AuthorizationRequest(redirect_uri={self.redirect_uri!r})"

    __str__ = __repr__


def parse_pasted_code(text: str, expected_state: str) -> str:
    """The authorization code in what the user pasted: the code itself, or the whole address the
    browser was sent to (its ``state`` must then match; ``error=`` ends the sign-in)."""
    text = text.strip()
    if not text:
        raise OAuthError("nothing was pasted; sign in again", error="no_code")
    if "://" in text or text.startswith("?") or "code=" in text or "error=" in text:
        query = urlsplit(text).query if "://" in text else text.lstrip("?")
        params = parse_qs(query, keep_blank_values=True)
        state = params.get("state", [None])[0]
        if state is not None and not _same(state, expected_state):
            raise OAuthError(
                "the pasted address belongs to another sign-in attempt (state does not match); "
                "open the newest link and try again",
                error="state_mismatch",
            )
        if params.get("error"):
            error = params["error"][0]
            raise OAuthError(f"sign-in was not completed in the browser: {error}", error=error)
        code = params.get("code", [""])[0]
        if not code:
            raise OAuthError("the pasted address has no code= parameter", error="no_code")
        return code
    return text


# -- the loopback listener -----------------------------------------------------------------------

_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>colabremote</title></head>"
    "<body style='font-family:sans-serif;margin:3em'><h2>{title}</h2><p>{text}</p></body></html>"
)


_VERDICT_WAIT = 120.0  # seconds the browser's page waits for the code exchange to end


class LoopbackReceiver:
    """Waits on 127.0.0.1 for the one redirect that carries our ``state`` and a code.

    The browser is opened on :attr:`start_url`, a random path here that answers 302 to the
    authorization URL: ``webbrowser`` puts its argument on a command line, which other local
    users can read, and the state and PKCE challenge must not be there. The start path answers
    once; a second request ends the sign-in (someone else may have read the state).

    A request with a wrong or missing ``state``, or without a code, gets an error page and the
    wait goes on (so a stray or forged request cannot end the sign-in). ``error=`` with our state
    (the user declined) ends it. After the first good redirect the listener stops accepting
    connections, and anything already queued is answered "already used": no second code. The
    browser's answer waits for :meth:`conclude`, so the page names the account that signed in,
    or says the sign-in failed.
    """

    def __init__(self) -> None:
        self._state: str | None = None  # until expect(): every redirect is refused
        self._authorization_url: str | None = None
        self._start_path = "/start/" + secrets.token_urlsafe(16)
        self._started = False
        self._outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._verdict: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._server: asyncio.Server | None = None
        self.redirect_uri = ""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, host="127.0.0.1", port=0)
        port = self._server.sockets[0].getsockname()[1]
        self.redirect_uri = f"http://127.0.0.1:{port}"
        return self.redirect_uri

    def expect(self, state: str, authorization_url: str) -> str:
        """Wait for a redirect with ``state``; the start URL now leads to ``authorization_url``.
        Returns the start URL, the one to open in the browser."""
        self._state = state
        self._authorization_url = authorization_url
        return self.start_url

    @property
    def start_url(self) -> str:
        return self.redirect_uri + self._start_path

    @property
    def outcome(self) -> asyncio.Future[str]:
        return self._outcome

    def conclude(self, account: str | None) -> None:
        """The sign-in is over: as ``account`` (``None``: it failed). The first call counts."""
        if not self._verdict.done():
            self._verdict.set_result(account)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                # Python >= 3.12 waits for open connections here, e.g. an idle browser preconnect.
                await asyncio.wait_for(self._server.wait_closed(), 1)
            self._server = None

    def _finish(self, code: str | None = None, error: BaseException | None = None) -> None:
        if self._outcome.done():
            return
        if error is not None:
            self._outcome.set_exception(error)
        else:
            assert code is not None
            self._outcome.set_result(code)
        if self._server is not None:
            self._server.close()  # no more connections: nothing can bring a second code

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, title, text, extra = await self._answer(reader)
        except (
            asyncio.TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ):
            status, title, text, extra = 400, "Bad request", "The request was malformed.", {}
        except ConnectionError:
            writer.close()
            return
        body = _PAGE.format(title=html.escape(title), text=html.escape(text)).encode("utf-8")
        reasons = {
            200: "OK",
            302: "Found",
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
        }
        lines = [
            f"HTTP/1.1 {status} {reasons.get(status, 'Error')}",
            "Content-Type: text/html; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in extra.items()),
        ]
        with contextlib.suppress(ConnectionError):
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, str, str, dict[str, str]]:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3:
            return 400, "Bad request", "The request was malformed.", {}
        method, target, _version = parts
        if method != "GET":
            return 405, "Method not allowed", "Only GET is served here.", {"Allow": "GET"}
        url = urlsplit(target)
        if url.path == self._start_path:
            return self._start()
        if url.path not in ("", "/"):
            return 404, "Not found", "Nothing here.", {}
        if self._outcome.done():
            return 400, "Already used", "This sign-in has already finished.", {}
        params = parse_qs(url.query, keep_blank_values=True)
        state = params.get("state", [None])[0]
        if state is None or self._state is None or not _same(state, self._state):
            log.warning("ignored a sign-in redirect with a missing or wrong state")
            return 400, "Wrong sign-in link", "This is not the sign-in colabremote waits for.", {}
        if params.get("error"):
            error = params["error"][0][:100]
            self._finish(
                error=OAuthError(f"sign-in was not completed in the browser: {error}", error=error)
            )
            return 400, "Sign-in not completed", f"Google answered: {error}.", {}
        code = params.get("code", [""])[0]
        if not code:
            return 400, "No code", "The redirect carried no authorization code.", {}
        self._finish(code=code)
        try:
            account = await asyncio.wait_for(asyncio.shield(self._verdict), _VERDICT_WAIT)
        except asyncio.TimeoutError:
            return 200, "Code received", "colabremote got the sign-in; see its terminal.", {}
        if account is None:
            return 400, "Sign-in failed", "colabremote could not sign in; see its terminal.", {}
        text = f"colabremote is signed in as {account}. You may close this tab."
        return 200, "Signed in", text, {}

    def _start(self) -> tuple[int, str, str, dict[str, str]]:
        if self._outcome.done():
            return 400, "Already used", "This sign-in has already finished.", {}
        if self._authorization_url is None:
            return 404, "Not found", "Nothing here.", {}
        if self._started:
            self._finish(
                error=AuthError(
                    "the sign-in address was opened more than once, so another program may "
                    "have seen it; run `colabremote login` again"
                )
            )
            return 400, "Already used", "This sign-in link was already opened; start again.", {}
        self._started = True
        location = self._authorization_url
        return 302, "Sign in", "Continuing to the sign-in page.", {"Location": location}
