"""colabremote: run Python functions on a remote Jupyter kernel (Google Colab, any Jupyter
server, or a kernel on this machine) with one decorator.

    import colabremote as cr

    with cr.Session(backend="local") as s:
        @s.remote
        def square(x: int) -> int:
            return x * x

        print(square(7))  # 49, computed on the session's kernel
"""

from __future__ import annotations

from . import exceptions
from ._remote import RemoteFunction, remote
from ._session import AsyncSession, RuntimeInfo, Session, SessionInfo, default_session
from .exceptions import ColabRemoteError, RemoteError, RemoteTimeout

__version__ = "0.1.0"

__all__ = [
    "AsyncSession",
    "ColabRemoteError",
    "RemoteError",
    "RemoteFunction",
    "RemoteTimeout",
    "RuntimeInfo",
    "Session",
    "SessionInfo",
    "__version__",
    "default_session",
    "exceptions",
    "remote",
]
