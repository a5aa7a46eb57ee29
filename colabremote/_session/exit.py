"""Nothing is left running when the interpreter exits: open sessions release their kernels (and
Colab runtimes), also when the process is stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours
import contextlib
import signal
import threading

from .._backends.base import Backend
from .._loop import loop_thread
from .core import _open_cores

#: How long the exit hook waits for every open session to close.
CLOSE_AT_EXIT_SECONDS = 30.0


def release_on_sigterm(backend: Backend) -> None:
    """Make SIGTERM exit through the interpreter's exit hooks, which release Colab runtimes.

    Installed once, from the main thread, and only where SIGTERM still has its default action
    (a program's own handler is left alone).
    """
    if not backend.releases_at_exit:
        return
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _close_all_at_exit() -> None:
    """Sessions still open when the interpreter exits (the default session among them) release
    their kernels."""
    cores = list(_open_cores)
    if not cores:
        return

    async def close_all() -> None:
        await asyncio.gather(*(core.close() for core in cores), return_exceptions=True)

    with contextlib.suppress(Exception):
        loop_thread().submit(close_all()).result(timeout=CLOSE_AT_EXIT_SECONDS)


def _register_exit_hook() -> None:
    """Run the exit hook before Python shuts its thread pools at exit.

    Closing a session resolves addresses and stops servers in worker threads (asyncio's, and the
    emulator's tornado loop); from a plain ``atexit`` hook those pools are already shut and the
    close fails with "cannot schedule new futures after shutdown", leaving servers and kernels
    running. The threading module's exit hooks run earlier, newest first: registered after the
    thread pools' own hook (imported above), ours runs before it.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is None:  # an interpreter without the hook: the plain one is the best there is
        atexit.register(_close_all_at_exit)
    else:
        register(_close_all_at_exit)


_register_exit_hook()
