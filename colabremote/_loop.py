"""The private event-loop thread behind the synchronous API.

Every session's async core runs on this one loop, so the blocking API also works where an event
loop is already running (a notebook, an async app): the caller's thread just waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .exceptions import BlockingCallError

T = TypeVar("T")

#: How long a Ctrl-C waits for the kernel to be interrupted before giving up on a clean stop.
INTERRUPT_WAIT = 30.0


class LoopThread:
    """An event loop on a daemon thread. After ``fork`` the child has the object but not the
    thread: work given to it there goes to the child's own loop thread instead, where a session
    of the parent refuses to run (``SessionForked``) rather than wait forever."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="colabremote-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        while True:
            try:
                self.loop.run_forever()
            except (KeyboardInterrupt, SystemExit):
                # asyncio lets these out of the loop from any task that raises them. On this
                # thread (signals go to the main one) they come from the kernel: an interrupted
                # s.exec rebuilds its KeyboardInterrupt. The task keeps it for whoever awaits
                # it, so the loop carries on for every session instead of dying with it.
                continue
            return

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop; cancelling the returned future cancels the coroutine."""
        if os.getpid() != self.pid:
            return loop_thread().submit(coro)
        progress = _Progress()
        future = asyncio.run_coroutine_threadsafe(_tracked(coro, progress), self.loop)
        _progress[id(future)] = progress
        future.add_done_callback(lambda f: _progress.pop(id(f), None))
        return future

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait. Ctrl-C cancels it (interrupting remote work)."""
        if os.getpid() != self.pid:
            return loop_thread().run(coro)
        try:
            _refuse_blocking_in_a_loop()
        except BlockingCallError:
            coro.close()
            raise
        return wait_future(self.submit(coro))


def _refuse_blocking_in_a_loop() -> None:
    """A blocking call from a coroutine would freeze its event loop: point to the async API.

    IPython (a notebook cell, Jupyter's kernel) runs ordinary cell code inside its own loop;
    blocking there is what the user asked for, so it is allowed.
    """
    if threading.current_thread() is _instance_thread():
        raise BlockingCallError(
            "a blocking colabremote call was made from colabremote's own event loop "
            "(for example inside an output callback); use the async API there"
        )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    if _in_ipython():
        return
    raise BlockingCallError(
        "a blocking colabremote call was made inside a running event loop, which it would "
        "stop until the kernel answers; in async code use `await f.aio(...)` and "
        "`cr.AsyncSession` (`await s.exec(...)`, `await s.info()`)"
    )


def _in_ipython() -> bool:
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return get_ipython is not None and get_ipython() is not None


def wait_future(future: concurrent.futures.Future[T]) -> T:
    """Wait for a future from :meth:`LoopThread.submit`; Ctrl-C cancels it cleanly.

    On Ctrl-C the coroutine is cancelled (which interrupts the kernel) and we wait for that to
    finish before raising KeyboardInterrupt here; a second Ctrl-C stops the waiting.
    """
    try:
        _refuse_blocking_in_a_loop()
    except BlockingCallError:
        future.cancel()
        raise
    progress = _progress.get(id(future))
    try:
        # Waiting in slices lets a pending KeyboardInterrupt through on every platform. (Not by
        # catching TimeoutError from result(): RemoteTimeout is a TimeoutError too.)
        while not future.done():
            concurrent.futures.wait([future], timeout=0.25)
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        if progress is not None and progress.started:
            with contextlib.suppress(KeyboardInterrupt):
                progress.finished.wait(INTERRUPT_WAIT)
        raise


_progress: dict[int, _Progress] = {}


class _Progress:
    def __init__(self) -> None:
        self.started = False
        self.finished = threading.Event()


async def _tracked(coro: Coroutine[Any, Any, T], progress: _Progress) -> T:
    progress.started = True
    try:
        return await coro
    finally:
        progress.finished.set()


_lock = threading.Lock()
_instance: LoopThread | None = None


def _instance_thread() -> threading.Thread | None:
    return _instance.thread if _instance is not None else None


def loop_thread() -> LoopThread:
    global _instance
    with _lock:
        if _instance is None or _instance.pid != os.getpid() or not _instance.thread.is_alive():
            _instance = LoopThread()
        return _instance
