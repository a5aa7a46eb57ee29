"""Where credentials come from, in order, each source a small function (google-auth's
``_default.py`` style): the environment, the stored sign-in, then ADC (gcloud's file by default).

Per origin: Google's stored sign-in and ADC are only ever used for Google's own services. For
any other base URL only that origin's own stored sign-in is read. ``COLABREMOTE_ACCESS_TOKEN`` is
used for whichever origin the session talks to: the user put it there for this run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ...exceptions import ConfigurationError, SignInRequired
from ..origin import PRODUCTION, Origin
from ..tokens import TokenStore
from .credentials import (
    ADC_EXTRA,
    Credentials,
    EnvironmentToken,
    UserCredentials,
    adc_file,
    adc_installed,
    load_adc,
)
from .oauth import GoogleOAuth
from .scopes import gcloud_adc_command

__all__ = ["find_credentials"]

log = logging.getLogger("colabremote.auth")


@dataclass
class _Lookup:
    environ: Mapping[str, str]
    store: TokenStore | None
    oauth: GoogleOAuth | None
    use_adc: bool | None
    origin: Origin


def _from_environment(lookup: _Lookup) -> Credentials | None:
    token = lookup.environ.get("COLABREMOTE_ACCESS_TOKEN")
    return EnvironmentToken(token, from_environment=True) if token else None


def _from_store(lookup: _Lookup) -> Credentials | None:
    store = lookup.store or TokenStore(environ=lookup.environ, origin=lookup.origin)
    stored = store.load()
    if stored is None or not (stored.refresh_token or stored.access_token):
        return None
    oauth = lookup.oauth
    owns = oauth is None
    if oauth is None:
        oauth = GoogleOAuth(store=store, environ=lookup.environ)
    return UserCredentials(oauth, stored, store=store, owns_oauth=owns)


def _from_adc(lookup: _Lookup) -> Credentials | None:
    if lookup.use_adc is False or not lookup.origin.is_production:
        return None  # ADC are Google's: never sent to another origin
    if lookup.use_adc is None:  # by default only gcloud's file, so nothing probes the network
        if adc_file(lookup.environ) is None:
            return None
        if not adc_installed():
            return None  # the final SignInRequired names the [adc] extra
    scope_lookup = lookup.oauth.token_scopes if lookup.oauth is not None else None
    adc = load_adc(scope_lookup=scope_lookup)
    if lookup.oauth is None:
        adc.use_tokeninfo(GoogleOAuth(environ=lookup.environ))  # tokeninfo needs no OAuth client
    return adc


_CHECKERS: tuple[Callable[[_Lookup], Credentials | None], ...] = (
    _from_environment,
    _from_store,
    _from_adc,
)


def _origin_of(store: TokenStore | None, oauth: GoogleOAuth | None) -> Origin:
    """The one origin ``store`` and ``oauth`` belong to (Google's when neither is given)."""
    origins = {o.origin for o in (store, oauth) if o is not None}
    if len(origins) > 1:
        raise ConfigurationError("the token store and the OAuth endpoints belong to two origins")
    origin = origins.pop() if origins else PRODUCTION
    if oauth is None and not origin.is_production:
        raise ConfigurationError(f"credentials for {origin} need its OAuth endpoints (oauth=)")
    return origin


def find_credentials(
    *,
    store: TokenStore | None = None,
    oauth: GoogleOAuth | None = None,
    use_adc: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """The first available of: ``COLABREMOTE_ACCESS_TOKEN``, the stored sign-in, ADC, for the
    origin of ``oauth`` / ``store`` (Google's by default; for another origin never Google's
    stored sign-in nor ADC). Raises SignInRequired when there is none.

    ``use_adc``: ``None`` looks for gcloud's ADC file (or ``GOOGLE_APPLICATION_CREDENTIALS``);
    ``True`` asks google-auth wherever it looks (the GCE metadata server too); ``False`` never.
    """
    origin = _origin_of(store, oauth)
    lookup = _Lookup(os.environ if environ is None else environ, store, oauth, use_adc, origin)
    for checker in _CHECKERS:
        found = checker(lookup)
        if found is not None:
            log.debug("credentials for %s from %s", origin, found.source)
            return found
    if not origin.is_production:
        raise SignInRequired(
            f"not signed in to {origin}: run `colabremote login` with --base-url {origin.url} "
            "(or set COLABREMOTE_ACCESS_TOKEN). Your Google sign-in and Application Default "
            "Credentials are never sent to another origin"
        )
    extra = "" if adc_installed() else f"\n  (first {ADC_EXTRA}, for google-auth)"
    raise SignInRequired(
        "not signed in to Google. Sign in with gcloud's Application Default Credentials:\n"
        f"  {gcloud_adc_command()}{extra}\n"
        "or run `colabremote login` with your own OAuth client (--client-secrets), or set "
        "COLABREMOTE_ACCESS_TOKEN. See docs/auth.md"
    )
