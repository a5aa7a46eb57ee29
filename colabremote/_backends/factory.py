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
    from .._colab.endpoints import ColabEndpoints

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
        endpoints = _endpoints(options.pop("base_url", None))
        given = options.pop("credentials", None)
        use_adc = options.pop("use_adc", None)
        credentials = given if given is not None else _LazyCredentials(use_adc, endpoints)
        return ColabBackend(credentials=credentials, endpoints=endpoints, **options)
    if backend == "emulator":
        from ..testing._extra import require_emulator_extra

        require_emulator_extra('backend="emulator"')
        from ..testing._emulator.backend import EmulatorBackend

        _only(
            backend,
            options,
            {
                "gpu",
                "tpu",
                "high_memory",
                "runtime_version",
                "api",
                "allow_credentials",
                "python",
            },
        )
        return EmulatorBackend(**options)
    raise ConfigurationError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")


def _endpoints(base_url: str | None) -> ColabEndpoints | None:
    """The endpoints at ``base_url=`` or ``COLABREMOTE_BASE_URL`` (checked now, naming the
    one that was set); ``None``: Google's."""
    from .._colab.endpoints import ColabEndpoints

    from_env = os.environ.get("COLABREMOTE_BASE_URL") or None
    url = base_url or from_env
    if url is None:
        return None
    # The default session passes the variable's value as base_url=: name the variable then.
    setting = "COLABREMOTE_BASE_URL" if url == from_env else "base_url="
    return ColabEndpoints.at(url, setting=setting)


class _LazyCredentials:
    """Google credentials found on first use (when the session opens, not when it is made),
    for the origin of ``endpoints`` (``None``: Google's)."""

    def __init__(self, use_adc: bool | None, endpoints: ColabEndpoints | None) -> None:
        self._use_adc = use_adc
        self._endpoints = endpoints
        self._found: Credentials | None = None
        self._clients: list[GoogleOAuth] = []  # the sign-in clients made here, closed here

    def __repr__(self) -> str:
        return f"_LazyCredentials(found={self._found!r})"

    def _oauth(self) -> GoogleOAuth | None:
        """The sign-in service of a base URL's own origin, with that origin's own token store
        (None: Google's own)."""
        if self._endpoints is None:
            return None
        from .._colab.auth import GoogleOAuth
        from .._colab.tokens import TokenStore

        store = TokenStore(origin=self._endpoints.origin)
        oauth = GoogleOAuth.for_endpoints(self._endpoints, store=store)
        self._clients.append(oauth)
        return oauth

    @property
    def source(self) -> str:
        return self._found.source if self._found is not None else "lazy"

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
