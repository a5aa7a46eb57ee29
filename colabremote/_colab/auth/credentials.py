"""Google credentials: where access tokens come from, and when they are refreshed.

:class:`Credentials` owns the cached access token, its expiry, the refresh margin, the lock that
lets one refresh run at a time, and :meth:`~Credentials.invalidate`. Each kind implements only
``_refresh``: :class:`EnvironmentToken` (a ready token from CI), :class:`UserCredentials` (the
sign-in ``colabremote login`` stored) and :class:`AdcCredentials` (google-auth's ADC).
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..._http import clean_token
from ...exceptions import AuthError, ConfigurationError, MissingScopes, SignInRequired
from ..tokens import StoredCredentials, TokenStore
from .oauth import GoogleOAuth
from .scopes import (
    ADC_SCOPES,
    SCOPE_COLAB,
    SCOPE_USERINFO_EMAIL,
    gcloud_adc_command,
    missing_scopes,
    normalize_scopes,
)

__all__ = [
    "REFRESH_MARGIN",
    "AdcCredentials",
    "Credentials",
    "EnvironmentToken",
    "UserCredentials",
    "adc_file",
    "adc_installed",
    "load_adc",
]

ADC_EXTRA = 'pip install "colabremote[adc]"'  # google-auth and requests

log = logging.getLogger("colabremote.auth")

REFRESH_MARGIN = timedelta(minutes=5)  # refresh this long before expiry (colab-protocol.md §2.6)
_ADC_REQUIRED = normalize_scopes([SCOPE_USERINFO_EMAIL, SCOPE_COLAB])


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Credentials(abc.ABC):
    """A source of Google access tokens: ``token()`` returns the cached one, refreshing it first
    when it is missing or within ``margin`` of its expiry (``None``: it does not expire).

    One refresh runs at a time (an ``asyncio.Lock``: use one event loop, as the SDK does);
    callers that queued behind it get its token. Subclasses implement only :meth:`_refresh`.
    """

    source: str = "unknown"  # where the credentials came from, for logs: never a secret

    def __init__(
        self, *, margin: timedelta = REFRESH_MARGIN, clock: Callable[[], datetime] = _utcnow
    ) -> None:
        self._margin = margin
        self._clock = clock
        self._token: str | None = None
        self._expiry: datetime | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(source={self.source!r})"

    def _cached(self) -> str | None:
        """The cached token while it is good for longer than the margin."""
        if not self._token:
            return None
        if self._expiry is not None and self._expiry - self._margin <= self._clock():
            return None
        return self._token

    async def token(self) -> str:
        """A valid access token, refreshed if needed."""
        token = self._cached()
        if token is not None:
            return token
        async with self._lock:
            token = self._cached()  # another caller may have refreshed meanwhile
            if token is None:
                token, self._expiry = await self._refresh()
                self._token = token
            return token

    def invalidate(self) -> None:
        """Forget the access token (after a 401), so the next ``token()`` refreshes.

        A token can stop working before its stated expiry (revoked, a password change).
        """
        self._token = None

    @abc.abstractmethod
    async def _refresh(self) -> tuple[str, datetime | None]:
        """A new access token and its expiry (timezone-aware; ``None``: unknown)."""

    async def aclose(self) -> None:
        """Release what the credentials hold open (an HTTP client); nothing by default."""
        return None


class EnvironmentToken(Credentials):
    """A ready access token, e.g. ``COLABREMOTE_ACCESS_TOKEN`` in CI: used as is, never stored.

    Surrounding white space is dropped; white space or control characters inside it are a
    ConfigurationError that does not show the token.
    """

    source = "given"  # "environment" when read from the variable: errors then name it

    def __init__(
        self,
        token: str,
        *,
        what: str = "COLABREMOTE_ACCESS_TOKEN",
        from_environment: bool = False,
    ) -> None:
        given = clean_token(token, what=what)
        if not given:
            raise ConfigurationError(f"{what} is empty")
        super().__init__()
        if from_environment:
            self.source = "environment"
        self._given = given
        self._token = self._given

    def __repr__(self) -> str:
        return "EnvironmentToken(<hidden>)"

    __str__ = __repr__

    async def _refresh(self) -> tuple[str, datetime | None]:
        return self._given, None  # nothing to refresh it from: the same token again


class UserCredentials(Credentials):
    """A stored sign-in, refreshed through ``oauth`` shortly before it expires; the refreshed
    record is saved to ``store``, and forgotten there when Google says it is revoked.

    Only Google itself can make a sign-in be forgotten: a refusal from any other origin (an
    emulator, whatever answers at a base URL) drops the access token in memory, nothing stored.
    """

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
        if store is not None and store.origin != oauth.origin:
            raise ConfigurationError(
                f"a sign-in stored for {store.origin} cannot be used with {oauth.origin}"
            )
        super().__init__(margin=margin, clock=clock)
        self._oauth = oauth
        self._credentials = credentials
        self._store = store
        self._owns_oauth = owns_oauth
        if credentials.access_token and credentials.expiry is not None:
            self._token, self._expiry = credentials.access_token, credentials.expiry

    def __repr__(self) -> str:
        return f"UserCredentials(account={self._credentials.account!r})"

    __str__ = __repr__

    @property
    def account(self) -> str | None:
        return self._credentials.account

    @property
    def credentials(self) -> StoredCredentials:
        return self._credentials

    async def _refresh(self) -> tuple[str, datetime | None]:
        try:
            updated = await self._oauth.refresh(self._credentials)
        except SignInRequired:
            if self._store is not None and self._store.origin.is_production:
                self._store.delete()
            raise
        self._credentials = updated
        if self._store is not None:
            try:
                self._store.save(updated)
            except (ConfigurationError, OSError) as exc:
                log.warning("could not store the refreshed token: %s", exc)
        assert updated.access_token is not None  # GoogleOAuth.refresh raises without one
        return updated.access_token, updated.expiry

    async def aclose(self) -> None:
        if self._owns_oauth:
            await self._oauth.aclose()


class AdcCredentials(Credentials):
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
        super().__init__(margin=margin, clock=clock)
        self._credentials = credentials
        self._request = request
        self._owned = owned  # closed by aclose()
        self._scope_lookup = scope_lookup  # async (token) -> scopes, for tokens that don't say
        self._required = normalize_scopes(required)
        self._checked = False

    def __repr__(self) -> str:
        return f"AdcCredentials({type(self._credentials).__name__})"

    __str__ = __repr__

    def _google_expiry(self) -> datetime | None:
        expiry = getattr(self._credentials, "expiry", None)
        if not isinstance(expiry, datetime):
            return None
        return expiry.replace(tzinfo=timezone.utc) if expiry.tzinfo is None else expiry  # naive UTC

    def _google_stale(self) -> bool:
        if not getattr(self._credentials, "token", None):
            return True
        expiry = self._google_expiry()
        return expiry is not None and expiry - self._margin <= self._clock()

    async def _refresh(self) -> tuple[str, datetime | None]:
        # The first time, a token google-auth already holds is used if it is fresh; later this
        # runs only for a stale or refused token, which google-auth must replace.
        if self._checked or self._google_stale():
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
        return token, self._google_expiry()

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


def adc_installed() -> bool:
    """Whether google-auth (the ``[adc]`` extra) can be imported."""
    try:
        importlib.import_module("google.auth")
        importlib.import_module("google.auth.transport.requests")
    except ImportError:
        return False
    return True


def adc_file(environ: Mapping[str, str]) -> Path | None:
    """The ADC file on this machine: ``GOOGLE_APPLICATION_CREDENTIALS``, else the one
    ``gcloud auth application-default login`` writes (``None``: neither exists).

    ``google.auth.default()`` reads this file first when it exists; when it does not, default()
    would go on to probe the GCE metadata server: on a laptop, seconds of timeouts.
    """
    named = environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if named:
        return Path(named) if Path(named).is_file() else None
    config = environ.get("CLOUDSDK_CONFIG")
    if not config:
        appdata = environ.get("APPDATA")
        if sys.platform == "win32" and appdata:
            config = os.path.join(appdata, "gcloud")
        else:
            config = os.path.join(os.path.expanduser("~"), ".config", "gcloud")
    found = Path(config) / "application_default_credentials.json"
    return found if found.is_file() else None


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
            f"Application Default Credentials need google-auth and requests: {ADC_EXTRA}"
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
