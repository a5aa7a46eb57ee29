"""Where Google sign-in credentials are kept: the OS keyring, or else a private file.

A :class:`StoredCredentials` record (refresh token, last access token, expiry, scopes, account,
OAuth client id) is kept by a :class:`TokenStore`:

* in the OS keyring when a real, encrypting backend is available (macOS Keychain, Windows
  Credential Locker, Secret Service, KWallet). Backends that only pretend (``fail``, ``null``)
  or that write plain text (keyrings.alt's ``PlaintextKeyring`` and its relatives) are never used;
* otherwise in ``credentials.json`` (mode 0600) inside the config directory (mode 0700):
  ``$COLABREMOTE_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/colabremote``, else
  ``~/.config/colabremote``. Writes are atomic: a temporary file in the same directory, fsync,
  then ``os.replace``, so a crash leaves either the old record or the new one, never half of one.

``COLABREMOTE_TOKEN_STORE=file|keyring|auto`` (or the ``backend`` argument) chooses explicitly;
tests use ``backend="file"``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from ..exceptions import ConfigurationError

__all__ = [
    "KEYRING_SERVICE",
    "KEYRING_USERNAME",
    "StoredCredentials",
    "TokenStore",
    "default_config_dir",
    "is_secure_keyring",
]

log = logging.getLogger("colabremote.auth")

KEYRING_SERVICE = "colabremote"
KEYRING_USERNAME = "google-oauth"
CREDENTIALS_FILE = "credentials.json"
_FORMAT_VERSION = 1

BackendChoice = Literal["auto", "keyring", "file"]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _format_time(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class StoredCredentials:
    """What a Google sign-in leaves behind. Its repr and str never show the tokens."""

    client_id: str
    refresh_token: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    expiry: datetime | None = None  # when access_token stops working (UTC)
    scopes: tuple[str, ...] = ()
    account: str | None = None  # the account's e-mail address

    def __repr__(self) -> str:
        return (
            f"StoredCredentials(account={self.account!r}, client_id={self.client_id!r}, "
            f"scopes={self.scopes!r}, expiry={self.expiry!r}, "
            f"refresh_token={'<set>' if self.refresh_token else None}, "
            f"access_token={'<set>' if self.access_token else None})"
        )

    __str__ = __repr__

    def expires_within(self, margin: timedelta, *, now: datetime | None = None) -> bool:
        """Whether the access token is missing, of unknown age, or expires within ``margin``."""
        if not self.access_token or self.expiry is None:
            return True
        return self.expiry - margin <= (now or _utcnow())

    def with_token(
        self, access_token: str, expiry: datetime | None, scopes: tuple[str, ...] | None = None
    ) -> StoredCredentials:
        """A copy carrying a new access token (after a refresh)."""
        return replace(
            self,
            access_token=access_token,
            expiry=expiry,
            scopes=self.scopes if scopes is None else scopes,
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": _FORMAT_VERSION,
            "client_id": self.client_id,
            "refresh_token": self.refresh_token,
            "access_token": self.access_token,
            "expiry": _format_time(self.expiry) if self.expiry else None,
            "scopes": list(self.scopes),
            "account": self.account,
        }
        return {key: value for key, value in data.items() if value is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoredCredentials:
        try:
            client_id = data["client_id"]
            scopes = data.get("scopes", [])
            expiry = data.get("expiry")
            if not isinstance(client_id, str) or not isinstance(scopes, list):
                raise TypeError("client_id must be a string and scopes a list")
            return cls(
                client_id=client_id,
                refresh_token=_optional_str(data.get("refresh_token")),
                access_token=_optional_str(data.get("access_token")),
                expiry=_parse_time(expiry) if isinstance(expiry, str) else None,
                scopes=tuple(str(scope) for scope in scopes),
                account=_optional_str(data.get("account")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            # The message names the problem, never the values (they include tokens).
            raise ConfigurationError(
                f"the stored Google credentials are unreadable ({type(exc).__name__}); "
                "run `colabremote logout` and `colabremote login` again"
            ) from None


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def default_config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$COLABREMOTE_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/colabremote``, else ~/.config/..."""
    env = os.environ if environ is None else environ
    if env.get("COLABREMOTE_CONFIG_DIR"):
        return Path(env["COLABREMOTE_CONFIG_DIR"]).expanduser()
    xdg = env.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "colabremote"


# -- the keyring ---------------------------------------------------------------------------------

_INSECURE_KEYRINGS = {
    ("keyring.backends.fail", "Keyring"),
    ("keyring.backends.null", "Keyring"),
    ("keyring.backends.chainer", "ChainerBackend"),  # judged by what it chains, below
}


def is_secure_keyring(backend: object) -> bool:
    """Whether ``backend`` keeps secrets encrypted by the OS (not fail, null or plain text)."""
    cls = type(backend)
    module, name = cls.__module__, cls.__name__
    if (module, name) in _INSECURE_KEYRINGS:
        return False
    if module.startswith("keyrings.alt") or module.startswith("keyrings.cryptfile"):
        # PlaintextKeyring, the Windows/registry and file variants, password-prompting files:
        # none is the OS secret store.
        return False
    if "plaintext" in name.lower() or "plaintext" in module.lower():
        return False
    try:
        priority = getattr(backend, "priority", 1)
    except Exception:  # noqa: BLE001 - keyring raises from priority when a backend is unusable
        return False
    return not (isinstance(priority, (int, float)) and priority <= 0)


