"""The public faces of a detached call: :class:`RemoteCall` (blocking), :class:`AsyncRemoteCall`
and :class:`CallStatus`. The work happens on the private loop, in ``calls.py`` (imported only
when a detached call is used, since it brings the backends)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from .._loop import LoopThread
from .._tracebacks import public, public_async, public_iterator
from .._validation import seconds

if TYPE_CHECKING:
    from .calls import DetachedCall

R = TypeVar("R")

#: State of a call this session spawned that its kernel has not started yet (busy before it).
QUEUED = "queued"
#: The agent's name for a call that runs (``agent/detached.py``).
_RUNNING = "running"


@dataclass(frozen=True)
class CallStatus:
    """Where a detached call is: ``state`` is ``queued`` (sent; the kernel is busy before it),
    ``running``, ``done``, ``failed`` (it raised), ``cancelled``, or ``lost`` (its kernel ended
    while it ran). ``error`` is ``Type: message`` of a failed call."""

    id: str
    function: str
    state: str
    started: datetime | None = None
    finished: datetime | None = None
    error: str | None = None

    @property
    def running(self) -> bool:
        """Whether it has yet to end (queued or running)."""
        return self.state in (QUEUED, _RUNNING)

    def __str__(self) -> str:
        when = f" since {self.started:%Y-%m-%d %H:%M:%S}" if self.started else ""
        if self.finished is not None:
            when = f", ended {self.finished:%Y-%m-%d %H:%M:%S}"
        error = f": {self.error}" if self.error else ""
        return f"{self.id}  {self.function}  {self.state}{when}{error}"


class RemoteCall(Generic[R]):
    """A detached call, from ordinary (blocking) code: ``f.spawn(...)`` or ``s.call(id)``.

    It runs on the kernel whether or not this process lives. ``id`` names it (pass it to
    ``s.call(id)`` in another process, or to ``colabremote logs``); ``logs()`` is its output so
    far, ``logs(follow=True)`` streams it until the call ends; ``result()`` waits for its value
    (or raises what it raised); ``cancel()`` interrupts it; ``status()`` says where it is.
    """

    def __init__(self, call: DetachedCall, loop: LoopThread) -> None:
        self._call = call
        self._loop = loop

    @property
    def id(self) -> str:
        return self._call.id

    def __repr__(self) -> str:
        return f"<RemoteCall {self._call.id} {self._call.name}>"

    @public
    def status(self) -> CallStatus:
        """Where the call is now (state, start and end times)."""
        return self._loop.run(self._call.status())

    @overload
    def logs(self, *, follow: Literal[False] = False) -> str: ...

    @overload
    def logs(self, *, follow: Literal[True]) -> Iterator[str]: ...

    @public
    def logs(self, *, follow: bool = False) -> str | Iterator[str]:
        """The output so far; ``follow=True``: an iterator over it from the start, then live
        as it is written, each piece once, ending when the call does."""
        if follow:
            return self._follow()
        return self._loop.run(self._call.logs())

    @public_iterator
    def _follow(self) -> Iterator[str]:
        pieces = self._call.follow()
        try:
            while True:
                try:
                    yield self._loop.run(_next(pieces))
                except StopAsyncIteration:
                    return
        finally:
            with contextlib.suppress(Exception):
                self._loop.run(pieces.aclose())

    @public
    def result(self, timeout: float | None = None) -> R:
        """The call's value once it ends (what it raised, raised here). ``timeout``: at most
        this many seconds, then CallStillRunning (the call runs on)."""
        limit = seconds("timeout", timeout, example="600")
        value: R = self._loop.run(self._call.result(limit))
        return value

    @public
    def cancel(self) -> CallStatus:
        """Interrupt the call on the kernel; its status afterwards says what happened
        (``cancelled``; ``done`` or ``failed`` if it ended first; ``running`` if it ignored the
        interrupt for 10 s)."""
        return self._loop.run(self._call.cancel())


class AsyncRemoteCall(Generic[R]):
    """A detached call, from async code: ``await f.spawn_aio(...)`` or ``await s.call(id)``.
    The same methods as :class:`RemoteCall`, awaited; ``follow()`` is ``logs(follow=True)``."""

    def __init__(self, call: DetachedCall, loop: LoopThread) -> None:
        self._call = call
        self._loop = loop

    async def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        if asyncio.get_running_loop() is self._loop.loop:
            return await coro
        return await asyncio.wrap_future(self._loop.submit(coro))

    @property
    def id(self) -> str:
        return self._call.id

    def __repr__(self) -> str:
        return f"<AsyncRemoteCall {self._call.id} {self._call.name}>"

    @public_async
    async def status(self) -> CallStatus:
        """Where the call is now."""
        status: CallStatus = await self._run(self._call.status())
        return status

    @public_async
    async def logs(self) -> str:
        """The output so far."""
        text: str = await self._run(self._call.logs())
        return text

    async def follow(self) -> AsyncIterator[str]:
        """The output from the start, then live, each piece once, until the call ends."""
        pieces = self._call.follow()
        try:
            while True:
                try:
                    yield await self._run(_next(pieces))
                except StopAsyncIteration:
                    return
        finally:
            with contextlib.suppress(Exception):
                await self._run(pieces.aclose())

    @public_async
    async def result(self, timeout: float | None = None) -> R:
        """The call's value once it ends; ``timeout``: then CallStillRunning."""
        limit = seconds("timeout", timeout, example="600")
        value: R = await self._run(self._call.result(limit))
        return value

    @public_async
    async def cancel(self) -> CallStatus:
        """Interrupt the call on the kernel; its status afterwards."""
        status: CallStatus = await self._run(self._call.cancel())
        return status


async def _next(pieces: AsyncGenerator[str, None]) -> str:
    return await pieces.__anext__()
