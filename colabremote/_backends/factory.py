"""Backends from the names and options a Session is given, and the Google sign-in they use.

Credentials are looked up when the session opens (not when it is made), so constructing a
``Session(backend="colab")`` never prompts or reads the token store.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigurationError
from .base import Backend

if TYPE_CHECKING:  # imported when a session opens, not with the package
    from .._colab.auth import Credentials, GoogleOAuth

BACKENDS = ("local", "jupyter", "colab", "emulator")


def make_backend(backend: str | Backend, options: dict[str, Any]) -> Backend:
    """A backend from its name and the Session's keyword options."""
    if isinstance(backend, Backend):
        if options:
            raise ConfigurationError(
                f"options {sorted(options)} cannot be combined with a Backend instance"
            )
        return backend
    if backend == "local":
        from .local import LocalBackend

        allowed = {"python", "cwd"}
        _only(backend, options, allowed)
        return LocalBackend(**options)
    if backend == "jupyter":
        from .jupyter import JupyterBackend

        allowed = {"url", "token", "kernel_name", "kernel_id", "headers"}
        _only(backend, options, allowed)
        if "url" not in options:
            raise ConfigurationError(
                "backend='jupyter' needs url= (for example url='http://127.0.0.1:8888', "
                "token='...'), or set COLABREMOTE_URL"
            )
        return JupyterBackend(**options)
    if backend == "colab":
        from .colab import ColabBackend

        allowed = {
            "gpu",
            "tpu",
            "high_memory",
            "runtime_version",
            "endpoint",
            "release",
            "base_url",
            "credentials",
            "use_adc",
            "keep_alive_seconds",
            "assign_timeout",
            "api",
            "allow_credentials",
        }
        _only(backend, options, allowed)
        options = dict(options)
        base_url = options.pop("base_url", None) or os.environ.get("COLABREMOTE_BASE_URL") or None
        given = options.pop("credentials", None)
        use_adc = options.pop("use_adc", False)
        credentials = given if given is not None else _LazyCredentials(use_adc, base_url)
        endpoints = None
        if base_url is not None:
            from .._colab.endpoints import ColabEndpoints

            endpoints = ColabEndpoints.at(base_url)
        return ColabBackend(credentials=credentials, endpoints=endpoints, **options)
    if backend == "emulator":
        from ..testing._emulator.backend import EmulatorBackend

        _only(
            backend,
            options,
            {"gpu", "tpu", "high_memory", "runtime_version", "api", "allow_credentials"},
        )
        return EmulatorBackend(**options)
    raise ConfigurationError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")


class _LazyCredentials:
    """Google credentials found on first use (when the session opens, not when it is made)."""

    source = "lazy"

    def __init__(self, use_adc: bool, base_url: str | None) -> None:
        self._use_adc = use_adc
        self._base_url = base_url
        self._found: Credentials | None = None
        self._clients: list[GoogleOAuth] = []  # the sign-in clients made here, closed here

    def __repr__(self) -> str:
        return f"_LazyCredentials(found={self._found!r})"

    def _oauth(self) -> GoogleOAuth | None:
        """The sign-in service at ``base_url`` (None: Google's own)."""
        if self._base_url is None:
            return None
        from .._colab.auth import GoogleOAuth
        from .._colab.endpoints import ColabEndpoints

        ends = ColabEndpoints.at(self._base_url)
        oauth = GoogleOAuth(
            authorize_url=ends.oauth_authorize,
            token_url=ends.oauth_token,
            revoke_url=ends.oauth_revoke,
            userinfo_url=ends.userinfo,
        )
        self._clients.append(oauth)
        return oauth

    async def token(self) -> str:
        if self._found is None:
            from .._colab.auth import find_credentials

            self._found = find_credentials(oauth=self._oauth(), use_adc=self._use_adc)
        return await self._found.token()

    def fallback(self) -> Credentials | None:
        """Other credentials for when the environment's token stops working (it cannot be
        refreshed): the stored sign-in, or ADC when asked for; None when there are none."""
        if self._found is None or self._found.source != "environment":
            return None
        from .._colab.auth import find_credentials
        from ..exceptions import SignInRequired

        environ = {k: v for k, v in os.environ.items() if k != "COLABREMOTE_ACCESS_TOKEN"}
        try:
            return find_credentials(oauth=self._oauth(), use_adc=self._use_adc, environ=environ)
        except SignInRequired:
            return None

    def invalidate(self) -> None:
        """After a 401: drop the found credentials' access token."""
        if self._found is not None:
            self._found.invalidate()

    async def aclose(self) -> None:
        """Close what the found credentials and the sign-in clients made here hold open."""
        if self._found is not None:
            await self._found.aclose()
        for oauth in self._clients:
            await oauth.aclose()
        self._clients = []


def _only(backend: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigurationError(
            f"backend={backend!r} does not take {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(allowed))}"
        )
