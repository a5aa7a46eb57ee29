"""Every error colabremote raises, in one tree.

```
ColabRemoteError
├── ConfigurationError          bad arguments or settings; the message says what to change
│   └── RemoteAttributeError    a remote instance's attribute that is not a method (also an
│                               AttributeError): read it through a method
├── PathNotFound                a file or folder named is not there (also a FileNotFoundError)
├── SessionClosed               the session was closed (or never opened)
│   └── SessionForked           the session was made in the parent of this forked process
├── BlockingCallError           a blocking call inside a running event loop: use the async form
├── AuthError                   signing in to Google failed or is needed
│   ├── SignInRequired          no usable credentials: `colabremote login --adc` (gcloud)
│   ├── MissingScopes           the credentials lack scopes Colab needs (the fix is in the message)
│   └── OAuthError              the sign-in service refused (bad code or state, revoked token, ...)
├── BackendError                where kernels come from failed
│   ├── KernelStartError        a kernel could not be started (missing ipykernel, bad python)
│   ├── ServerError             a Jupyter server refused or failed a request
│   │   └── AuthenticationError the server did not accept the credentials
│   ├── ConnectionLost          the connection to the kernel dropped and could not be restored
│   └── ColabError              the Colab service refused a request
│       ├── TooManyRuntimes     too many runtimes assigned (HTTP 412): release one
│       ├── AcceleratorUnavailable  no machine with that accelerator now (HTTP 503)
│       ├── NotEntitled         the account may not use that accelerator or shape (HTTP 400)
│       ├── QuotaExceeded       usage limits reached (assign outcome 1 or 2)
│       ├── AccountBlocked      the account is denylisted (assign outcome 5)
│       └── RuntimeGone         the runtime is no longer assigned to the account
├── SerializationError          something could not cross the wire
│   ├── ArgumentNotSerializable an argument cannot be pickled (nothing was sent)
│   ├── ResultNotSerializable   the result cannot be pickled on the kernel, or rebuilt here
│   │   └── ResultRefused       an untrusted kernel's result holds a type that is not plain data
│   └── PythonVersionMismatch   bytecode-only code, and the kernel runs another Python version
└── RemoteCallError             the call itself did not complete
    ├── RemoteError             the function raised an exception whose type is not importable here
    ├── RemoteTimeout           the call ran longer than its timeout and was interrupted
    ├── PackageInstallError     pip/uv failed on the runtime; carries the command and its last lines
    ├── ShellCommandError       s.shell(..., check=True): the command exited with a nonzero status
    ├── KernelDied              the kernel died during the call; the session starts a fresh one
    │   └── KernelRestarted     the kernel was restarted from elsewhere (a notebook, an editor)
    ├── RefLost                 a ref or remote instance whose object is gone (kernel restarted
    │                           or replaced, freed) or that was passed to another session
    ├── CallNotFound            no detached call with that id on this runtime (also a LookupError)
    │   └── CallEvicted         it was there, and was removed to keep the runtime's disk bounded
    ├── CallCancelled           a detached call was cancelled (interrupted) before it finished
    ├── CallStillRunning        result(timeout=...) of a detached call that is still running
    └── CallFilesInvalid        a detached call's files on the runtime are oversized or malformed

UserWarning
├── RuntimeNotReleasedWarning   a Colab runtime could not be released and is still billed
├── OutputDroppedWarning        some of a call's output was dropped on the way; says how much
├── ColabTermsWarning           the account uses Colab's free tier, whose terms restrict use
├── RestartNeededWarning        an install changed a package the kernel has imported: restart it
├── PythonMismatchWarning       the kernel runs another Python: code typed at a prompt cannot go
└── DetachedCallsWarning        a session closed with detached calls running: the kernel stays
```

An exception raised by the remote function whose type can be imported here is re-raised as
itself (``except ValueError`` works), with the remote traceback attached as its ``__cause__``
(a :class:`RemoteTraceback`).

Each error has ``retryable``: whether trying the same operation again may succeed. Calls that run
user code are never retried automatically, whatever this says.

Errors that carry an HTTP ``status`` (:class:`ServerError`, :class:`ColabError` and their kin)
share one rule: 429 and 5xx are retryable, any other status is not. ``status=None`` means no
HTTP status applies: the service refused in the body of a successful answer (a quota, a blocked
account), or no answer came even after the SDK's own retries (a transport failure). Neither is
retryable unless the class says otherwise: :class:`ConnectionLost` is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._workspace.shell import ShellResult

__all__ = [
    "AcceleratorUnavailable",
    "AccountBlocked",
    "ArgumentNotSerializable",
    "AuthError",
    "AuthenticationError",
    "BackendError",
    "BlockingCallError",
    "CallCancelled",
    "CallEvicted",
    "CallFilesInvalid",
    "CallNotFound",
    "CallStillRunning",
    "ColabError",
    "ColabRemoteError",
    "ColabTermsWarning",
    "ConfigurationError",
    "ConnectionLost",
    "DetachedCallsWarning",
    "KernelDied",
    "KernelRestarted",
    "KernelStartError",
    "MissingScopes",
    "NotEntitled",
    "OAuthError",
    "OutputDroppedWarning",
    "PackageInstallError",
    "PathNotFound",
    "PythonMismatchWarning",
    "PythonVersionMismatch",
    "QuotaExceeded",
    "RefLost",
    "RemoteAttributeError",
    "RemoteCallError",
    "RemoteError",
    "RemoteTimeout",
    "RemoteTraceback",
    "RestartNeededWarning",
    "ResultNotSerializable",
    "ResultRefused",
    "RuntimeGone",
    "RuntimeNotReleasedWarning",
    "SerializationError",
    "ServerError",
    "SessionClosed",
    "SessionForked",
    "ShellCommandError",
    "SignInRequired",
    "TooManyRuntimes",
]


def _retryable_status(status: int | None) -> bool:
    """The rule for errors with an HTTP status (see the module docstring)."""
    return status is not None and (status == 429 or status >= 500)


class ColabRemoteError(Exception):
    """Base class of every colabremote error."""

    @property
    def retryable(self) -> bool:
        """Whether the same operation may succeed if tried again."""
        return False


class ConfigurationError(ColabRemoteError, ValueError):
    """An argument or setting is wrong. The message says which and what to use instead."""


class RemoteAttributeError(ConfigurationError, AttributeError):
    """A remote instance's handle was asked for an attribute that is not a method of its class
    (the instance's data lives on the kernel: read it through a method), or a remote class for
    ``.keep`` (its instances stay on the kernel anyway)."""


class PathNotFound(ColabRemoteError, FileNotFoundError):
    """A file or folder an operation names is not there (here, or on the runtime): the message
    names it and where it was looked for. ``except FileNotFoundError`` catches it too."""


class SessionClosed(ColabRemoteError):
    """The session is closed, so it cannot run anything."""


class SessionForked(SessionClosed):
    """The session was made before this process forked: its kernel connection, event loop and
    runtime belong to the parent. Make a new session in the child; the parent's keeps working."""


class BlockingCallError(ColabRemoteError, RuntimeError):
    """A blocking call (``Session`` methods, calling a remote function) was made from a
    coroutine: it would stop that event loop until the kernel answered. Use ``AsyncSession``
    and ``await f.aio(...)`` there."""


class BackendError(ColabRemoteError):
    """Getting or talking to a kernel failed."""


class KernelStartError(BackendError):
    """A kernel could not be started."""


class ServerError(BackendError):
    """A server answered a request with an error status."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        return _retryable_status(self.status)


class AuthenticationError(ServerError):
    """The server did not accept our credentials (HTTP 401 or 403)."""

    @property
    def retryable(self) -> bool:
        return False


class ConnectionLost(BackendError):
    """The connection to the kernel dropped and could not be restored."""

    @property
    def retryable(self) -> bool:
        return True


class AuthError(ColabRemoteError):
    """Signing in to Google failed, or is needed first."""


class SignInRequired(AuthError):
    """No usable stored credentials. Run ``colabremote login`` (or see docs/auth.md)."""


class MissingScopes(AuthError):
    """The credentials lack OAuth scopes that Colab needs; the message says how to get them."""

    def __init__(self, message: str, *, missing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.missing = missing


class OAuthError(AuthError):
    """The sign-in service refused a request (a bad code or state, a revoked refresh token)."""

    def __init__(self, message: str, *, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


class ColabError(BackendError):
    """The Colab service refused or failed a request."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        return _retryable_status(self.status)


class TooManyRuntimes(ColabError):
    """Colab refused a new runtime (HTTP 412): too many are assigned. Release one first."""


class AcceleratorUnavailable(ColabError):
    """No machine with the requested accelerator is free now (HTTP 503)."""

    @property
    def retryable(self) -> bool:
        return False  # a fallback accelerator or a later attempt is the caller's choice


class NotEntitled(ColabError):
    """The account may not use the requested accelerator or shape (HTTP 400)."""


class QuotaExceeded(ColabError):
    """The account's Colab usage limits are reached (assign outcome 1 or 2)."""


class AccountBlocked(ColabError):
    """Colab has blocked this account from getting runtimes (assign outcome 5, denylisted)."""


class RuntimeGone(ColabError):
    """The runtime is no longer assigned to the account (released, or reclaimed when idle)."""


class RuntimeNotReleasedWarning(UserWarning):
    """A Colab runtime this session assigned could not be released at close (the sign-in
    stopped working, or Colab did not answer): it stays assigned, and billed, until it is
    released. The message names the endpoint and the command that releases it."""


class OutputDroppedWarning(UserWarning):
    """Some of what remote code printed never arrived: a server's rate limit or a dropped
    connection took it. The same note appears in the output where the text is missing; the
    message says how much was lost (when that is known) and how it happened."""


class ColabTermsWarning(UserWarning):
    """The signed-in account uses Colab's free tier (no subscription, no paid compute units).
    Colab's terms restrict what free runtimes may be used for (remote control and proxies
    among them); colabremote's Colab backend is meant for Pro, Pro+ and Pay As You Go. Said
    once, when a session opens; the session works as usual."""


class RestartNeededWarning(UserWarning):
    """An install changed the version of a package the kernel had already imported: the kernel
    keeps running the old one until it restarts. ``package``, ``old`` and ``new`` say which."""

    def __init__(self, message: str, *, package: str, old: str, new: str) -> None:
        super().__init__(message)
        self.package = package
        self.old = old
        self.new = new


class PythonMismatchWarning(UserWarning):
    """The kernel runs another Python minor version than this one. Functions from .py files and
    IPython cells travel as source and work; those typed at a plain python prompt or made with
    exec cannot be sent (:class:`PythonVersionMismatch` when called). Said once, when a session
    opens; ``local`` and ``remote`` are the two versions ("3.11")."""

    def __init__(self, message: str, *, local: str, remote: str) -> None:
        super().__init__(message)
        self.local = local
        self.remote = remote


class SerializationError(ColabRemoteError):
    """A function, argument or result could not be sent across."""


class ArgumentNotSerializable(SerializationError, TypeError):
    """An argument cannot be pickled. Raised before anything is sent."""


class ResultNotSerializable(SerializationError):
    """The function's result could not be pickled on the kernel or rebuilt here."""


class ResultRefused(ResultNotSerializable):
    """A session with ``trust_kernel=False`` refused a result holding more than plain data.

    ``type_name`` is the refused type (``module.qualname``); nothing of the result was rebuilt,
    so nothing it names ran here. The session carries on.
    """

    def __init__(self, message: str, *, type_name: str) -> None:
        super().__init__(message)
        self.type_name = type_name


class PythonVersionMismatch(SerializationError):
    """Code that can only travel as bytecode, to a kernel running another Python minor version."""

    def __init__(self, message: str, *, local: str, remote: str) -> None:
        super().__init__(message)
        self.local = local
        self.remote = remote


class RemoteCallError(ColabRemoteError):
    """A remote call did not complete normally."""


class RemoteError(RemoteCallError):
    """The remote function raised an exception that cannot be rebuilt here.

    ``type_name`` is the remote exception's qualified type name, ``value`` its message and
    ``remote_traceback`` the traceback text as the kernel formatted it.
    """

    def __init__(self, type_name: str, value: str, remote_traceback: str) -> None:
        super().__init__(f"{type_name}: {value}" if value else type_name)
        self.type_name = type_name
        self.value = value
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        head = f"{self.type_name}: {self.value}" if self.value else self.type_name
        return f"{head}\n\nRemote traceback:\n{self.remote_traceback.rstrip()}"


class RemoteTimeout(RemoteCallError, TimeoutError):
    """The call ran past its ``timeout`` and was interrupted on the kernel."""


class PackageInstallError(RemoteCallError):
    """Installing packages on the runtime failed. ``command`` is the installer's command line,
    ``returncode`` its exit status and ``tail`` its last lines of output; nothing was recorded as
    installed, so the same ``pip_install`` runs the installer again."""

    def __init__(
        self, message: str, *, command: str, returncode: int, tail: tuple[str, ...]
    ) -> None:
        super().__init__(message)
        self.command = command
        self.returncode = returncode
        self.tail = tail


class ShellCommandError(RemoteCallError):
    """``shell(..., check=True)``: the command exited with a nonzero status. ``result`` is the
    whole :class:`~colabremote.ShellResult` (its ``returncode``, ``stdout`` and ``stderr``)."""

    def __init__(self, message: str, *, result: ShellResult) -> None:
        super().__init__(message)
        self.result = result

    @property
    def returncode(self) -> int:
        return self.result.returncode


class KernelDied(RemoteCallError):
    """The kernel process died during the call (out of memory, a crash in native code, ...).

    The session replaces the kernel before its next call; state kept in the old one is gone.
    """

    @property
    def retryable(self) -> bool:
        return True


class KernelRestarted(KernelDied):
    """The kernel was restarted from outside this session (a notebook's or editor's "restart").

    Calls in flight fail with it at once; the next call installs colabremote's agent again in
    the fresh kernel. State kept in the old kernel is gone.
    """


class RefLost(RemoteCallError):
    """A ref (or remote instance) was used where its object is not kept: its kernel was
    restarted or replaced since, it was freed, or it belongs to another session. Nothing was
    sent. ``type_name`` is the object's type and ``origin`` where it was made."""

    def __init__(self, message: str, *, type_name: str, origin: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.origin = origin


class CallNotFound(RemoteCallError, LookupError):
    """No detached call with this id is on the runtime the session reaches: a mistyped id, or
    another runtime or server (the id starts with the runtime's name)."""


class CallEvicted(CallNotFound):
    """The detached call was on the runtime, but its output and result were removed to keep the
    runtime's disk bounded (the oldest finished calls go first)."""


class CallCancelled(RemoteCallError):
    """The detached call was cancelled (interrupted on the kernel) before it finished."""


class CallStillRunning(RemoteCallError, TimeoutError):
    """``result(timeout=...)`` of a detached call that is still running; it keeps running, and a
    later ``result()`` returns its value."""


class CallFilesInvalid(RemoteCallError):
    """A detached call's files on the runtime are not what colabremote writes (too large, or
    malformed): the kernel or runtime that wrote them is not to be trusted. Nothing in them was
    used."""


class DetachedCallsWarning(UserWarning):
    """A session closed while detached calls it spawned were still running: their kernel (and
    Colab runtime) is left running for them. ``call_ids`` names them."""

    def __init__(self, message: str, *, call_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.call_ids = call_ids


class RemoteTraceback(Exception):
    """Carries a remote traceback's text; set as ``__cause__`` of exceptions rebuilt here."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\nRemote traceback:\n" + self.text.rstrip()
