"""Refs: values kept on a session's kernel, passed to calls as keys (no transfer), brought home
with ``fetch``, and freed on the kernel when the last local handle goes.

The kernel's half is the agent's object table (``_kernel/agent/objects.py``). A ref is tagged
with the identity of the kernel that keeps its value, so one used after that kernel restarted,
or on another session, fails here (:class:`RefLost`) before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import types
import weakref
from collections import deque
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from .._kernel.agent.objects import keep_value, kept_object, kept_value
from .._kernel.wire import ItemStatus, Op
from .._loop import loop_thread
from .._serialization import KeptReference, KernelTarget
from .._session.core import Outcome, State, _Core, outcome_value
from .._tracebacks import public, public_async
from ..exceptions import RefLost

T = TypeVar("T")

#: Refs dropped within this long of each other are freed on the kernel in one message.
FREE_DELAY = 0.05
#: While the kernel connection is down, frees wait and are tried again this often.
FREE_RETRY = 1.0

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_PLUMBING = (_PACKAGE, os.path.dirname(asyncio.__file__) + os.sep)


class SessionLike(Protocol):
    """What a ref needs of its session (``Session`` and ``AsyncSession`` both are)."""

    @property
    def _core(self) -> _Core: ...


def caller_origin(what: str) -> str:
    """``what`` and the user's line it was called from (``put() at train.py:12``), for errors
    that must say which ref they mean."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PLUMBING):
        frame = frame.f_back
    if frame is None:
        return what
    return f"{what} at {os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


class _Frees:
    """One session's dropped refs, freed on its kernel in batches, from the private loop."""

    def __init__(self, core: _Core) -> None:
        self._core = weakref.ref(core)
        self._loop = loop_thread().loop
        self._pending: deque[tuple[str, str]] = deque()
        self._scheduled = False

    def release(self, key: str, identity: str, *, now: bool = False) -> None:
        """Free ``key`` soon. Called from finalizers (any thread, inside garbage collection),
        so it only appends and wakes the loop: it never blocks."""
        self._pending.append((key, identity))
        if now or not self._scheduled:
            self._scheduled = True
            delay = 0.0 if now else FREE_DELAY
            # A closed loop (interpreter exit): the kernel goes with it.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._later, delay)

    def _later(self, delay: float) -> None:
        if delay:
            self._loop.call_later(delay, self.flush)
        else:
            self.flush()

    def flush(self) -> None:
        """Send the pending frees to the kernel that keeps their values (on the loop). Those
        of a kernel that is gone are dropped; while the connection is down they wait."""
        self._scheduled = False
        core = self._core()
        if core is None or core.state is not State.OPEN or not self._pending:
            self._pending.clear()
            return
        client = core.client
        if client is None or client.failure is not None:
            self._scheduled = True
            self._loop.call_later(FREE_RETRY, self.flush)
            return
        current = client.hello.get("kept_identity")
        keys = []
        while self._pending:
            key, identity = self._pending.popleft()
            if identity == current:
                keys.append(key)
        if keys:
            sent = client.agent_request(
                {"op": Op.FREE, "keys": keys, "identity": current}, expect_reply=False
            )
            sent.add_done_callback(_ignore_failure)


def _ignore_failure(future: asyncio.Future[Any]) -> None:
    """A free that cannot be sent has nothing left to free: its kernel or connection is gone."""
    if not future.cancelled():
        future.exception()


_frees: weakref.WeakKeyDictionary[_Core, _Frees] = weakref.WeakKeyDictionary()


def _frees_of(core: _Core) -> _Frees:
    frees = _frees.get(core)
    if frees is None:
        frees = _frees[core] = _Frees(core)
    return frees


