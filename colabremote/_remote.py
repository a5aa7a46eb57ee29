"""``@remote``: a function object that runs its body on a session's kernel.

Calling it runs remotely and returns the result (or raises what the function raised);
``.local`` runs here, ``.submit`` returns a Future, ``.map`` runs over many inputs in order, and
``.aio`` is the ``await``-able form; ``.spawn`` starts a detached call (``_detached/``).
``.keep`` is the same function with its results kept on the kernel (each call returns a
:class:`Ref`). On a class, ``@remote`` makes a remote class (``_state/classes.py``, which
registers itself here).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import functools
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, cast, overload

from ._kernel.agent.objects import keep_result
from ._loop import loop_thread, wait_future
from ._serialization import RemoteCallable
from ._session.core import Item, Outcome, _Core, outcome_value
from ._state.refs import Ref, caller_origin, refs_from
from ._tracebacks import debugging, public, public_async, public_iterator, trim
from ._validation import seconds
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from ._detached.public import AsyncRemoteCall, RemoteCall
    from ._state.classes import RemoteClass

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class SessionLike(Protocol):
    """What a RemoteFunction needs of its session (``Session`` and ``AsyncSession`` both are)."""

    @property
    def _core(self) -> _Core: ...


_default_session: Callable[[], SessionLike] | None = None


def use_default_session(provider: Callable[[], SessionLike]) -> None:
    """Where functions without ``session=`` get their session (set by the session package,
    which sits above this module)."""
    global _default_session
    _default_session = provider


ClassMaker = Callable[[type, "float | None", "SessionLike | None"], "RemoteClass[Any]"]
_class_maker: ClassMaker | None = None


def use_class_maker(maker: ClassMaker) -> None:
    """What ``@remote`` makes of a class (set by ``_state/classes.py``, which sits above this
    module because a remote class's methods are RemoteFunctions)."""
    global _class_maker
    _class_maker = maker


#: Map batches are sized so each takes about this long on the kernel.
MAP_BATCH_SECONDS = 0.02
MAP_MAX_BATCH = 1024
#: Batches a map keeps in flight; enough to hide one round trip behind the kernel's work.
MAP_WINDOW = 3


class _Keep:
    """``f.keep``: the same function with its results kept on the kernel; each call returns a
    :class:`Ref` instead of the value (``f.keep(x)``, ``f.keep.submit(x)``, ``f.keep.map(xs)``,
    ``await f.keep.aio(x)``). A descriptor rather than a property: mypy would pass a property's
    value through ``RemoteFunction.__get__`` and lose its type."""

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> _Keep: ...

    @overload
    def __get__(
        self, instance: RemoteFunction[P, R], owner: type | None = None
    ) -> RemoteFunction[P, Ref[R]]: ...

    def __get__(
        self, instance: RemoteFunction[P, R] | None, owner: type | None = None
    ) -> RemoteFunction[P, Ref[R]] | _Keep:
        return self if instance is None else instance._kept_form()


class RemoteFunction(RemoteCallable, Generic[P, R]):
    """A function whose calls run on a colabremote session's kernel."""

    fn: Callable[P, R]
    keep = _Keep()

    @public
    def __init__(
        self,
        fn: Callable[P, R],
        *,
        session: SessionLike | None = None,
        timeout: float | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigurationError(
                f"remote() decorates a function, not {type(fn).__name__} {fn!r}; use it as "
                "@remote above a def"
            )
        self.fn = fn
        self.timeout = seconds("timeout", timeout, example="60")
        self._session = session
        functools.update_wrapper(self, fn)
        self.__name__ = getattr(fn, "__name__", "function")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)

    # -- configuration ---------------------------------------------------------------------

    @property
    @public
    def session(self) -> SessionLike:
        """The session calls go to (the default session unless one was given)."""
        if self._session is not None:
            return self._session
        if _default_session is None:  # only when colabremote/__init__ was bypassed
            raise ConfigurationError("no default session is available; pass session=")
        return _default_session()

    @public
    def with_options(self, *, timeout: float | None = None) -> RemoteFunction[P, R]:
        """The same function with other call options."""
        return RemoteFunction(self.fn, session=self._session, timeout=timeout)

    def _kept_form(self) -> RemoteFunction[P, Ref[R]]:
        """What ``self.keep`` is (a remote class has none: its instances stay anyway)."""
        return _KeptResults(self)

    def __repr__(self) -> str:
        return f"<RemoteFunction {self.__qualname__} timeout={self.timeout}>"

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return functools.partial(self.__call__, instance)

    # -- calling ---------------------------------------------------------------------------

    def _run(self, items: list[Item]) -> Coroutine[Any, Any, tuple[list[Outcome], float]]:
        core = self.session._core
        return core.run(self.fn, items, timeout=self.timeout, name=self.__qualname__)

    def _future(self, items: list[Item]) -> concurrent.futures.Future[tuple[list[Outcome], float]]:
        return loop_thread().submit(self._run(items))

    def _value(self, outcomes: list[Outcome]) -> R:
        result: R = outcome_value(outcomes[0], self.__qualname__)
        return result

    @public
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run on the kernel and return the result; remote output appears here live."""
        outcomes, _ = loop_thread().run(self._run([(args, kwargs)]))
        return self._value(outcomes)

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run here, in this process, as a plain call."""
        return self.fn(*args, **kwargs)

    @public
    def submit(self, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[R]:
        """Start a remote call and return a Future for its result (cancel() interrupts it)."""
        inner = self._future([(args, kwargs)])
        outer: concurrent.futures.Future[R] = _Future()

        def finish(done: concurrent.futures.Future[tuple[list[Outcome], float]]) -> None:
            if done.cancelled() or not outer.set_running_or_notify_cancel():
                outer.cancel()
                return
            exc = done.exception()
            if exc is not None:
                outer.set_exception(exc)
                return
            try:
                outer.set_result(self._value(done.result()[0]))
            except BaseException as error:  # noqa: BLE001 - delivered through the future
                outer.set_exception(error)

        def forward_cancel(f: concurrent.futures.Future[R]) -> None:
            if f.cancelled():
                inner.cancel()

        outer.add_done_callback(forward_cancel)
        inner.add_done_callback(finish)
        return outer

    @public_async
    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """``await f.aio(...)``: the remote call for async code (cancelling interrupts it)."""
        outcomes, _ = await asyncio.wrap_future(self._future([(args, kwargs)]))
        return self._value(outcomes)

    @public
    def spawn(self, *args: P.args, **kwargs: P.kwargs) -> RemoteCall[R]:
        """Start a detached call and return once it is sent: it runs on the kernel whether or
        not this process lives on, with its output and result kept on the runtime's disk.
        ``call.id`` finds it again from any process (``s.call(id)``). No ``timeout``."""
        from ._detached.calls import spawn
        from ._detached.public import RemoteCall

        loop = loop_thread()
        call = loop.run(spawn(self.session._core, self.fn, (args, kwargs), self.__qualname__))
        return RemoteCall(call, loop)

    @public_async
    async def spawn_aio(self, *args: P.args, **kwargs: P.kwargs) -> AsyncRemoteCall[R]:
        """``await f.spawn_aio(...)``: :meth:`spawn` for async code."""
        from ._detached.calls import spawn
        from ._detached.public import AsyncRemoteCall

        loop = loop_thread()
        started = spawn(self.session._core, self.fn, (args, kwargs), self.__qualname__)
        call = await asyncio.wrap_future(loop.submit(started))
        return AsyncRemoteCall(call, loop)

    @public_iterator
    def map(self, *iterables: Iterable[Any]) -> Iterator[R]:
        """Call over the zipped inputs; results come in input order, lazily.

        Inputs go in batches sized so each takes a few milliseconds on the kernel, with a few
        batches in flight. The first failing item raises when the iteration reaches it.
        """
        items = iter(zip(*iterables, strict=False))
        window: deque[tuple[concurrent.futures.Future[tuple[list[Outcome], float]], int]] = deque()
        size = 1
        exhausted = False

        def fill() -> None:
            nonlocal exhausted
            while not exhausted and len(window) < MAP_WINDOW:
                batch: list[Item] = []
                for args in items:
                    batch.append((tuple(args), {}))
                    if len(batch) >= size:
                        break
                if not batch:
                    exhausted = True
                    return
                window.append((self._future(batch), len(batch)))

        try:
            fill()
            while window:
                future, count = window[0]
                outcomes, seconds = wait_future(future)
                window.popleft()
                if self.timeout is None:
                    per_item = seconds / max(count, 1)
                    wanted = int(MAP_BATCH_SECONDS / per_item) if per_item > 0 else MAP_MAX_BATCH
                    size = max(1, min(MAP_MAX_BATCH, wanted, size * 4))
                fill()
                for outcome in outcomes:
                    yield self._value([outcome])
        finally:
            for future, _ in window:
                future.cancel()


class _KeptResults(RemoteFunction[P, Ref[R]]):
    """``f.keep``: ``f``, each result kept on the kernel (by the agent's ``keep_result``) and
    returned as a :class:`Ref` to it."""

    def __init__(self, plain: RemoteFunction[P, R]) -> None:
        # Every option of ``plain`` carries over as it is (no RemoteFunction.__init__).
        self.__dict__.update(plain.__dict__)
        self._plain = plain

    def with_options(self, **options: Any) -> RemoteFunction[P, Ref[R]]:
        """The same function with other call options; results are still kept."""
        return _KeptResults(self._plain.with_options(**options))

    def local(self, *args: P.args, **kwargs: P.kwargs) -> Ref[R]:
        raise ConfigurationError(
            f"{self.__qualname__}.keep keeps results on a kernel, and .local runs here; call "
            f"{self.__qualname__}.local(...) for the plain value"
        )

    def _run(self, items: list[Item]) -> Coroutine[Any, Any, tuple[list[Outcome], float]]:
        return self.run_kept(items, caller_origin(f"{self.__qualname__}.keep()"))

    async def run_kept(self, items: list[Item], origin: str) -> tuple[list[Outcome], float]:
        """Run the items as the plain function does (a remote method too), its function
        wrapped in ``keep_result``; each value that comes back is a :class:`Ref` made at
        ``origin``."""
        keeping = copy.copy(self._plain)
        keeping.fn = cast(Callable[P, R], functools.partial(keep_result, self._plain.fn))
        outcomes, kernel_seconds = await keeping._run(items)
        return refs_from(outcomes, self.session, origin), kernel_seconds

    def __repr__(self) -> str:
        return f"<RemoteFunction {self.__qualname__}.keep timeout={self.timeout}>"


class _Future(concurrent.futures.Future[R]):
    """What ``submit`` returns: ``result()`` and ``exception()`` give the call's error trimmed
    to the user's frames, like a direct call (see ``_tracebacks``)."""

    @public
    def result(self, timeout: float | None = None) -> R:
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        error = super().exception(timeout)
        return error if error is None or debugging() else trim(error)


class RemoteDecorator(Protocol):
    """What ``@remote(timeout=...)`` returns: the decorator, for a function or a class."""

    @overload
    def __call__(self, fn: type[T], /) -> RemoteClass[T]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> RemoteFunction[P, R]: ...


@overload
def remote(
    fn: type[T], /, *, timeout: float | None = None, session: SessionLike | None = None
) -> RemoteClass[T]: ...


@overload
def remote(
    fn: Callable[P, R], /, *, timeout: float | None = None, session: SessionLike | None = None
) -> RemoteFunction[P, R]: ...


@overload
def remote(
    fn: None = None, /, *, timeout: float | None = None, session: SessionLike | None = None
) -> RemoteDecorator: ...


@public
def remote(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    timeout: float | None = None,
    session: SessionLike | None = None,
) -> RemoteFunction[..., Any] | RemoteDecorator:
    """Run the decorated function remotely: ``@remote``, ``@remote(timeout=600)``, or
    ``remote(fn, timeout=600)``. On a class, instances live on the kernel (a remote class).

    Without ``session=`` it uses the default session, made on first call from ``COLABREMOTE_*``
    settings (the local backend when none are set) and closed when the interpreter exits.
    """
    if fn is None:
        return cast(RemoteDecorator, functools.partial(_make, timeout=timeout, session=session))
    return _make(fn, timeout=timeout, session=session)


def _make(
    fn: Callable[P, R], *, timeout: float | None, session: SessionLike | None
) -> RemoteFunction[P, R]:
    target = fn.fn if isinstance(fn, RemoteFunction) else fn
    if isinstance(target, type) and _class_maker is not None:
        if isinstance(fn, RemoteFunction):
            timeout = timeout if timeout is not None else fn.timeout
            session = session or fn._session
        return cast(RemoteFunction[P, R], _class_maker(target, timeout, session))
    if isinstance(fn, RemoteFunction):
        return RemoteFunction(
            fn.fn,
            session=session or fn._session,
            timeout=timeout if timeout is not None else fn.timeout,
        )
    if not callable(fn):
        raise ConfigurationError(
            f"@remote decorates a function, not {type(fn).__name__}; write @remote or "
            "@remote(timeout=...) directly above a def"
        )
    return RemoteFunction(fn, session=session, timeout=timeout)
