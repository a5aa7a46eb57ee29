"""Signing in to Google for Colab: loopback + PKCE, paste-the-code, ADC, or a token from CI.

Async like the rest of the SDK: every network call goes through one ``httpx.AsyncClient``; the
blocking bits (opening a browser, reading a pasted code, google-auth's refresh) run in worker
threads so the event loop keeps serving the loopback redirect meanwhile.

Where credentials come from, in order (:func:`find_credentials`, in the style of google-auth's
``_default.py``):

1. ``COLABREMOTE_ACCESS_TOKEN``: an access token for CI, used as it is and never stored;
2. the record ``colabremote login`` stored (:mod:`.tokens`), refreshed when it nears expiry;
3. Application Default Credentials (google-auth), only when asked for (``use_adc=True``).

Each answer is an object with ``async def token() -> str``.

colabremote ships no OAuth client: Google's are not ours to bundle. Users create a "Desktop app"
OAuth client in their Google Cloud project and point ``COLABREMOTE_OAUTH_CLIENT_SECRETS`` at its
JSON (or set ``COLABREMOTE_OAUTH_CLIENT_ID`` / ``COLABREMOTE_OAUTH_CLIENT_SECRET``, or copy the
file to ``<config dir>/client_secrets.json``). Whether Colab accepts tokens minted for a
third-party client is not known (colab-protocol.md §8.1); ADC from ``gcloud`` is known to work.

Tokens, the client secret, authorization codes and the PKCE verifier never appear in logs, reprs
or exception messages.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import hashlib
import hmac
import html
import importlib
import json
import logging
import os
import secrets
import sys
import warnings
import webbrowser
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from .._retry import retrying
from .._tls import verify_setting
from ..exceptions import (
    AuthError,
    ConfigurationError,
    MissingScopes,
    OAuthError,
    SignInRequired,
)
from ._http import OwnsHttpClient
from .tokens import StoredCredentials, TokenStore, default_config_dir

__all__ = [
    "ADC_SCOPES",
    "DEFAULT_AUTHORIZE_URL",
    "DEFAULT_PASTE_REDIRECT_URI",
    "DEFAULT_REVOKE_URL",
    "DEFAULT_TOKENINFO_URL",
    "DEFAULT_TOKEN_URL",
    "DEFAULT_USERINFO_URL",
    "REFRESH_MARGIN",
    "REQUIRED_SCOPES",
    "AdcCredentials",
    "AuthorizationRequest",
    "ClientConfig",
    "Credentials",
    "EnvironmentToken",
    "GoogleOAuth",
    "UserCredentials",
    "find_credentials",
    "gcloud_adc_command",
    "load_adc",
    "make_pkce_pair",
    "missing_scopes",
    "normalize_scopes",
    "parse_pasted_code",
]

log = logging.getLogger("colabremote.auth")

# -- endpoints and scopes ------------------------------------------------------------------------

DEFAULT_AUTHORIZE_URL = "https://accounts.google.com/o/oauth2/v2/auth"
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
DEFAULT_REVOKE_URL = "https://oauth2.googleapis.com/revoke"
DEFAULT_USERINFO_URL = "https://www.googleapis.com/oauth2/v2/userinfo"
DEFAULT_TOKENINFO_URL = "https://oauth2.googleapis.com/tokeninfo"
# The Google-hosted page that shows the code to copy (colab-cli-findings.md §1.3). It is registered
# for Google Cloud SDK's client only; with your own client pass ``redirect_uri=`` to login_paste
# (a loopback address works: paste the address the browser ends on, even if the page fails).
DEFAULT_PASTE_REDIRECT_URI = "https://sdk.cloud.google.com/applicationdefaultauthcode.html"

SCOPE_EMAIL = "email"
SCOPE_PROFILE = "profile"
SCOPE_OPENID = "openid"
SCOPE_USERINFO_EMAIL = "https://www.googleapis.com/auth/userinfo.email"
SCOPE_USERINFO_PROFILE = "https://www.googleapis.com/auth/userinfo.profile"
SCOPE_COLAB = "https://www.googleapis.com/auth/colaboratory"
SCOPE_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"

# Short names Google expands to full scope URLs in what it grants.
_SCOPE_ALIASES = {SCOPE_EMAIL: SCOPE_USERINFO_EMAIL, SCOPE_PROFILE: SCOPE_USERINFO_PROFILE}

REFRESH_MARGIN = timedelta(minutes=5)  # refresh this long before expiry (colab-protocol.md §2.6)
LOGIN_TIMEOUT = 300.0  # seconds to wait for the browser (the extension's 60 s is short with 2FA)
_HTTP_TIMEOUT = 30.0
_SECRETS_FILE = "client_secrets.json"


def normalize_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """De-duplicated and sorted, as the sign-in request sends them."""
    return tuple(sorted({scope.strip() for scope in scopes if scope and scope.strip()}))


def _canonical(scope: str) -> str:
    return _SCOPE_ALIASES.get(scope, scope)


def missing_scopes(granted: Iterable[str], required: Iterable[str]) -> tuple[str, ...]:
    """The required scopes (full names) that ``granted`` lacks; ``email`` = ``userinfo.email``."""
    have = {_canonical(scope) for scope in granted}
    return normalize_scopes(_canonical(s) for s in required if _canonical(s) not in have)


# The three the Colab extension requires (colab-protocol.md §2.2), plus userinfo.email by its full
# name: the /tun/m/* session backend answers 401 to tokens without it (colab-cli-findings.md §1.2
# and §1.7 [live]). ``email`` is Google's alias of the same scope; naming it in full as well keeps
# the requirement explicit and lets one scope list serve OAuth and ADC checks alike.
REQUIRED_SCOPES = normalize_scopes([SCOPE_PROFILE, SCOPE_EMAIL, SCOPE_COLAB, SCOPE_USERINFO_EMAIL])

# What `gcloud auth application-default login --scopes=...` must ask for: gcloud rejects a list
# without cloud-platform and wants openid with custom scopes (colab-cli-findings.md §1.2, §1.6).
ADC_SCOPES = normalize_scopes(
    [SCOPE_OPENID, SCOPE_CLOUD_PLATFORM, SCOPE_USERINFO_EMAIL, SCOPE_COLAB]
)
_ADC_REQUIRED = normalize_scopes([SCOPE_USERINFO_EMAIL, SCOPE_COLAB])


def gcloud_adc_command(scopes: Iterable[str] = ADC_SCOPES) -> str:
    """The command that mints ADC user credentials with the scopes Colab needs."""
    return "gcloud auth application-default login --scopes=" + ",".join(normalize_scopes(scopes))


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _redact(text: str, *values: str | None) -> str:
    """``text`` with every secret in ``values`` blotted out (for messages built from replies)."""
    for value in values:
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


# -- the OAuth client ----------------------------------------------------------------------------

_NO_CLIENT_HELP = (
    "No Google OAuth client is configured. colabremote does not ship Google's credentials; "
    "create your own: in the Google Cloud console open APIs & Services > Credentials > "
    "Create credentials > OAuth client ID, choose application type 'Desktop app', download the "
    "JSON and set COLABREMOTE_OAUTH_CLIENT_SECRETS=/path/to/client_secret.json (or copy it to "
    "{default}, or set COLABREMOTE_OAUTH_CLIENT_ID and COLABREMOTE_OAUTH_CLIENT_SECRET). "
    "To use gcloud's Application Default Credentials instead run: {gcloud}"
)


@dataclass(frozen=True)
class ClientConfig:
    """An OAuth client: id and secret. The secret never shows in its repr."""

    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    source: str = "arguments"

    def __repr__(self) -> str:
        secret = "<set>" if self.client_secret else None
        return (
            f"ClientConfig(client_id={self.client_id!r}, client_secret={secret}, "
            f"source={self.source!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "mapping") -> ClientConfig:
        """From Google's client JSON: ``{"installed": {...}}`` or ``{"web": {...}}``."""
        section = data.get("installed") or data.get("web")
        if not isinstance(section, Mapping):
            raise ConfigurationError(
                f"{source} is not a Google OAuth client file: expected a top-level 'installed' "
                "(Desktop app) or 'web' object, as downloaded from the Google Cloud console"
            )
        client_id = section.get("client_id")
        client_secret = section.get("client_secret")
        if not isinstance(client_id, str) or not client_id:
            raise ConfigurationError(f"{source} has no client_id")
        if client_secret is not None and not isinstance(client_secret, str):
            raise ConfigurationError(f"{source} has a client_secret that is not a string")
        return cls(client_id, client_secret or None, source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ClientConfig:
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"OAuth client file {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"OAuth client file {path} is unreadable ({type(exc).__name__})"
            ) from None
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"OAuth client file {path} does not hold a JSON object")
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def load(
        cls,
        client_secrets: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        config_dir: str | os.PathLike[str] | None = None,
    ) -> ClientConfig:
        """The first configured of: ``client_secrets``, ``COLABREMOTE_OAUTH_CLIENT_ID`` (+
        ``_SECRET``), ``COLABREMOTE_OAUTH_CLIENT_SECRETS``, ``<config dir>/client_secrets.json``.
        """
        env = os.environ if environ is None else environ
        if client_secrets is not None:
            return cls.from_file(client_secrets)
        if env.get("COLABREMOTE_OAUTH_CLIENT_ID"):
            return cls(
                env["COLABREMOTE_OAUTH_CLIENT_ID"],
                env.get("COLABREMOTE_OAUTH_CLIENT_SECRET") or None,
                "environment",
            )
        if env.get("COLABREMOTE_OAUTH_CLIENT_SECRETS"):
            return cls.from_file(env["COLABREMOTE_OAUTH_CLIENT_SECRETS"])
        directory = Path(config_dir) if config_dir is not None else default_config_dir(env)
        default = directory / _SECRETS_FILE
        if default.is_file():
            return cls.from_file(default)
        raise ConfigurationError(
            _NO_CLIENT_HELP.format(default=default, gcloud=gcloud_adc_command())
        )


