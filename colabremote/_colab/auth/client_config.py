"""The OAuth client colabremote signs in with: the user's own, from a file or the environment.

The client configured for Google (the variables and ``client_secrets.json``) is used only for
Google's origin; another base URL uses only a client given for it, or the copy that
``colabremote --base-url URL login --client-secrets FILE`` kept for that origin.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...exceptions import ConfigurationError
from ..origin import PRODUCTION, Origin
from ..tokens import default_config_dir, write_private_file
from .scopes import gcloud_adc_command

_SECRETS_FILE = "client_secrets.json"
_MAX_CLIENT_FILE = 1 << 20  # Google's client files are a few hundred bytes

_NO_CLIENT_HELP = (
    "No Google OAuth client is configured. colabremote does not ship Google's credentials; "
    "create your own: in the Google Cloud console open APIs & Services > Credentials > "
    "Create credentials > OAuth client ID, choose application type 'Desktop app', download the "
    "JSON and set COLABREMOTE_OAUTH_CLIENT_SECRETS=/path/to/client_secret.json (or copy it to "
    "{default}, or set COLABREMOTE_OAUTH_CLIENT_ID and COLABREMOTE_OAUTH_CLIENT_SECRET). "
    "To use gcloud's Application Default Credentials instead run: {gcloud}"
)


@dataclass(frozen=True)
class ClientConfig:
    """An OAuth client: id and secret. The secret never shows in its repr."""

    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    source: str = "arguments"

    def __repr__(self) -> str:
        secret = "<set>" if self.client_secret else None
        return (
            f"ClientConfig(client_id={self.client_id!r}, client_secret={secret}, "
            f"source={self.source!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "mapping") -> ClientConfig:
        """From Google's client JSON: ``{"installed": {...}}`` or ``{"web": {...}}``."""
        section = data.get("installed") or data.get("web")
        if not isinstance(section, Mapping):
            raise ConfigurationError(
                f"{source} is not a Google OAuth client file: expected a top-level 'installed' "
                "(Desktop app) or 'web' object, as downloaded from the Google Cloud console"
            )
        client_id = section.get("client_id")
        client_secret = section.get("client_secret")
        if not isinstance(client_id, str) or not client_id:
            raise ConfigurationError(f"{source} has no client_id")
        if client_secret is not None and not isinstance(client_secret, str):
            raise ConfigurationError(f"{source} has a client_secret that is not a string")
        return cls(client_id, client_secret or None, source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ClientConfig:
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"OAuth client file {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"OAuth client file {path} is unreadable ({type(exc).__name__})"
            ) from None
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"OAuth client file {path} does not hold a JSON object")
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def load(
        cls,
        client_secrets: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        config_dir: str | os.PathLike[str] | None = None,
        origin: Origin = PRODUCTION,
    ) -> ClientConfig:
        """The first configured of: ``client_secrets``, ``COLABREMOTE_OAUTH_CLIENT_ID`` (+
        ``_SECRET``), ``COLABREMOTE_OAUTH_CLIENT_SECRETS``, ``<config dir>/client_secrets.json``.

        For any ``origin`` but Google's: ``client_secrets``, else that origin's own copy.
        """
        env = os.environ if environ is None else environ
        if client_secrets is not None:
            return cls.from_file(client_secrets)
        directory = Path(config_dir) if config_dir is not None else default_config_dir(env)
        if not origin.is_production:
            kept = directory / client_file_name(origin)
            if kept.is_file():
                return cls.from_file(kept)
            raise ConfigurationError(
                f"no OAuth client is configured for {origin}: run `colabremote login "
                f"--client-secrets FILE` with --base-url {origin.url}. The client configured "
                "for Google is never sent to another origin"
            )
        if env.get("COLABREMOTE_OAUTH_CLIENT_ID"):
            return cls(
                env["COLABREMOTE_OAUTH_CLIENT_ID"],
                env.get("COLABREMOTE_OAUTH_CLIENT_SECRET") or None,
                "environment",
            )
        if env.get("COLABREMOTE_OAUTH_CLIENT_SECRETS"):
            return cls.from_file(env["COLABREMOTE_OAUTH_CLIENT_SECRETS"])
        default = directory / _SECRETS_FILE
        if default.is_file():
            return cls.from_file(default)
        raise ConfigurationError(
            _NO_CLIENT_HELP.format(default=default, gcloud=gcloud_adc_command())
        )


def client_file_name(origin: Origin) -> str:
    """The name of the kept copy of the OAuth client file for ``origin``."""
    return _SECRETS_FILE if origin.is_production else f"client_secrets-{origin.label}.json"


def keep_client_file(
    source: str | os.PathLike[str], config_dir: Path, origin: Origin = PRODUCTION
) -> tuple[ClientConfig, Path]:
    """Copy an OAuth client file into ``config_dir`` for ``origin``, so tokens can be refreshed
    later: checked first, written 0600 from the start, atomically. A symbolic link is refused
    (the copy would be of whatever it points at when read)."""
    path = Path(source).expanduser()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ConfigurationError(f"OAuth client file {path} does not exist") from None
    except OSError as exc:
        if path.is_symlink():
            raise ConfigurationError(
                f"OAuth client file {path} is a symbolic link; give the file itself"
            ) from None
        raise ConfigurationError(
            f"OAuth client file {path} is unreadable ({exc.strerror})"
        ) from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ConfigurationError(f"OAuth client file {path} is not a regular file")
        data = handle.read(_MAX_CLIENT_FILE + 1)
    if len(data) > _MAX_CLIENT_FILE:
        raise ConfigurationError(f"OAuth client file {path} is too large to be one")
    try:
        parsed = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise ConfigurationError(
            f"OAuth client file {path} is unreadable ({type(exc).__name__})"
        ) from None
    if not isinstance(parsed, Mapping):
        raise ConfigurationError(f"OAuth client file {path} does not hold a JSON object")
    config = ClientConfig.from_mapping(parsed, source=str(path))
    target = config_dir / client_file_name(origin)
    write_private_file(target, data)
    return config, target
