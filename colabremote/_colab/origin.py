"""Whose services a base URL names, and so which sign-in belongs to it.

Google's own services are the *production* origin: the stored sign-in, Application Default
Credentials and the configured OAuth client belong there and nowhere else. Any other base URL
(an emulator, a proxy) is an origin of its own: it gets its own keyring entry and files, so a
token meant for Google is never sent to it, and nothing it answers can delete Google's sign-in.
Plain ``http`` is accepted only for this machine's loopback addresses.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..exceptions import ConfigurationError

__all__ = ["PRODUCTION", "Origin", "is_loopback_host"]

_UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9.-]+")


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is this machine: ``localhost``, 127.0.0.0/8 or ::1."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Origin:
    """Google's services (``url`` is ``None``) or one other ``scheme://host:port``."""

    url: str | None = None

    @classmethod
    def of(cls, base_url: str, *, setting: str = "base_url") -> Origin:
        """The origin of a base URL the user gave through ``setting`` (named in errors).

        Refuses anything but an http(s) URL without user info, query or fragment, and plain
        http to anywhere but a loopback address: tokens would cross the network readable.
        """
        parts = urlsplit(base_url.strip())
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            raise ConfigurationError(
                f"{setting} is not an http(s) URL; use one like 'http://127.0.0.1:8765'"
            )
        if parts.username is not None or parts.password is not None:
            raise ConfigurationError(f"{setting} must not carry a user name or password")
        if parts.query or parts.fragment:
            raise ConfigurationError(f"{setting} must not carry a query string or fragment")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ConfigurationError(f"{setting} has an invalid port") from None
        if parts.scheme == "http" and not is_loopback_host(host):
            raise ConfigurationError(
                f"{setting} uses plain http to {host}, which is not this machine: tokens would "
                "cross the network unencrypted. Use https://, or a loopback address "
                "(127.0.0.1, ::1, localhost)"
            )
        shown = f"[{host}]" if ":" in host else host
        return cls(f"{parts.scheme}://{shown}:{port}")

    @property
    def is_production(self) -> bool:
        return self.url is None

    @property
    def label(self) -> str:
        """A file-name-safe name, unique per origin (``""`` for production): the readable
        host and port, plus a short hash so two origins never share one."""
        if self.url is None:
            return ""
        readable = _UNSAFE_IN_NAMES.sub("_", self.url.split("://", 1)[1]).strip("_")
        digest = hashlib.sha256(self.url.encode("utf-8")).hexdigest()[:10]
        return f"{readable}-{digest}"

    def __str__(self) -> str:
        return self.url or "Google"


PRODUCTION = Origin()