# -- pieces of the authorization request ---------------------------------------------------------


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


class _LoopbackReceiver:
    """Waits on 127.0.0.1 for the one redirect that carries our ``state`` and a code.

    A request with a wrong or missing ``state``, or without a code, gets an error page and the
    wait goes on (so a stray or forged request cannot end the sign-in). ``error=`` with our state
    (the user declined) ends it. After the first good redirect the listener stops accepting
    connections, and anything already queued is answered "already used": no second code.
    """

    def __init__(self) -> None:
        self._state: str | None = None  # until expect(): every redirect is refused
        self._outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._server: asyncio.Server | None = None
        self.redirect_uri = ""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, host="127.0.0.1", port=0)
        port = self._server.sockets[0].getsockname()[1]
        self.redirect_uri = f"http://127.0.0.1:{port}"
        return self.redirect_uri

    def expect(self, state: str) -> None:
        self._state = state

    @property
    def outcome(self) -> asyncio.Future[str]:
        return self._outcome

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
        reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
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
        return 200, "Signed in", "colabremote is signed in. You may close this tab.", {}


# -- the OAuth service ---------------------------------------------------------------------------


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _log_browser_failure(future: asyncio.Future[object]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("opening the browser failed: %s", type(future.exception()).__name__)


class GoogleOAuth(OwnsHttpClient):
    """Google's OAuth endpoints for one client: sign in, exchange, refresh, revoke, userinfo."""

    def __init__(
        self,
        client: ClientConfig | None = None,
        *,
        store: TokenStore | None = None,
        scopes: Iterable[str] = REQUIRED_SCOPES,
        authorize_url: str = DEFAULT_AUTHORIZE_URL,
        token_url: str = DEFAULT_TOKEN_URL,
        revoke_url: str = DEFAULT_REVOKE_URL,
        userinfo_url: str = DEFAULT_USERINFO_URL,
        tokeninfo_url: str = DEFAULT_TOKENINFO_URL,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._client = client
        self._environ = environ
        self.store = store
        self.scopes = normalize_scopes(scopes)
        self.authorize_url = authorize_url
        self.token_url = token_url
        self.revoke_url = revoke_url
        self.userinfo_url = userinfo_url
        self.tokeninfo_url = tokeninfo_url
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            transport=transport, timeout=httpx.Timeout(_HTTP_TIMEOUT), verify=verify_setting()
        )

    def __repr__(self) -> str:
        return f"GoogleOAuth(client={self._client!r}, token_url={self.token_url!r})"

    @property
    def client(self) -> ClientConfig:
        """The OAuth client, loaded from the environment on first use."""
        if self._client is None:
            config_dir = self.store.config_dir if self.store is not None else None
            self._client = ClientConfig.load(environ=self._environ, config_dir=config_dir)
        return self._client

    # -- sign-in -----------------------------------------------------------------------------

    def authorization_request(
        self, redirect_uri: str, *, consent: bool = True, login_hint: str | None = None
    ) -> AuthorizationRequest:
        """The URL to open, with a fresh ``state`` and PKCE pair."""
        verifier, challenge = make_pkce_pair()
        state = secrets.token_urlsafe(32)
        params = {
            "client_id": self.client.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "access_type": "offline",
            "scope": " ".join(self.scopes),
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "include_granted_scopes": "false" if consent else "true",
        }
        if consent:
            params["prompt"] = "consent"  # first sign-in: make sure a refresh token is issued
        if login_hint:
            params["login_hint"] = login_hint
        separator = "&" if "?" in self.authorize_url else "?"
        url = self.authorize_url + separator + urlencode(params)
        return AuthorizationRequest(url, redirect_uri, state, verifier)

    async def login(
        self,
        *,
        open_browser: Callable[[str], object] | None = webbrowser.open,
        timeout: float = LOGIN_TIMEOUT,
        announce: Callable[[str], None] = _stderr,
        consent: bool = True,
        login_hint: str | None = None,
        save: bool = True,
    ) -> StoredCredentials:
        """Sign in through the browser and a one-shot listener on 127.0.0.1 (PKCE, S256).

        ``open_browser(url)`` runs in a worker thread (``None``: only print the URL); what it
        raises ends the sign-in. Stores the result in ``self.store`` unless ``save=False``.
        """
        receiver = _LoopbackReceiver()
        redirect_uri = await receiver.start()
        browser: asyncio.Future[object] | None = None
        try:
            request = self.authorization_request(
                redirect_uri, consent=consent, login_hint=login_hint
            )
            receiver.expect(request.state)
            announce(
                f"Sign in to Google in your browser; if it does not open, visit:\n{request.url}"
            )
            if open_browser is not None:
                browser = asyncio.ensure_future(asyncio.to_thread(open_browser, request.url))
            code = await self._wait_for_code(receiver, browser, timeout)
        finally:
            await receiver.close()
            if browser is not None:  # a failure after we stopped waiting is only logged
                browser.add_done_callback(_log_browser_failure)
        credentials = await self.exchange_code(
            code, redirect_uri=request.redirect_uri, verifier=request.verifier
        )
        if browser is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(browser), 5)
            failure = browser.exception() if browser.done() else None
            if failure is not None:
                raise failure
        if save and self.store is not None:
            self.store.save(credentials)
        return credentials

    async def _wait_for_code(
        self,
        receiver: _LoopbackReceiver,
        browser: asyncio.Future[object] | None,
        timeout: float,
    ) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        watching: set[asyncio.Future[Any]] = {receiver.outcome}
        if browser is not None:
            watching.add(browser)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AuthError(
                    f"no sign-in arrived within {timeout:g} s; run `colabremote login` again "
                    "(or `colabremote login --no-browser` on a machine without a browser)"
                )
            done, _ = await asyncio.wait(
                watching, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if receiver.outcome in done:
                return receiver.outcome.result()
            if browser is not None and browser in done:
                watching.discard(browser)
                failure = browser.exception()
                if failure is not None:
                    raise failure
                if browser.result() is False:
                    log.warning("could not open a browser; open the printed address yourself")

    async def login_paste(
        self,
        *,
        input_fn: Callable[[str], str] = builtins.input,
        announce: Callable[[str], None] = _stderr,
        redirect_uri: str = DEFAULT_PASTE_REDIRECT_URI,
        consent: bool = True,
        save: bool = True,
    ) -> StoredCredentials:
        """Sign in without a local browser: print the URL, read back the code (or the address the
        browser ended on) through ``input_fn``."""
        request = self.authorization_request(redirect_uri, consent=consent)
        announce(
            "Open this address in a browser on any machine, sign in, and paste the code it shows "
            f"(or the whole address the browser ends on):\n{request.url}"
        )
        try:
            pasted = await asyncio.to_thread(input_fn, "Authorization code: ")
        except EOFError:
            raise AuthError(
                "no code was entered (standard input is closed); run `colabremote login "
                "--no-browser` in a terminal"
            ) from None
        code = parse_pasted_code(pasted, request.state)
        credentials = await self.exchange_code(
            code, redirect_uri=request.redirect_uri, verifier=request.verifier
        )
        if save and self.store is not None:
            self.store.save(credentials)
        return credentials

    # -- token endpoint ----------------------------------------------------------------------

    async def _post(self, url: str, data: dict[str, str], doing: str, *, retry: bool) -> Any:
        async def once() -> httpx.Response:
            response = await self._http.post(url, data=data, headers={"Accept": "application/json"})
            if response.status_code >= 500 or response.status_code == 429:
                response.raise_for_status()
            return response

        try:
            return await (retrying(once, attempts=3) if retry else once())
        except httpx.HTTPStatusError as exc:
            raise AuthError(
                f"{doing}: the Google sign-in service answered HTTP {exc.response.status_code}; "
                "try again later"
            ) from None
        except httpx.TransportError as exc:
            raise AuthError(
                f"{doing}: could not reach {urlsplit(url).netloc} ({type(exc).__name__})"
            ) from None

    @staticmethod
    def _body(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def _refusal(
        self, response: httpx.Response, body: Mapping[str, Any], doing: str, *hide: str | None
    ) -> OAuthError:
        error = body.get("error") if isinstance(body.get("error"), str) else None
        description = body.get("error_description")
        text = f"{doing}: Google refused (HTTP {response.status_code}"
        text += f", {error})" if error else ")"
        if isinstance(description, str) and description:
            text += f": {description[:200]}"
        secret = self._client.client_secret if self._client else None
        return OAuthError(_redact(text, secret, *hide), error=error)

    @staticmethod
    def _expiry(body: Mapping[str, Any]) -> datetime | None:
        expires_in = body.get("expires_in")
        if isinstance(expires_in, (int, float)) or (
            isinstance(expires_in, str) and expires_in.isdigit()
        ):
            return _utcnow() + timedelta(seconds=float(expires_in))
        return None

    async def exchange_code(
        self, code: str, *, redirect_uri: str, verifier: str
    ) -> StoredCredentials:
        """Trade an authorization code for tokens, then learn the account's e-mail."""
        client = self.client
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": client.client_id,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        if client.client_secret:
            data["client_secret"] = client.client_secret
        doing = "exchanging the sign-in code"
        # Not retried: a code is good for one exchange only.
        response = await self._post(self.token_url, data, doing, retry=False)
        body = self._body(response)
        if response.status_code != 200:
            raise self._refusal(response, body, doing, code, verifier)
        access = body.get("access_token")
        refresh = body.get("refresh_token")
        expiry = self._expiry(body)
        scope = body.get("scope")
        if not (isinstance(access, str) and access and isinstance(refresh, str) and refresh):
            raise OAuthError(
                f"{doing}: Google's answer lacks an access or refresh token",
                error="incomplete_response",
            )
        if expiry is None or not isinstance(scope, str):
            raise OAuthError(
                f"{doing}: Google's answer lacks expires_in or scope", error="incomplete_response"
            )
        granted = normalize_scopes(scope.split())
        lacking = missing_scopes(granted, self.scopes)
        if lacking:
            raise MissingScopes(
                "the sign-in did not grant every permission colabremote needs (missing: "
                + ", ".join(lacking)
                + "); run `colabremote login` again and allow all of them",
                missing=lacking,
            )
        info = await self.userinfo(access)
        email = info.get("email")
        return StoredCredentials(
            client_id=client.client_id,
            refresh_token=refresh,
            access_token=access,
            expiry=expiry,
            scopes=granted,
            account=email if isinstance(email, str) else None,
        )

    async def refresh(self, credentials: StoredCredentials) -> StoredCredentials:
        """A new access token from the refresh token. A revoked grant raises SignInRequired."""
        if not credentials.refresh_token:
            raise SignInRequired("no refresh token is stored; run `colabremote login`")
        client = self.client
        if client.client_id != credentials.client_id:
            raise SignInRequired(
                f"the stored sign-in belongs to OAuth client {credentials.client_id!r}, but "
                f"{client.client_id!r} is configured; run `colabremote login` again"
            )
        data = {
            "grant_type": "refresh_token",
            "refresh_token": credentials.refresh_token,
            "client_id": client.client_id,
        }
        if client.client_secret:
            data["client_secret"] = client.client_secret
        doing = "refreshing the Google access token"
        response = await self._post(self.token_url, data, doing, retry=True)
        body = self._body(response)
        if response.status_code != 200:
            refusal = self._refusal(response, body, doing, credentials.refresh_token)
            if refusal.error == "invalid_grant" or response.status_code == 401:
                raise SignInRequired(
                    f"{refusal}. The stored sign-in is no longer valid (revoked, expired or "
                    "issued to another client); run `colabremote login`"
                )
            raise refusal
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise OAuthError(f"{doing}: Google's answer has no access token", error="no_token")
        scope = body.get("scope")
        scopes = normalize_scopes(scope.split()) if isinstance(scope, str) else None
        updated = credentials.with_token(access, self._expiry(body), scopes)
        new_refresh = body.get("refresh_token")
        if isinstance(new_refresh, str) and new_refresh:
            updated = replace(updated, refresh_token=new_refresh)
        return updated

    async def userinfo(self, access_token: str) -> dict[str, Any]:
        """The signed-in user's profile (``email``, ``name``, ...)."""

        async def once() -> httpx.Response:
            response = await self._http.get(
                self.userinfo_url, headers={"Authorization": f"Bearer {access_token}"}
            )
            if response.status_code >= 500 or response.status_code == 429:
                response.raise_for_status()
            return response

        doing = "reading the Google account's e-mail address"
        try:
            response = await retrying(once, attempts=3)
        except (httpx.HTTPStatusError, httpx.TransportError) as exc:
            raise AuthError(f"{doing} failed ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise self._refusal(response, self._body(response), doing, access_token)
        return self._body(response)

    async def token_scopes(self, access_token: str) -> tuple[str, ...]:
        """The scopes an access token carries, asked of the tokeninfo endpoint."""
        doing = "checking the access token's scopes"
        response = await self._post(
            self.tokeninfo_url, {"access_token": access_token}, doing, retry=True
        )
        body = self._body(response)
        if response.status_code != 200:
            raise self._refusal(response, body, doing, access_token)
        scope = body.get("scope")
        return normalize_scopes(scope.split()) if isinstance(scope, str) else ()

    async def revoke(self, token: str) -> bool:
        """Revoke ``token`` (and the grant behind it). Failures are logged, not raised."""
        try:
            response = await self._post(self.revoke_url, {"token": token}, "revoking", retry=True)
        except AuthError as exc:
            log.warning("could not revoke the Google token: %s", exc)
            return False
        if response.status_code != 200:
            log.warning("Google did not revoke the token (HTTP %s)", response.status_code)
            return False
        return True

    async def logout(self) -> bool:
        """Revoke and forget the stored sign-in. False when there was none."""
        if self.store is None:
            return False
        credentials = self.store.load()
        if credentials is None:
            return False
        token = credentials.refresh_token or credentials.access_token
        if token:
            await self.revoke(token)
        self.store.delete()
        return True


# -- credentials: something with `async def token() -> str` --------------------------------------


def invalidate(credentials: object) -> None:
    """Drop cached credentials' access token after a 401, where they have one to drop.

    A token can stop working before its stated expiry (revoked, a password change); without
    this, the retry after the 401 would send the same token again.
    """
    forget = getattr(credentials, "invalidate", None)
    if callable(forget):
        forget()


@runtime_checkable
class Credentials(Protocol):
    """A source of Google access tokens. ``token()`` refreshes when needed."""

    source: str

    async def token(self) -> str: ...

    async def aclose(self) -> None: ...


class EnvironmentToken:
    """A ready access token, e.g. ``COLABREMOTE_ACCESS_TOKEN`` in CI: used as is, never stored."""

    source = "environment"

    def __init__(self, token: str) -> None:
        if not token.strip():
            raise ConfigurationError("COLABREMOTE_ACCESS_TOKEN is empty")
        self._token = token.strip()

    def __repr__(self) -> str:
        return "EnvironmentToken(<hidden>)"

    __str__ = __repr__

    async def token(self) -> str:
        return self._token

    async def aclose(self) -> None:
        return None


class UserCredentials:
    """A stored sign-in; ``token()`` refreshes it shortly before it expires, one refresh at a
    time (an ``asyncio.Lock``: use one event loop, as the SDK does)."""

    source = "stored"

    def __init__(
        self,
        oauth: GoogleOAuth,
        credentials: StoredCredentials,
        *,
        store: TokenStore | None = None,
        margin: timedelta = REFRESH_MARGIN,
        clock: Callable[[], datetime] = _utcnow,
        owns_oauth: bool = False,
    ) -> None:
        self._oauth = oauth
        self._credentials = credentials
        self._store = store
        self._margin = margin
        self._clock = clock
        self._owns_oauth = owns_oauth
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"UserCredentials(account={self._credentials.account!r})"

    __str__ = __repr__

    @property
    def account(self) -> str | None:
        return self._credentials.account

    @property
    def credentials(self) -> StoredCredentials:
        return self._credentials

    def invalidate(self) -> None:
        """Forget the access token (after a 401), so the next ``token()`` refreshes."""
        self._credentials = self._credentials.with_token("", None)

    async def token(self) -> str:
        current = self._credentials
        if not current.expires_within(self._margin, now=self._clock()):
            assert current.access_token is not None
            return current.access_token
        async with self._lock:
            current = self._credentials  # another caller may have refreshed meanwhile
            if current.expires_within(self._margin, now=self._clock()):
                try:
                    current = await self._oauth.refresh(current)
                except SignInRequired:
                    if self._store is not None:
                        self._store.delete()
                    raise
                self._credentials = current
                if self._store is not None:
                    try:
                        self._store.save(current)
                    except (ConfigurationError, OSError) as exc:
                        log.warning("could not store the refreshed token: %s", exc)
            assert current.access_token is not None
            return current.access_token

    async def aclose(self) -> None:
        if self._owns_oauth:
            await self._oauth.aclose()


class AdcCredentials:
    """google-auth Application Default Credentials, checked once for the scopes Colab needs."""

    source = "adc"

    def __init__(
        self,
        credentials: Any,
        request: Any,
        *,
        scope_lookup: Callable[[str], Any] | None = None,
        required: Iterable[str] = _ADC_REQUIRED,
        margin: timedelta = REFRESH_MARGIN,
        clock: Callable[[], datetime] = _utcnow,
        owned: GoogleOAuth | None = None,
    ) -> None:
        self._credentials = credentials
        self._request = request
        self._owned = owned  # closed by aclose()
        self._scope_lookup = scope_lookup  # async (token) -> scopes, for tokens that don't say
        self._required = normalize_scopes(required)
        self._margin = margin
        self._clock = clock
        self._checked = False
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"AdcCredentials({type(self._credentials).__name__})"

    def invalidate(self) -> None:
        """Forget the access token (after a 401), so the next ``token()`` refreshes."""
        with contextlib.suppress(AttributeError):  # a credentials type with a read-only token
            self._credentials.token = None

    __str__ = __repr__

    def _stale(self) -> bool:
        if not getattr(self._credentials, "token", None):
            return True
        expiry = getattr(self._credentials, "expiry", None)
        if not isinstance(expiry, datetime):
            return False
        if expiry.tzinfo is None:  # google-auth keeps naive UTC
            expiry = expiry.replace(tzinfo=timezone.utc)
        return expiry - self._margin <= self._clock()

    async def token(self) -> str:
        async with self._lock:
            if self._stale():
                try:
                    await asyncio.to_thread(self._credentials.refresh, self._request)
                except Exception as exc:  # noqa: BLE001 - google-auth's errors, translated here
                    raise SignInRequired(
                        f"refreshing Application Default Credentials failed "
                        f"({type(exc).__name__}); sign in again with: {gcloud_adc_command()}"
                    ) from None
            token = getattr(self._credentials, "token", None)
            if not isinstance(token, str) or not token:
                raise SignInRequired(
                    f"Application Default Credentials gave no token; run: {gcloud_adc_command()}"
                )
            if not self._checked:
                await self._check_scopes(token)
                self._checked = True
            return token

    async def _check_scopes(self, token: str) -> None:
        # What the token really carries: granted_scopes (set by google-auth's refresh), else
        # tokeninfo; ``scopes`` last, since for user credentials it is only what was asked for.
        granted = getattr(self._credentials, "granted_scopes", None)
        if not granted and self._scope_lookup is not None:
            try:
                granted = await self._scope_lookup(token)
            except AuthError as exc:  # advisory: Colab itself will refuse a token that lacks them
                log.warning("could not check the ADC token's scopes: %s", exc)
        if not granted:
            granted = getattr(self._credentials, "scopes", None)
        if not granted:
            log.debug("ADC scopes unknown; assuming they suffice")
            return
        lacking = missing_scopes(granted, self._required)
        if lacking:
            raise MissingScopes(
                "Application Default Credentials lack the scopes Colab needs (missing: "
                + ", ".join(lacking)
                + f"). Sign in again with:\n  {gcloud_adc_command()}",
                missing=lacking,
            )

    def use_tokeninfo(self, oauth: GoogleOAuth) -> None:
        """Ask ``oauth``'s tokeninfo endpoint for scopes the token does not state; closes it."""
        self._scope_lookup = oauth.token_scopes
        self._owned = oauth

    async def aclose(self) -> None:
        if self._owned is not None:
            await self._owned.aclose()


def load_adc(
    scopes: Iterable[str] = ADC_SCOPES,
    *,
    scope_lookup: Callable[[str], Any] | None = None,
) -> AdcCredentials:
    """Application Default Credentials through google-auth (imported only now).

    ``scope_lookup`` (async, token -> scopes) answers for tokens that do not say their scopes.
    """
    try:
        google_auth = importlib.import_module("google.auth")
        transport = importlib.import_module("google.auth.transport.requests")
    except ImportError:
        raise ConfigurationError(
            "Application Default Credentials need google-auth and requests: "
            "pip install google-auth requests"
        ) from None
    wanted = list(normalize_scopes(scopes))
    try:
        with warnings.catch_warnings():
            # User ADC without a quota project warns on every call; irrelevant to Colab.
            warnings.filterwarnings("ignore", message=".*quota project.*")
            credentials, _project = google_auth.default(scopes=wanted)
    except Exception as exc:  # noqa: BLE001 - DefaultCredentialsError and friends
        raise SignInRequired(
            f"no Application Default Credentials found ({type(exc).__name__}); "
            f"run: {gcloud_adc_command()}"
        ) from None
    if getattr(credentials, "requires_scopes", False):
        credentials = credentials.with_scopes(wanted)
    return AdcCredentials(credentials, transport.Request(), scope_lookup=scope_lookup)


# -- the ordered lookup --------------------------------------------------------------------------


@dataclass
class _Lookup:
    environ: Mapping[str, str]
    store: TokenStore | None
    oauth: GoogleOAuth | None
    use_adc: bool


def _from_environment(lookup: _Lookup) -> Credentials | None:
    token = lookup.environ.get("COLABREMOTE_ACCESS_TOKEN")
    return EnvironmentToken(token) if token else None


def _from_store(lookup: _Lookup) -> Credentials | None:
    store = lookup.store or TokenStore(environ=lookup.environ)
    stored = store.load()
    if stored is None or not (stored.refresh_token or stored.access_token):
        return None
    oauth = lookup.oauth
    owns = oauth is None
    if oauth is None:
        oauth = GoogleOAuth(store=store, environ=lookup.environ)
    return UserCredentials(oauth, stored, store=store, owns_oauth=owns)


def _from_adc(lookup: _Lookup) -> Credentials | None:
    if not lookup.use_adc:
        return None
    if lookup.oauth is not None:
        return load_adc(scope_lookup=lookup.oauth.token_scopes)
    adc = load_adc()
    adc.use_tokeninfo(GoogleOAuth(environ=lookup.environ))  # tokeninfo needs no OAuth client
    return adc


_CHECKERS: tuple[Callable[[_Lookup], Credentials | None], ...] = (
    _from_environment,
    _from_store,
    _from_adc,
)


def find_credentials(
    *,
    store: TokenStore | None = None,
    oauth: GoogleOAuth | None = None,
    use_adc: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """The first available of: ``COLABREMOTE_ACCESS_TOKEN``, the stored sign-in, ADC (when
    ``use_adc``). Raises SignInRequired when there is none."""
    lookup = _Lookup(os.environ if environ is None else environ, store, oauth, use_adc)
    for checker in _CHECKERS:
        found = checker(lookup)
        if found is not None:
            log.debug("Google credentials from %s", found.source)
            return found
    raise SignInRequired(
        "not signed in to Google: run `colabremote login` (or set COLABREMOTE_ACCESS_TOKEN, or "
        f"use Application Default Credentials after: {gcloud_adc_command()})"
    )
