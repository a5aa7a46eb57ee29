"""Google's OAuth endpoints and the scopes Colab needs, with the helpers that compare them."""

from __future__ import annotations

from collections.abc import Iterable

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
