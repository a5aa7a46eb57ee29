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

Each :class:`~.origin.Origin` has a record of its own: Google's keeps the keyring entry
``colabremote``/``google-oauth`` and the file ``credentials.json``; any other base URL gets
``google-oauth@<origin>`` and ``credentials-<label>.json``, so an emulator's sign-in never
reads, replaces or deletes the real one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from ..exceptions import ConfigurationError
from .origin import PRODUCTION, Origin

__all__ = [
    "KEYRING_SERVICE",
    "KEYRING_USERNAME",
    "StoredCredentials",
    "TokenStore",
    "default_config_dir",
    "ensure_private_dir",
    "is_secure_keyring",
    "write_private_file",
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


# -- private files -------------------------------------------------------------------------------


def ensure_private_dir(directory: Path) -> None:
    """Make ``directory`` (mode 0700) or tighten it to 0700 if others could read it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _fix_mode(directory, 0o700)


def _fix_mode(path: Path, wanted: int) -> None:
    mode = stat.S_IMODE(path.lstat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o); setting %o", path, mode, wanted)
        os.chmod(path, wanted)


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``path`` atomically with mode 0600 from its first byte: a fresh temporary file
    (``O_EXCL``, never following a link) in the same 0700 directory, fsync, then rename."""
    ensure_private_dir(path.parent)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)


# -- where a record can be kept --------------------------------------------------------------------


class _KeyringPlace:
    """One entry in the OS keyring."""

    kind: Literal["keyring"] = "keyring"

    def __init__(self, backend: Any, username: str) -> None:
        self.backend = backend
        self.username = username

    def __str__(self) -> str:
        return "the OS keyring"

    def _call(self, doing: str, method: Any, *args: str) -> Any:
        import keyring.errors

        try:
            return method(KEYRING_SERVICE, self.username, *args)
        except keyring.errors.PasswordDeleteError:
            raise
        except keyring.errors.KeyringError as exc:
            raise ConfigurationError(
                f"could not {doing} Google credentials in the OS keyring "
                f"({type(self.backend).__name__}: {type(exc).__name__}); unlock it, or set "
                "COLABREMOTE_TOKEN_STORE=file to use a private file instead"
            ) from None

    def read(self) -> str | None:
        value = self._call("read", self.backend.get_password)
        return value if isinstance(value, str) else None

    def write(self, text: str) -> None:
        self._call("save", self.backend.set_password, text)

    def delete(self) -> bool:
        import keyring.errors

        if self.read() is None:
            return False
        with contextlib.suppress(keyring.errors.PasswordDeleteError):
            self._call("delete", self.backend.delete_password)
        return True


