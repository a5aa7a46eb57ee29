"""Environment variables and secrets a session sets on its kernel (``env=``, ``secrets=``).

Secrets are read here, when the session opens: from this process's environment, then from the
OS keyring (service :data:`KEYRING_SERVICE`, the secret's name as the user). On the kernel both
become environment variables, set before the first call and again on every new kernel (after a
restart). On Colab runtimes the secrets also answer ``google.colab.userdata.get(name)`` (Colab's
``GetSecret`` request). A secret's value is only ever held by a :class:`Secret`, whose repr and
str name it without showing it, and it is never logged or put in an error message.
"""

from __future__ import annotations

import builtins
import logging
import os
import types
from collections.abc import Mapping
from typing import Any

from ..exceptions import ConfigurationError

log = logging.getLogger("colabremote")

#: The OS keyring service secrets are stored under; the user name is the secret's name.
KEYRING_SERVICE = "colabremote-secrets"


class Secret:
    """One secret's value, with where it came from. Its repr and str never show the value, and
    it refuses to be pickled, so it cannot reach a log, a traceback or the kernel by accident."""

    __slots__ = ("_value", "name", "source")

    def __init__(self, name: str, value: str, source: str) -> None:
        self.name = name
        self.source = source
        self._value = value

    def reveal(self) -> str:
        """The value itself: only for sending it to the kernel."""
        return self._value

    def __repr__(self) -> str:
        return f"<Secret {self.name} from {self.source}: value hidden>"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError(f"the secret {self.name} is not pickled; send secret.reveal() on purpose")


class KernelEnvironment:
    """What a session sets in the kernel's ``os.environ``: ``env=`` as given, and ``secrets=``
    (given outright, or read by :meth:`resolve` when the session opens)."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        names: tuple[str, ...] = (),
        given: Mapping[str, str] | None = None,
    ) -> None:
        self.env = dict(env or {})
        self._names = names
        #: The session's secrets by name; complete once :meth:`resolve` has run.
        self.secrets: dict[str, Secret] = {
            name: Secret(name, value, "secrets=") for name, value in (given or {}).items()
        }
        both = sorted(set(self.env) & (set(names) | set(self.secrets)))
        if both:
            raise ConfigurationError(
                f"{', '.join(both)} is in both env= and secrets=; name each variable once "
                "(in secrets= when its value must stay out of logs and reprs)"
            )

    def __bool__(self) -> bool:
        return bool(self.env or self._names or self.secrets)

    def __repr__(self) -> str:
        secrets = sorted({*self._names, *self.secrets})
        return f"<KernelEnvironment env={sorted(self.env)} secrets={secrets}>"

    @property
    def unread(self) -> bool:
        """Whether some named secret is still to be read (by :meth:`resolve`)."""
        return any(name not in self.secrets for name in self._names)

    def resolve(self, environ: Mapping[str, str] | None = None) -> None:
        """Read the named secrets: the environment first, then the OS keyring. A name found in
        neither is a ConfigurationError naming every place looked in (and no value at all)."""
        environ = os.environ if environ is None else environ
        missing = []
        keyring_state = ""
        for name in self._names:
            if name in self.secrets:
                continue
            value = environ.get(name)
            source = f"the environment variable {name}"
            if not value:
                value, keyring_state = read_keyring(name)
                source = f"the OS keyring ({KEYRING_SERVICE})"
            if value:
                self.secrets[name] = Secret(name, value, source)
                log.debug("secret %s read from %s", name, source)
            else:
                missing.append(name)
        if missing:
            raise ConfigurationError(_not_found(missing, keyring_state))

    def variables(self) -> dict[str, str]:
        """Every variable to set on the kernel, secrets revealed: only for sending there."""
        return {**self.env, **{name: s.reveal() for name, s in self.secrets.items()}}


def _not_found(missing: list[str], keyring_state: str) -> str:
    names = ", ".join(missing)
    plural = "s" * (len(missing) > 1)
    first = missing[0]
    return (
        f"secret{plural} {names} not found: not in the environment (variable{plural} {names}), "
        f"nor in the OS keyring (service {KEYRING_SERVICE!r}, the name as user: "
        f"{keyring_state}). Set the variable, store the secret with `colabremote secrets set "
        f"{first}`, or pass its value: secrets={{{first!r}: value}}"
    )


def _keyring() -> Any | None:
    """The OS keyring secrets are kept in: the same one the sign-in uses (a real one, never a
    plain-text file), or None."""
    from .._colab.tokens import _pick_keyring

    return _pick_keyring()


def read_keyring(name: str) -> tuple[str | None, str]:
    """The secret ``name`` from the OS keyring (None when absent) and, for an error message,
    what the keyring said."""
    backend = _keyring()
    if backend is None:
        return None, "no OS keyring is available here"
    try:
        value = backend.get_password(KEYRING_SERVICE, name)
    except Exception as exc:  # noqa: BLE001 - any keyring failure means "not there"
        return None, f"the keyring failed: {type(exc).__name__}"
    if not isinstance(value, str) or not value:
        return None, "no entry"
    return value, "found"


def store_in_keyring(name: str, value: str) -> str:
    """Keep ``value`` in the OS keyring under ``name``; returns the keyring's description.
    Without a real OS keyring it is an error that names the other ways."""
    backend = _keyring()
    if backend is None:
        raise ConfigurationError(
            f"no OS keyring is available here to keep {name} in; set the environment "
            f"variable {name} instead, or pass the value with secrets={{{name!r}: ...}}"
        )
    try:
        backend.set_password(KEYRING_SERVICE, name, value)
    except Exception as exc:  # noqa: BLE001 - keyring raises backend-specific errors
        raise ConfigurationError(
            f"the OS keyring did not store {name} ({type(exc).__name__}); set the environment "
            f"variable {name} instead"
        ) from None
    return type(backend).__name__


def delete_from_keyring(name: str) -> bool:
    """Forget the secret ``name`` in the OS keyring; False when there was none."""
    backend = _keyring()
    if backend is None or read_keyring(name)[0] is None:
        return False
    try:
        backend.delete_password(KEYRING_SERVICE, name)
    except Exception as exc:  # noqa: BLE001 - keyring raises backend-specific errors
        raise ConfigurationError(
            f"the OS keyring did not delete {name} ({type(exc).__name__})"
        ) from None
    return True


def secret_reply(secrets: Mapping[str, Secret], request: Any) -> dict[str, Any]:
    """The ``data`` of a reply to Colab's ``GetSecret`` request (``{"key": name}``), as
    ``google.colab.userdata.get`` reads it: the value when the session holds that secret, else
    "does not exist" (which ``get`` raises as ``SecretNotFoundError``)."""
    key = request.get("key") if isinstance(request, Mapping) else None
    secret = secrets.get(key) if isinstance(key, str) else None
    if secret is None:
        log.info("the runtime asked for a secret this session does not hold: %r", key)
        return {"exists": False, "access": False}
    log.debug("answered the runtime's request for the secret %s", secret.name)
    return {"exists": True, "access": True, "payload": secret.reveal()}


def _set_environment(variables: dict[str, str]) -> None:
    """Runs in the kernel: set the session's variables in its environment."""
    import os

    os.environ.update(variables)


#: ``_set_environment`` under a module nothing can import, so it is sent to the kernel by value
#: (the kernel need not have colabremote installed). The values travel as its argument, pickled,
#: never in source text that a traceback or the kernel's history could show.
SET_ENVIRONMENT = types.FunctionType(
    _set_environment.__code__,
    {"__name__": "colabremote-environment", "__builtins__": builtins},
    "_set_environment",
)
