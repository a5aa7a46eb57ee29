"""Google's OAuth endpoints for one client: sign in, exchange, refresh, revoke, userinfo.

Every call goes through one ``httpx.AsyncClient``, the SDK's retry policy (token refreshes,
userinfo, tokeninfo and revocation are safe to repeat; a code exchange is not) and its HTTP error
mapping; the access token for userinfo travels through :class:`~colabremote._http.BearerAuth`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import secrets
import sys
import webbrowser
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from ..._http import BearerAuth, mapped_errors, scrub
from ..._retry import retrying
from ..._tls import verify_setting
from ...exceptions import (
    AuthError,
    ColabRemoteError,
    ConfigurationError,
    MissingScopes,
    OAuthError,
    SignInRequired,
)
from .._http import OwnsHttpClient
from ..endpoints import ColabEndpoints
from ..origin import PRODUCTION, Origin
from ..tokens import StoredCredentials, TokenStore
from .client_config import ClientConfig
from .flow import AuthorizationRequest, LoopbackReceiver, make_pkce_pair, parse_pasted_code
from .scopes import (
    DEFAULT_AUTHORIZE_URL,
    DEFAULT_PASTE_REDIRECT_URI,
    DEFAULT_REVOKE_URL,
    DEFAULT_TOKEN_URL,
    DEFAULT_TOKENINFO_URL,
    DEFAULT_USERINFO_URL,
    REQUIRED_SCOPES,
    missing_scopes,
    normalize_scopes,
)

__all__ = ["LOGIN_TIMEOUT", "GoogleOAuth", "SignOut"]

log = logging.getLogger("colabremote.auth")

LOGIN_TIMEOUT = 300.0  # seconds to wait for the browser (the extension's 60 s is short with 2FA)
_HTTP_TIMEOUT = 30.0
_SECRET_FIELDS = frozenset(
    {"code", "code_verifier", "client_secret", "refresh_token", "access_token", "token"}
)


def _auth_error(message: str, status: int | None) -> ColabRemoteError:
    return AuthError(message)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _log_browser_failure(future: asyncio.Future[object]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("opening the browser failed: %s", type(future.exception()).__name__)


@dataclass(frozen=True)
class SignOut:
    """What :meth:`GoogleOAuth.logout` did: the accounts it found, whether every grant was
    revoked, and the places (keyring, file) the record was removed from."""

    accounts: tuple[str, ...] = ()
    revoked: bool = False
    removed: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        return bool(self.removed)


class GoogleOAuth(OwnsHttpClient):
    """Google's OAuth endpoints for one client: sign in, exchange, refresh, revoke, userinfo.

    ``origin`` is whose endpoints these are (Google's by default); ``store`` must belong to the
    same origin, so a sign-in is never read from or written to another origin's record.
    """

    @classmethod
    def for_endpoints(
        cls,
        endpoints: ColabEndpoints,
        client: ClientConfig | None = None,
        **options: Any,
    ) -> GoogleOAuth:
        """The OAuth endpoints (and origin) of ``endpoints``: Google's, or an emulator's."""
        return cls(
            client,
            authorize_url=endpoints.oauth_authorize,
            token_url=endpoints.oauth_token,
            revoke_url=endpoints.oauth_revoke,
            userinfo_url=endpoints.userinfo,
            origin=endpoints.origin,
            **options,
        )

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
        origin: Origin = PRODUCTION,
    ) -> None:
        if store is not None and store.origin != origin:
            raise ConfigurationError(
                f"the token store for {store.origin} cannot hold a sign-in for {origin}"
            )
        self._client = client
        self._environ = environ
        self.origin = origin
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
            self._client = ClientConfig.load(
                environ=self._environ, config_dir=config_dir, origin=self.origin
            )
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
        raises ends the sign-in. It is given the listener's start URL, which redirects to the
        authorization URL, so state and PKCE challenge stay off command lines. Stores the
        result in ``self.store`` unless ``save=False``.
        """
        receiver = LoopbackReceiver()
        redirect_uri = await receiver.start()
        browser: asyncio.Future[object] | None = None
        try:
            request = self.authorization_request(
                redirect_uri, consent=consent, login_hint=login_hint
            )
            start_url = receiver.expect(request.state, request.url)
            announce(f"Sign in to Google in your browser; if it does not open, visit:\n{start_url}")
            if open_browser is not None:
                browser = asyncio.ensure_future(asyncio.to_thread(open_browser, start_url))
            code = await self._wait_for_code(receiver, browser, timeout)
            credentials = await self.exchange_code(
                code, redirect_uri=request.redirect_uri, verifier=request.verifier
            )
            receiver.conclude(credentials.account or "an unknown account")
        finally:
            receiver.conclude(None)  # the page says so when the exchange failed
            await receiver.close()
            if browser is not None:  # a failure after we stopped waiting is only logged
                browser.add_done_callback(_log_browser_failure)
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
        receiver: LoopbackReceiver,
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
                response.raise_for_status()  # for the retry policy; mapped to AuthError below
            return response

        where = f"the Google sign-in service at {urlsplit(url).netloc}"
        hide = tuple(value for key, value in data.items() if key in _SECRET_FIELDS)
        with mapped_errors(doing, where=where, error=_auth_error, hide=hide):
            return await (retrying(once, what=doing, attempts=3) if retry else once())
        raise AssertionError("unreachable")  # pragma: no cover

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
        return OAuthError(scrub(text, secret, *hide), error=error)

    @staticmethod
    def _expiry(body: Mapping[str, Any]) -> datetime | None:
        expires_in = body.get("expires_in")
        if isinstance(expires_in, (int, float)) or (
            isinstance(expires_in, str) and expires_in.isdigit()
        ):
            return datetime.now(timezone.utc) + timedelta(seconds=float(expires_in))
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
        bearer = BearerAuth(access_token, retry_on_401=False)

        async def once() -> httpx.Response:
            response = await self._http.get(self.userinfo_url, auth=bearer)
            if response.status_code >= 500 or response.status_code == 429:
                response.raise_for_status()  # for the retry policy; mapped to AuthError below
            return response

        doing = "reading the Google account's e-mail address"
        where = f"Google's userinfo endpoint at {urlsplit(self.userinfo_url).netloc}"
        with mapped_errors(doing, where=where, error=_auth_error, hide=(access_token,)):
            response = await retrying(once, what=doing, attempts=3)
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
            log.warning("could not revoke the token at %s: %s", self.origin, exc)
            return False
        if response.status_code != 200:
            log.warning("%s did not revoke the token (HTTP %s)", self.origin, response.status_code)
            return False
        return True

    async def logout(self) -> SignOut:
        """Revoke, then forget, the stored sign-in: in the keyring and in the file alike.

        Each stored grant is revoked first (its refresh token, else its access token); the
        records are deleted even when revoking fails (``revoked`` says so), since the user asked
        this machine to forget them. Nothing stored: an empty :class:`SignOut`.
        """
        if self.store is None:
            return SignOut()
        found = self.store.load_everywhere()
        accounts = tuple(dict.fromkeys(r.account for _, r in found if r.account))
        tokens = dict.fromkeys(
            token for _, r in found if (token := r.refresh_token or r.access_token)
        )
        revoked = True
        for token in tokens:
            revoked = await self.revoke(token) and revoked
        removed = self.store.delete_everywhere()
        return SignOut(accounts, revoked and bool(tokens), tuple(removed))
