"""Signing in to Google for Colab: loopback + PKCE, paste-the-code, ADC, or a token from CI.

Async like the rest of the SDK: every network call goes through one ``httpx.AsyncClient``; the
blocking bits (opening a browser, reading a pasted code, google-auth's refresh) run in worker
threads so the event loop keeps serving the loopback redirect meanwhile.

Where credentials come from, in order (:func:`find_credentials`, in the style of google-auth's
``_default.py``):

1. ``COLABREMOTE_ACCESS_TOKEN``: an access token for CI, used as it is and never stored;
2. the record ``colabremote login`` stored (:mod:`..tokens`), refreshed when it nears expiry;
3. Application Default Credentials (google-auth, the ``[adc]`` extra): gcloud's file by default,
   wherever google-auth looks with ``use_adc=True``, never with ``use_adc=False``.

Everything is per origin (:mod:`..origin`): for a base URL other than Google's only that
origin's own stored sign-in and OAuth client are used, never Google's, never ADC, and nothing it
answers deletes a stored sign-in.

Each answer is a :class:`Credentials`: ``async def token() -> str`` refreshes when needed and
``invalidate()`` drops the access token after a 401. The modules, by concern: ``scopes``
(endpoints and scopes), ``client_config`` (the OAuth client), ``flow`` (PKCE, the loopback
listener, a pasted code), ``oauth`` (:class:`GoogleOAuth`), ``credentials`` (the base class and
its environment, user and ADC kinds) and ``lookup`` (:func:`find_credentials`).

colabremote ships no OAuth client: Google's are not ours to bundle. Users create a "Desktop app"
OAuth client in their Google Cloud project and point ``COLABREMOTE_OAUTH_CLIENT_SECRETS`` at its
JSON (or set ``COLABREMOTE_OAUTH_CLIENT_ID`` / ``COLABREMOTE_OAUTH_CLIENT_SECRET``, or copy the
file to ``<config dir>/client_secrets.json``). Whether Colab accepts tokens minted for a
third-party client is not known (colab-protocol.md §8.1); ADC from ``gcloud`` is known to work.

Tokens, the client secret, authorization codes and the PKCE verifier never appear in logs, reprs
or exception messages.
"""

from __future__ import annotations

from .client_config import ClientConfig, keep_client_file
from .credentials import (
    ADC_EXTRA,
    REFRESH_MARGIN,
    AdcCredentials,
    Credentials,
    EnvironmentToken,
    UserCredentials,
    adc_file,
    adc_installed,
    load_adc,
)
from .flow import AuthorizationRequest, make_pkce_pair, parse_pasted_code
from .lookup import find_credentials
from .oauth import LOGIN_TIMEOUT, GoogleOAuth, SignOut
from .scopes import (
    ADC_SCOPES,
    DEFAULT_AUTHORIZE_URL,
    DEFAULT_PASTE_REDIRECT_URI,
    DEFAULT_REVOKE_URL,
    DEFAULT_TOKEN_URL,
    DEFAULT_TOKENINFO_URL,
    DEFAULT_USERINFO_URL,
    REQUIRED_SCOPES,
    SCOPE_CLOUD_PLATFORM,
    SCOPE_COLAB,
    SCOPE_EMAIL,
    SCOPE_OPENID,
    SCOPE_PROFILE,
    SCOPE_USERINFO_EMAIL,
    SCOPE_USERINFO_PROFILE,
    gcloud_adc_command,
    missing_scopes,
    normalize_scopes,
)

__all__ = [
    "ADC_EXTRA",
    "ADC_SCOPES",
    "DEFAULT_AUTHORIZE_URL",
    "DEFAULT_PASTE_REDIRECT_URI",
    "DEFAULT_REVOKE_URL",
    "DEFAULT_TOKENINFO_URL",
    "DEFAULT_TOKEN_URL",
    "DEFAULT_USERINFO_URL",
    "LOGIN_TIMEOUT",
    "REFRESH_MARGIN",
    "REQUIRED_SCOPES",
    "SCOPE_CLOUD_PLATFORM",
    "SCOPE_COLAB",
    "SCOPE_EMAIL",
    "SCOPE_OPENID",
    "SCOPE_PROFILE",
    "SCOPE_USERINFO_EMAIL",
    "SCOPE_USERINFO_PROFILE",
    "AdcCredentials",
    "AuthorizationRequest",
    "ClientConfig",
    "Credentials",
    "EnvironmentToken",
    "GoogleOAuth",
    "SignOut",
    "UserCredentials",
    "adc_file",
    "adc_installed",
    "find_credentials",
    "gcloud_adc_command",
    "keep_client_file",
    "load_adc",
    "make_pkce_pair",
    "missing_scopes",
    "normalize_scopes",
    "parse_pasted_code",
]
