"""Kernels on this machine, started with jupyter_client; any Python that has ipykernel."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from typing import IO, TYPE_CHECKING, Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from .._kernel.transport import Transport
from .._kernel.zmq import ZMQTransport
from ..exceptions import ConfigurationError, KernelStartError
from .base import Backend, KernelFiles, PortRoute, Progress

if TYPE_CHECKING:
    from .._workspace.terminal import Channel

_SPEC_NAME = "colabremote-python"


class _OneSpec(KernelSpecManager):
    """A kernel spec manager that knows exactly one spec: ours."""

    def __init__(self, spec: KernelSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._spec = spec

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return self._spec


def resolve_python(python: str | os.PathLike[str] | None) -> str:
    """An interpreter path from a path or a command name; this Python when None."""
    if python is None:
        return sys.executable
    text = os.fspath(python)
    found = shutil.which(text) if os.sep not in text else (text if os.path.exists(text) else None)
    if found is None:
        raise ConfigurationError(
            f"python={text!r} was not found; pass the path of a Python interpreter that has "
            "ipykernel installed (for example python='/usr/bin/python3.12')"
        )
    return found


class LocalBackend(Backend):
    """A kernel process on this machine, spoken to over ZeroMQ."""

    name = "local"
    alive_poll_interval = 0.25  # a local check is cheap, and a crash should surface at once

    def __init__(self, python: str | os.PathLike[str] | None = None, cwd: str | None = None):
        self.python = resolve_python(python)
        self.cwd = cwd
        self._manager: AsyncKernelManager | None = None
        self._log: IO[bytes] | None = None

    def _spec(self) -> KernelSpec:
        return KernelSpec(
            argv=[self.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name=f"colabremote ({self.python})",
            language="python",
            interrupt_mode="signal",
            env={"PYDEVD_DISABLE_FILE_VALIDATION": "1"},
        )

    async def open_terminal(self) -> Channel:
        """A shell on a pseudo-terminal of this machine, in ``cwd=``."""
        from .._workspace.terminal import LocalPtyChannel

        try:
            return LocalPtyChannel(self.cwd)
        except ImportError:  # no termios/fcntl: not a POSIX system
            raise ConfigurationError(
                "local terminals need a POSIX system (pseudo-terminals); use s.shell(command)"
            ) from None

    async def start(self, progress: Progress) -> None:
        progress(f"starting a local kernel ({self.python})")
        if self._log is not None:
            self._log.close()
        self._log = tempfile.TemporaryFile(prefix="colabremote-kernel-")  # noqa: SIM115 - lives on
        manager = AsyncKernelManager(
            kernel_name=_SPEC_NAME, kernel_spec_manager=_OneSpec(self._spec())
        )
        self._manager = manager
        kwargs: dict[str, Any] = {"stdout": self._log, "stderr": self._log}
        if self.cwd is not None:
            kwargs["cwd"] = self.cwd
        try:
            await manager.start_kernel(**kwargs)
        except Exception as exc:
            raise KernelStartError(f"could not start {self.python}: {exc}") from exc

    async def connect(self) -> Transport:
        assert self._manager is not None
        client: AsyncKernelClient = self._manager.client()
        client.start_channels()
        return ZMQTransport(client)

    def startup_failure(self) -> KernelStartError:
        """Why the kernel process exited, from what it printed."""
        text = ""
        if self._log is not None:
            self._log.seek(0)
            text = self._log.read().decode(errors="replace")[-3000:]
        if "No module named ipykernel" in text:
            return KernelStartError(
                f"{self.python} has no ipykernel. Install it there: "
                f"{self.python} -m pip install ipykernel cloudpickle"
            )
        return KernelStartError(
            f"the kernel ({self.python}) exited while starting. It printed:\n{text.strip()}"
        )

    async def interrupt(self) -> None:
        if self._manager is not None:
            await self._manager.interrupt_kernel()

    async def restart(self, progress: Progress) -> None:
        assert self._manager is not None
        progress("starting a fresh local kernel")
        manager = self._manager
        if await manager.is_alive():
            await manager.restart_kernel(now=True)
        else:
            with contextlib.suppress(Exception):
                await manager.shutdown_kernel(now=True)
            await self.start(lambda _msg: None)

    async def is_alive(self) -> bool:
        return self._manager is not None and bool(await self._manager.is_alive())

    async def close(self) -> None:
        manager, self._manager = self._manager, None
        if manager is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(manager.shutdown_kernel(now=False), 5)
            with contextlib.suppress(Exception):
                if await manager.is_alive():
                    await manager.shutdown_kernel(now=True)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def upload(self, local: str, remote: str, *, show_progress: bool) -> None:
        """The kernel shares this machine: a copy (through a temporary file, then a rename)."""
        await asyncio.to_thread(_copy_file, local, remote)

    async def download(self, remote: str, local: str, *, show_progress: bool) -> None:
        await asyncio.to_thread(_copy_file, remote, local)

    async def kernel_file_path(self, remote: str, kernel: KernelFiles) -> str | None:
        """The kernel shares this machine: ``remote`` is a path here (relative ones to this
        process's working directory, as ``upload`` copies them)."""
        del kernel
        return os.path.abspath(remote)

    async def port_route(self, port: int, *, fresh: bool = False) -> PortRoute:
        """The kernel runs here: its port is this machine's own."""
        del fresh
        return PortRoute(f"http://127.0.0.1:{port}", direct=True)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "python_path": self.python}


def _copy_file(source: str, target: str) -> None:
    target_dir = os.path.dirname(os.path.abspath(target))
    os.makedirs(target_dir, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target_dir, prefix=".colabremote-")
    os.close(handle)
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