class _FilePlace:
    """A private file in the config directory."""

    kind: Literal["file"] = "file"

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def read(self) -> str | None:
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

    def write(self, text: str) -> None:
        write_private_file(self.path, text.encode("utf-8"))

    def delete(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ConfigurationError(f"could not delete {self.path} ({exc.strerror})") from None
        return True


_Place = _KeyringPlace | _FilePlace


# -- the store -----------------------------------------------------------------------------------


class TokenStore:
    """Loads, saves and deletes the :class:`StoredCredentials` record of this user for one
    origin (Google's unless ``origin`` says otherwise)."""

    def __init__(
        self,
        config_dir: str | os.PathLike[str] | None = None,
        *,
        backend: BackendChoice | None = None,
        keyring_backend: Any | None = None,
        environ: Mapping[str, str] | None = None,
        origin: Origin = PRODUCTION,
    ) -> None:
        env = os.environ if environ is None else environ
        choice = backend or env.get("COLABREMOTE_TOKEN_STORE", "auto") or "auto"
        if choice not in ("auto", "keyring", "file"):
            raise ConfigurationError(
                f"token store {choice!r} is unknown; use 'auto', 'keyring' or 'file' "
                "(argument backend= or COLABREMOTE_TOKEN_STORE)"
            )
        self.origin = origin
        self.config_dir = Path(config_dir) if config_dir is not None else default_config_dir(env)
        self._file = _FilePlace(self.config_dir / self.file_name(origin))
        self._keyring_backend = keyring_backend
        self._keyring: _KeyringPlace | None = None
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
            if chosen is not None:
                self._keyring = _KeyringPlace(chosen, self.keyring_username(origin))

    @staticmethod
    def file_name(origin: Origin) -> str:
        """The credentials file's name for ``origin``."""
        if origin.is_production:
            return CREDENTIALS_FILE
        return f"credentials-{origin.label}.json"

    @staticmethod
    def keyring_username(origin: Origin) -> str:
        """The keyring entry's user name for ``origin`` (service ``colabremote``)."""
        return KEYRING_USERNAME if origin.is_production else f"{KEYRING_USERNAME}@{origin.url}"

    @property
    def _place(self) -> _Place:
        return self._keyring if self._keyring is not None else self._file

    @property
    def kind(self) -> Literal["keyring", "file"]:
        return self._place.kind

    @property
    def path(self) -> Path:
        """The credentials file (used only when there is no real keyring)."""
        return self._file.path

    def __repr__(self) -> str:
        place = self._place
        where = type(place.backend).__name__ if isinstance(place, _KeyringPlace) else str(place)
        suffix = "" if self.origin.is_production else f", for {self.origin}"
        return f"TokenStore({self.kind}: {where}{suffix})"

    def describe(self) -> str:
        """Where records are kept, for people: the OS keyring, or the file's path."""
        return str(self._place)

    def load(self) -> StoredCredentials | None:
        """The stored record, or None when there is none."""
        return self._parse(self._place.read())

    def _parse(self, text: str | None) -> StoredCredentials | None:
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
        self._place.write(json.dumps(credentials.to_dict(), sort_keys=True))

    def delete(self) -> None:
        """Forget the stored record (no error if there is none)."""
        self._place.delete()

    # -- both places, for signing out --------------------------------------------------------

    def _everywhere(self) -> list[tuple[_Place, bool]]:
        """The chosen place and the other kind, each with whether it is the chosen one: a
        record may be left in either by an earlier run with another ``COLABREMOTE_TOKEN_STORE``
        or while the keyring was locked."""
        if self._keyring is not None:
            return [(self._keyring, True), (self._file, False)]
        places: list[tuple[_Place, bool]] = []
        backend = self._keyring_backend or _pick_keyring()
        if backend is not None and is_secure_keyring(backend):
            places.append((_KeyringPlace(backend, self.keyring_username(self.origin)), False))
        places.append((self._file, True))
        return places

    def load_everywhere(self) -> list[tuple[str, StoredCredentials]]:
        """The readable records in the keyring and the file (where each was), for sign-out.
        A place that cannot be read, or holds a damaged record, is logged and skipped."""
        found = []
        for place, _chosen in self._everywhere():
            try:
                record = self._parse(place.read())
            except ConfigurationError as exc:
                log.warning("skipped the record in %s: %s", place, exc)
                continue
            if record is not None:
                found.append((str(place), record))
        return found

    def delete_everywhere(self) -> list[str]:
        """Delete the record from the keyring and the file; the places that held one.

        Every place is tried. If the chosen one, or another that was seen to hold a record,
        could not be cleaned, ConfigurationError names it after; another place that cannot
        even be read (a locked keyring nobody chose) is only logged.
        """
        removed: list[str] = []
        failed: list[str] = []
        for place, chosen in self._everywhere():
            if not chosen:
                try:
                    if place.read() is None:
                        continue
                except ConfigurationError as exc:
                    log.warning("could not look for a sign-in in %s: %s", place, exc)
                    continue
            try:
                if place.delete():
                    removed.append(str(place))
            except ConfigurationError as exc:
                failed.append(str(exc))
        if failed:
            raise ConfigurationError(
                "the sign-in could not be removed everywhere: "
                + "; ".join(failed)
                + (f" (removed from {', '.join(removed)})" if removed else "")
            )
        return removed