class Ref(KeptReference, Generic[T]):
    """A value kept on a session's kernel (from ``s.put(value)`` or ``f.keep(...)``).

    Pass it to the session's remote functions, also inside lists and dicts: it travels as a key
    and arrives there as the value itself, with no transfer. ``fetch()`` brings the value here.
    The kernel forgets the value when this ref is garbage-collected, on ``free()``, or at the
    end of a ``with`` block. Using it after its kernel restarted or on another session raises
    :class:`~colabremote.exceptions.RefLost`.
    """

    def __init__(self, session: SessionLike, descriptor: Sequence[str], origin: str) -> None:
        key, identity, type_name = (str(part) for part in descriptor)
        self._session = session
        #: The value's key in the kernel's object table.
        self.key = key
        #: The kept value's type, as ``module.QualName``.
        self.type_name = type_name
        #: What made this ref and where (``put() at train.py:12``).
        self.origin = origin
        self._identity = identity
        self._freed = False
        self._finalizer = weakref.finalize(self, _frees_of(session._core).release, key, identity)
        self._finalizer.atexit = False  # at exit the kernel is released anyway

    @property
    def session(self) -> SessionLike:
        """The session whose kernel keeps the value."""
        return self._session

    def _describe(self) -> str:
        return f"the ref to a {self.type_name} ({self.origin})"

    def _kept_reduce(self, target: KernelTarget | None) -> tuple[Any, ...]:
        if target is not None:
            self._check(target)
        return kept_object, (self.key, self._identity)

    def _check(self, target: KernelTarget) -> None:
        what = self._describe()
        if self._freed:
            raise RefLost(
                f"{what} was freed, so its value is gone from the kernel; keep the value "
                "again (s.put or f.keep) and use the new ref",
                type_name=self.type_name,
                origin=self.origin,
            )
        if target.owner is not self._session._core:
            raise RefLost(
                f"{what} belongs to {self._session!r} and is kept on that session's kernel; "
                "pass it only to that session's functions, or fetch() it and pass the value",
                type_name=self.type_name,
                origin=self.origin,
            )
        if target.identity != self._identity:
            raise RefLost(
                f"{what} was kept on a kernel that has since restarted or been replaced, and "
                "its value went with it; make it again on the new kernel",
                type_name=self.type_name,
                origin=self.origin,
            )

    async def _fetch(self) -> T:
        name = f"fetching {self._describe()}"
        core = self._session._core
        outcomes, _ = await core.run(kept_value, [((self,), {})], timeout=None, name=name)
        value: T = outcome_value(outcomes[0], name)
        return value

    @public
    def fetch(self) -> T:
        """The value, brought here (rebuilt under the session's ``trust_kernel`` policy, like
        any result); the kernel keeps it too."""
        return loop_thread().run(self._fetch())

    @public_async
    async def fetch_async(self) -> T:
        """``await ref.fetch_async()``: :meth:`fetch` for async code."""
        return await asyncio.wrap_future(loop_thread().submit(self._fetch()))

    def free(self) -> None:
        """Let the kernel forget the value now (it is also freed when this ref is
        garbage-collected). Never waits; calls made after it may no longer use this ref."""
        if self._freed:
            return
        self._freed = True
        if self._finalizer.detach() is not None:
            _frees_of(self._session._core).release(self.key, self._identity, now=True)

    @property
    def freed(self) -> bool:
        """Whether :meth:`free` was called."""
        return self._freed

    def __enter__(self) -> Ref[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.free()

    def __repr__(self) -> str:
        state = " freed" if self._freed else ""
        return f"<Ref {self.key} {self.type_name}{state} session={self._session!r}>"

    def __copy__(self) -> Ref[T]:
        return self  # one handle per kept value: a copy would free it twice

    def __deepcopy__(self, memo: dict[int, Any]) -> Ref[T]:
        return self

    def __reduce__(self) -> Any:
        raise TypeError(
            f"{self._describe()} can only travel as an argument of its own session's remote "
            "functions; to store or send the value, fetch() it first"
        )


def refs_from(outcomes: list[Outcome], session: SessionLike, origin: str) -> list[Outcome]:
    """Outcomes of a call that kept its results (``f.keep``): each value becomes a :class:`Ref`."""
    return [
        (status, Ref(session, value, origin) if status == ItemStatus.OK else value)
        for status, value in outcomes
    ]


async def put(session: SessionLike, value: T, origin: str) -> Ref[T]:
    """Keep ``value`` on the session's kernel: one upload, then a ref to it."""
    kept = await session._core.call(keep_value, [value], timeout=None, name="put()")
    return Ref(session, kept, origin)
