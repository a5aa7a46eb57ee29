"""Where each of Colab's services lives: production hosts, or one origin (the emulator).

Colab spreads its protocol over several hosts (the Colab web domain for ``/tun/m``, a private
Google API domain, the public v1beta API, and Google's OAuth endpoints). Every client takes a
:class:`ColabEndpoints`, so tests and the emulator can point all of them elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .origin import PRODUCTION, Origin

__all__ = ["ColabEndpoints"]


@dataclass(frozen=True)
class ColabEndpoints:
    """Base URLs (no trailing slash) of the Colab services, and full URLs of the OAuth ones.

    ``colab`` serves ``/tun/m/...`` and ``/vscode/...``; ``gapi`` serves ``/v1/...`` (the private
    API); ``public`` serves ``/v1beta/...`` and ``/v1/operations``. ``origin`` says whose they
    are, and so which stored sign-in may be sent to them.
    """

    colab: str
    gapi: str
    public: str
    oauth_authorize: str
    oauth_token: str
    oauth_revoke: str
    userinfo: str
    origin: Origin = field(default=PRODUCTION)

    @classmethod
    def production(cls) -> ColabEndpoints:
        """The real Google services."""
        return cls(
            colab="https://colab.research.google.com",
            gapi="https://colab.pa.googleapis.com",
            public="https://colaboratory.googleapis.com",
            oauth_authorize="https://accounts.google.com/o/oauth2/v2/auth",
            oauth_token="https://oauth2.googleapis.com/token",  # noqa: S106 (a URL)
            oauth_revoke="https://oauth2.googleapis.com/revoke",
            userinfo="https://www.googleapis.com/oauth2/v2/userinfo",
        )

    @classmethod
    def at(cls, base_url: str, *, setting: str = "base_url") -> ColabEndpoints:
        """Every service served from one origin, as :class:`colabremote.testing` emulators do.

        ``setting`` names where the URL came from, for the error when it is refused (plain
        http is accepted only to a loopback address; see :class:`~.origin.Origin`).
        """
        origin = Origin.of(base_url, setting=setting)
        base = base_url.strip().rstrip("/")
        return cls(
            colab=base,
            gapi=base,
            public=base,
            oauth_authorize=f"{base}/o/oauth2/v2/auth",
            oauth_token=f"{base}/token",
            oauth_revoke=f"{base}/revoke",
            userinfo=f"{base}/oauth2/v2/userinfo",
            origin=origin,
        )
