"""The default session: what ``@colabremote.remote`` functions without ``session=`` use."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from ._api import Session
from ._remote import use_default_session
from ._tracebacks import public

_default_lock = threading.Lock()
_default: Session | None = None


def settings_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Session options from ``COLABREMOTE_*`` variables."""
    env = os.environ if environ is None else environ
    backend = env.get("COLABREMOTE_BACKEND") or "local"
    options: dict[str, Any] = {"backend": backend}
    names = {
        "COLABREMOTE_PYTHON": "python",
        "COLABREMOTE_URL": "url",
        "COLABREMOTE_TOKEN": "token",
        "COLABREMOTE_KERNEL_NAME": "kernel_name",
    }
    if backend in ("colab", "emulator"):
        names = {"COLABREMOTE_GPU": "gpu", "COLABREMOTE_TPU": "tpu"}
        if backend == "colab":
            names["COLABREMOTE_BASE_URL"] = "base_url"
    for variable, option in names.items():
        if env.get(variable):
            options[option] = env[variable]
    return options


@public
def default_session() -> Session:
    """The session ``@colabremote.remote`` functions use: made on first use from
    ``COLABREMOTE_*`` settings, closed when the interpreter exits."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            options = settings_from_environment()
            backend = options.pop("backend")
            _default = Session(backend, **options)
        return _default


# RemoteFunction sits below the session classes, so it is told where the default comes from.
use_default_session(default_session)
