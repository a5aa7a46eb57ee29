"""Where kernels come from. Every backend hands the session the same thing: a Transport."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .._info import RuntimeInfo
from .._kernel.transport import Transport
from ..exceptions import ColabError, ConfigurationError, KernelDied, RuntimeGone

if TYPE_CHECKING:
    from .._kernel.messages import Message
    from .._workspace.secrets import Secret
    from .._workspace.terminal import Channel

Progress = Callable[[str], None]
"""Receives one-line descriptions of slow steps (starting a kernel, assigning a runtime)."""


class KernelFiles(Protocol):
    """What a backend may ask of the kernel to place a file there: the kernel's working
    directory, and a search for a file the backend has just written through its own API."""

    @property
    def cwd(self) -> str:
        """The kernel's working directory, an absolute path on its machine."""
        ...

    async def take(self, path: str) -> str | None:
        """The first of the kernel's working directory and its parents under which the
        relative file ``path`` exists (the kernel then removes that file), or None."""
        ...


@dataclass(frozen=True)
class PortRoute:
    """How to reach port N of the kernel's machine from here: the base ``url`` (scheme, host and
    path prefix) and the ``headers`` each request needs there (values kept out of the repr).
    ``direct``: the port is on this machine and ``url`` is the port itself."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    direct: bool = False


class Backend(abc.ABC):
    """Gets a kernel, connects to it, and can interrupt, restart and release it."""

    name: ClassVar[str]
    #: Whether the kernel's WebSocket should ask for the v1 binary subprotocol (ZMQ ignores it).
    use_v1: ClassVar[bool] = True
    #: Seconds between checks that the kernel is still alive while calls run.
    alive_poll_interval: ClassVar[float] = 2.0
    #: Whether this backend holds something billed or shared (a Colab runtime) that SIGTERM
    #: must release through the interpreter's exit hooks.
    releases_at_exit: ClassVar[bool] = False
    #: Set when the place the kernel lived is gone for good (a Colab runtime taken away): every
    #: later call fails with this instead of trying a new kernel.
    gone: RuntimeGone | None = None
    #: The session's secrets (``secrets=``), set by the session when it opens: code on a Colab
    #: runtime may ask for them by name (``google.colab.userdata.get``).
    secrets: Mapping[str, Secret] = MappingProxyType({})

    @abc.abstractmethod
    async def start(self, progress: Progress) -> None:
        """Get a kernel (start one, or attach to one)."""

    @abc.abstractmethod
    async def connect(self) -> Transport:
        """A new connection to the current kernel."""

    def new_client(self) -> None:  # noqa: B027 - a hook; most backends have nothing to do
        """A new kernel client is about to connect (not a reconnection of the last one): what a
        server kept for the last client's connection must not be replayed to it."""

    @abc.abstractmethod
    async def interrupt(self) -> None:
        """Send SIGINT (or the server's equivalent) to the kernel."""

    @abc.abstractmethod
    async def restart(self, progress: Progress) -> None:
        """Replace a dead or stuck kernel with a fresh one; state in the old one is lost."""

    @abc.abstractmethod
    async def is_alive(self) -> bool: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Release what :meth:`start` got. Kernels this backend attached to are left running."""

    def defer_kernel(self) -> None:  # noqa: B027 - a hook; most backends have nothing to do
        """Make :meth:`start` get only what the kernel runs on (a Colab runtime, a server's
        address), not the kernel: :meth:`restart` starts it when a call needs it. For sessions
        that only read detached calls (``s.call(id)``, the CLI)."""

    def keep_kernel(self) -> bool:
        """Make :meth:`close` leave the kernel (and the runtime it is on) running, for detached
        calls still running there; False where the kernel cannot outlive this process."""
        return False

    async def upload(self, local: str, remote: str, *, show_progress: bool) -> None:
        """Copy a local file to the kernel's machine."""
        raise NotImplementedError(f"the {self.name} backend cannot upload files")

    async def download(self, remote: str, local: str, *, show_progress: bool) -> None:
        """Copy a file from the kernel's machine here."""
        raise NotImplementedError(f"the {self.name} backend cannot download files")

    async def kernel_file_path(self, remote: str, kernel: KernelFiles) -> str | None:
        """The absolute path on the kernel's machine of the file ``upload``/``download`` name
        ``remote`` (a path on the Jupyter server, which may serve another folder than the
        kernel's working directory), so a large file can go through the kernel in pieces; None
        when this backend cannot tell (the file then goes through ``upload``/``download``)."""
        del remote, kernel
        return None

    def describe(self) -> dict[str, Any]:
        """Facts for ``Session.info()`` (never secrets)."""
        return {"backend": self.name}

    def runtime_info(self) -> RuntimeInfo:
        """The Colab runtime this backend holds, for ``Session.runtime()``."""
        raise ConfigurationError(
            f"a {self.name!r} session has no Colab runtime; Session.info() describes its kernel"
        )

    def startup_failure(self) -> Exception:
        """Why the kernel died while starting, for the error the user sees."""
        return KernelDied("the kernel died while starting")

    async def open_terminal(self) -> Channel:
        """A new interactive terminal (a shell on a pseudo-terminal) on the kernel's machine."""
        raise ConfigurationError(
            f"the {self.name} backend has no terminal; use s.shell(command) to run commands"
        )

    async def port_route(self, port: int, *, fresh: bool = False) -> PortRoute:
        """The route to ``port`` on the kernel's machine, for ``Session.forward``; ``fresh``: the
        proxy refused the last route's credentials, so get new ones."""
        del port, fresh
        raise ConfigurationError(f"the {self.name} backend cannot forward ports")

    async def answer_colab_request(self, msg: Message) -> dict[str, Any]:
        """Answer a ``colab_request`` from code on the kernel (``drive.mount()``, ...); the
        kernel client sends what this returns, or the error it raises."""
        del msg
        raise ColabError(
            f"the {self.name} backend does not answer Colab requests; only Colab runtimes do"
        )
