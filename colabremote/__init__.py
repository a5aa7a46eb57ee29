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

from importlib import metadata as _metadata

from . import exceptions
from ._api import AsyncSession, Session
from ._default import default_session
from ._detached.public import AsyncRemoteCall, CallStatus, RemoteCall
from ._info import RuntimeInfo, SessionInfo
from ._remote import RemoteFunction, remote
from ._state.classes import RemoteClass, RemoteInstance, RemoteMethod
from ._state.refs import Ref
from ._workspace.files import SyncResult
from ._workspace.shell import ShellResult
from .exceptions import (
    ColabRemoteError,
    ColabTermsWarning,
    OutputDroppedWarning,
    PackageInstallError,
    PythonMismatchWarning,
    RemoteError,
    RemoteTimeout,
    RestartNeededWarning,
    ShellCommandError,
)

try:
    __version__ = _metadata.version("colabremote")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AsyncRemoteCall",
    "AsyncSession",
    "CallStatus",
    "ColabRemoteError",
    "ColabTermsWarning",
    "OutputDroppedWarning",
    "PackageInstallError",
    "PythonMismatchWarning",
    "Ref",
    "RemoteCall",
    "RemoteClass",
    "RemoteError",
    "RemoteFunction",
    "RemoteInstance",
    "RemoteMethod",
    "RemoteTimeout",
    "RestartNeededWarning",
    "RuntimeInfo",
    "Session",
    "SessionInfo",
    "ShellCommandError",
    "ShellResult",
    "SyncResult",
    "__version__",
    "default_session",
    "exceptions",
    "remote",
]
