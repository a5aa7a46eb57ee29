"""Where credentials come from, in order, each source a small function (google-auth's
``_default.py`` style): the environment, the stored sign-in, then ADC when asked for."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ...exceptions import SignInRequired
from ..tokens import TokenStore
from .credentials import Credentials, EnvironmentToken, UserCredentials, load_adc
from .oauth import GoogleOAuth
from .scopes import gcloud_adc_command

__all__ = ["find_credentials"]

log = logging.getLogger("colabremote.auth")


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