def _pick_keyring() -> Any | None:
    """The best real keyring backend available, or None. Plaintext backends are skipped."""
    try:
        import keyring
    except ImportError:  # pragma: no cover - keyring is a dependency
        return None
    try:
        current = keyring.get_keyring()
    except Exception as exc:  # noqa: BLE001 - a broken keyring setup means "no keyring"
        log.debug("keyring unavailable: %s", type(exc).__name__)
        return None
    candidates = list(getattr(current, "backends", None) or [current])
    secure = [backend for backend in candidates if is_secure_keyring(backend)]
    if not secure:
        return None
    return max(secure, key=lambda backend: getattr(backend, "priority", 0))


# -- the store -----------------------------------------------------------------------------------


class TokenStore:
    """Loads, saves and deletes the one :class:`StoredCredentials` record of this user."""

    def __init__(
        self,
        config_dir: str | os.PathLike[str] | None = None,
        *,
        backend: BackendChoice | None = None,
        keyring_backend: Any | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        choice = backend or env.get("COLABREMOTE_TOKEN_STORE", "auto") or "auto"
        if choice not in ("auto", "keyring", "file"):
            raise ConfigurationError(
                f"token store {choice!r} is unknown; use 'auto', 'keyring' or 'file' "
                "(argument backend= or COLABREMOTE_TOKEN_STORE)"
            )
        self.config_dir = Path(config_dir) if config_dir is not None else default_config_dir(env)
        self._keyring: Any | None = None
        if choice != "file":
            chosen = keyring_backend if keyring_backend is not None else _pick_keyring()
            if chosen is not None and not is_secure_keyring(chosen):
                raise ConfigurationError(
                    f"keyring backend {type(chosen).__name__} does not encrypt secrets; "
                    "colabremote will not store Google credentials in it"
                )
            if chosen is None and choice == "keyring":
                raise ConfigurationError(
                    "no secure OS keyring is available (install and unlock one, or use "
                    "COLABREMOTE_TOKEN_STORE=file for a private file in the config directory)"
                )
            self._keyring = chosen

    @property
    def kind(self) -> Literal["keyring", "file"]:
        return "keyring" if self._keyring is not None else "file"

    @property
    def path(self) -> Path:
        """The credentials file (used only when there is no real keyring)."""
        return self.config_dir / CREDENTIALS_FILE

    def __repr__(self) -> str:
        where = type(self._keyring).__name__ if self._keyring is not None else str(self.path)
        return f"TokenStore({self.kind}: {where})"

    def load(self) -> StoredCredentials | None:
        """The stored record, or None when there is none."""
        text = self._load_keyring() if self._keyring is not None else self._load_file()
        if text is None:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            raise ConfigurationError(
                f"the stored Google credentials ({self}) are not valid JSON; "
                "run `colabremote logout` and `colabremote login` again"
            ) from None
        if not isinstance(data, dict):
            raise ConfigurationError(f"the stored Google credentials ({self}) are malformed")
        return StoredCredentials.from_dict(data)

    def save(self, credentials: StoredCredentials) -> None:
        """Store ``credentials``, replacing what was there (atomically)."""
        text = json.dumps(credentials.to_dict(), sort_keys=True)
        if self._keyring is not None:
            self._keyring_call("save", self._keyring.set_password, text)
        else:
            self._save_file(text)

    def delete(self) -> None:
        """Forget the stored record (no error if there is none)."""
        if self._keyring is not None:
            import keyring.errors

            with contextlib.suppress(keyring.errors.PasswordDeleteError):
                self._keyring_call("delete", self._keyring.delete_password)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    # -- keyring -----------------------------------------------------------------------------

    def _keyring_call(self, doing: str, method: Any, *args: str) -> Any:
        import keyring.errors

        try:
            return method(KEYRING_SERVICE, KEYRING_USERNAME, *args)
        except keyring.errors.PasswordDeleteError:
            raise
        except keyring.errors.KeyringError as exc:
            raise ConfigurationError(
                f"could not {doing} Google credentials in the OS keyring "
                f"({type(self._keyring).__name__}: {type(exc).__name__}); unlock it, or set "
                "COLABREMOTE_TOKEN_STORE=file to use a private file instead"
            ) from None

    def _load_keyring(self) -> str | None:
        assert self._keyring is not None
        value = self._keyring_call("read", self._keyring.get_password)
        return value if isinstance(value, str) else None

    # -- file --------------------------------------------------------------------------------

    def _ensure_dir(self) -> None:
        directory = self.config_dir
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fix_mode(directory, 0o700)

    @staticmethod
    def _fix_mode(path: Path, wanted: int) -> None:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            log.warning("%s was readable by others (mode %o); setting %o", path, mode, wanted)
            os.chmod(path, wanted)

    def _load_file(self) -> str | None:
        path = self.path
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read {path} ({exc.strerror}); it must be a regular file you own"
            ) from None
        with os.fdopen(fd, encoding="utf-8") as handle:
            if stat.S_IMODE(os.fstat(handle.fileno()).st_mode) & 0o077:
                log.warning("%s was readable by others; setting mode 600", path)
                os.fchmod(handle.fileno(), 0o600)
            return handle.read()

    def _save_file(self, text: str) -> None:
        self._ensure_dir()
        fd, tmp_name = tempfile.mkstemp(
            dir=self.config_dir, prefix=f".{CREDENTIALS_FILE}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o600)  # mkstemp already does; be explicit
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        try:
            dir_fd = os.open(self.config_dir, os.O_RDONLY)
        except OSError:  # pragma: no cover - platforms without directory fds
            return
        try:
            os.fsync(dir_fd)
        except OSError:  # pragma: no cover
            pass
        finally:
            os.close(dir_fd)
