"""The OAuth client colabremote signs in with: the user's own, from a file or the environment."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...exceptions import ConfigurationError
from ..tokens import default_config_dir
from .scopes import gcloud_adc_command

_SECRETS_FILE = "client_secrets.json"

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
    ) -> ClientConfig:
        """The first configured of: ``client_secrets``, ``COLABREMOTE_OAUTH_CLIENT_ID`` (+
        ``_SECRET``), ``COLABREMOTE_OAUTH_CLIENT_SECRETS``, ``<config dir>/client_secrets.json``.
        """
        env = os.environ if environ is None else environ
        if client_secrets is not None:
            return cls.from_file(client_secrets)
        if env.get("COLABREMOTE_OAUTH_CLIENT_ID"):
            return cls(
                env["COLABREMOTE_OAUTH_CLIENT_ID"],
                env.get("COLABREMOTE_OAUTH_CLIENT_SECRET") or None,
                "environment",
            )
        if env.get("COLABREMOTE_OAUTH_CLIENT_SECRETS"):
            return cls.from_file(env["COLABREMOTE_OAUTH_CLIENT_SECRETS"])
        directory = Path(config_dir) if config_dir is not None else default_config_dir(env)
        default = directory / _SECRETS_FILE
        if default.is_file():
            return cls.from_file(default)
        raise ConfigurationError(
            _NO_CLIENT_HELP.format(default=default, gcloud=gcloud_adc_command())
        )
