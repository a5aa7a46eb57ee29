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
import contextlib
import copy
import functools
import inspect
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    NamedTuple,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)

from ._call_retry import run_with_retries
from ._kernel.agent.objects import keep_result
from ._loop import loop_thread, wait_future
from ._serialization import RemoteCallable
from ._session.core import Item, Outcome, _Core, outcome_value
from ._state.refs import Ref, caller_origin, refs_from
from ._tracebacks import debugging, public, public_async, public_iterator, trim
from ._validation import seconds
from .exceptions import ConfigurationError, RemoteCallError

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
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (),
    ) -> None:
        if not callable(fn):
            raise ConfigurationError(
                f"remote() decorates a function, not {type(fn).__name__} {fn!r}; use it as "
                "@remote above a def"
            )
        self.fn = fn
        self.timeout = seconds("timeout", timeout, example="60")
        self.retries, self.retry_on = _retry_options(retries, retry_on)
        self._session = session
        #: "generator" or "async generator" for a (sync or async) generator function.
        self._generator = _generator_kind(fn)
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
    def with_options(
        self,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        retry_on: tuple[type[BaseException], ...] | None = None,
    ) -> RemoteFunction[P, R]:
        """The same function with other call options (``retries``/``retry_on`` unchanged when
        not given)."""
        return RemoteFunction(
            self.fn,
            session=self._session,
            timeout=timeout,
            retries=self.retries if retries is None else retries,
            retry_on=self.retry_on if retry_on is None else retry_on,
        )

    def _kept_form(self) -> RemoteFunction[P, Ref[R]]:
        """What ``self.keep`` is (a remote class has none: its instances stay anyway)."""
        self._refuse_generator(".keep")
        return _KeptResults(self)

    def __repr__(self) -> str:
        retries = f" retries={self.retries}" if self.retries else ""
        return f"<RemoteFunction {self.__qualname__} timeout={self.timeout}{retries}>"

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return functools.partial(self.__call__, instance)

    # -- calling ---------------------------------------------------------------------------

    def _run(self, items: list[Item]) -> Coroutine[Any, Any, tuple[list[Outcome], float]]:
        core = self.session._core
        if self.retries:

            def once(pending: list[Item]) -> Coroutine[Any, Any, tuple[list[Outcome], float]]:
                return core.run(self.fn, pending, timeout=self.timeout, name=self.__qualname__)

            return run_with_retries(
                once, items, retries=self.retries, retry_on=self.retry_on, name=self.__qualname__
            )
        return core.run(self.fn, items, timeout=self.timeout, name=self.__qualname__)

    def _refuse_generator(self, method: str) -> None:
        if self._generator is not None:
            raise ConfigurationError(
                f"{self.__qualname__} is a {self._generator} function, and {method} does not "
                f"stream: call it and iterate over the values (`for x in "
                f"{self.__name__}(...)`{'' if self._generator == 'generator' else ', async'}), "
                "or collect them on the kernel with a function that returns a list"
            )

    def _future(self, items: list[Item]) -> concurrent.futures.Future[tuple[list[Outcome], float]]:
        return loop_thread().submit(self._run(items))

    def _value(self, outcomes: list[Outcome]) -> R:
        result: R = outcome_value(outcomes[0], self.__qualname__)
        return result

    @public
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run on the kernel and return the result; remote output appears here live.

        A generator function gives an iterator (an async one for ``async def``) of the values
        as the kernel produces them."""
        if self._generator is not None:
            return self._stream((args, kwargs))
        outcomes, _ = loop_thread().run(self._run([(args, kwargs)]))
        return self._value(outcomes)

    def _stream(self, item: Item) -> R:
        from ._streams import RemoteAsyncGenerator, RemoteGenerator, Stream

        stream = Stream(
            self.session._core, self.fn, item, name=self.__qualname__, timeout=self.timeout
        )
        if self._generator == "async generator":
            return cast(R, RemoteAsyncGenerator(stream))
        return cast(R, RemoteGenerator(stream))

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run here, in this process, as a plain call."""
        return self.fn(*args, **kwargs)

    @public
    def submit(self, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[R]:
        """Start a remote call and return a Future for its result (cancel() interrupts it)."""
        self._refuse_generator("submit()")
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
        self._refuse_generator(".aio()")
        outcomes, _ = await asyncio.wrap_future(self._future([(args, kwargs)]))
        return self._value(outcomes)

    @public
    def spawn(self, *args: P.args, **kwargs: P.kwargs) -> RemoteCall[R]:
        """Start a detached call and return once it is sent: it runs on the kernel whether or
        not this process lives on, with its output and result kept on the runtime's disk.
        ``call.id`` finds it again from any process (``s.call(id)``). No ``timeout``, and
        never retried (``retries=`` applies to the other ways to call)."""
        self._refuse_generator("spawn()")
        from ._detached.calls import spawn
        from ._detached.public import RemoteCall

        loop = loop_thread()
        call = loop.run(spawn(self.session._core, self.fn, (args, kwargs), self.__qualname__))
        return RemoteCall(call, loop)

    @public_async
    async def spawn_aio(self, *args: P.args, **kwargs: P.kwargs) -> AsyncRemoteCall[R]:
        """``await f.spawn_aio(...)``: :meth:`spawn` for async code."""
        self._refuse_generator("spawn_aio()")
        from ._detached.calls import spawn
        from ._detached.public import AsyncRemoteCall

        loop = loop_thread()
        started = spawn(self.session._core, self.fn, (args, kwargs), self.__qualname__)
        call = await asyncio.wrap_future(loop.submit(started))
        return AsyncRemoteCall(call, loop)

    @overload
    def map(
        self,
        *iterables: Iterable[Any],
        return_exceptions: Literal[False] = False,
        ordered: bool = True,
    ) -> Iterator[R]: ...

    @overload
    def map(
        self, *iterables: Iterable[Any], return_exceptions: bool, ordered: bool = True
    ) -> Iterator[R | Exception]: ...

    @public_iterator
    def map(
        self, *iterables: Iterable[Any], return_exceptions: bool = False, ordered: bool = True
    ) -> Iterator[R] | Iterator[R | Exception]:
        """Call over the zipped inputs; results come in input order, lazily.

        Inputs go in batches sized so each takes a few milliseconds on the kernel, with a few
        batches in flight. The first failing item raises when the iteration reaches it; with
        ``return_exceptions=True`` its exception is yielded in its place instead. With
        ``ordered=False`` results come as their batches finish (a retried batch comes later).
        """
        self._refuse_generator("map()")
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

        def next_done() -> tuple[concurrent.futures.Future[tuple[list[Outcome], float]], int]:
            if not ordered:
                futures = [future for future, _ in window]
                wait_future(_first_done(futures))
                for entry in window:
                    if entry[0].done():
                        window.remove(entry)
                        return entry
            return window.popleft()

        try:
            fill()
            while window:
                future, count = next_done()
                try:
                    outcomes, seconds = wait_future(future)
                except RemoteCallError as error:
                    if not return_exceptions:
                        raise
                    outcomes, seconds = [], 0.0
                    for _ in range(count):
                        yield error
                if self.timeout is None and outcomes:
                    per_item = seconds / max(count, 1)
                    wanted = int(MAP_BATCH_SECONDS / per_item) if per_item > 0 else MAP_MAX_BATCH
                    size = max(1, min(MAP_MAX_BATCH, wanted, size * 4))
                fill()
                for outcome in outcomes:
                    if not return_exceptions:
                        yield self._value([outcome])
                        continue
                    try:
                        value = self._value([outcome])
                    except Exception as error:  # noqa: BLE001 - an item, as asked
                        yield error
                    else:
                        yield value
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


def _first_done(
    futures: list[concurrent.futures.Future[tuple[list[Outcome], float]]],
) -> concurrent.futures.Future[None]:
    """A future that completes when the first of ``futures`` does (waited on like a call)."""
    first: concurrent.futures.Future[None] = concurrent.futures.Future()

    def done(_: Any) -> None:
        if not first.done():
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                first.set_result(None)

    for future in futures:
        future.add_done_callback(done)
    return first


def _generator_kind(fn: Callable[..., Any]) -> str | None:
    """Whether ``fn`` is a generator function ("generator"), an async one, or neither (None)."""
    target = inspect.unwrap(fn) if inspect.isfunction(fn) else fn
    if inspect.isasyncgenfunction(target):
        return "async generator"
    if inspect.isgeneratorfunction(target):
        return "generator"
    return None


def _retry_options(
    retries: int, retry_on: tuple[type[BaseException], ...]
) -> tuple[int, tuple[type[BaseException], ...]]:
    """``retries=`` and ``retry_on=`` checked: a count, and a tuple of exception classes."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigurationError(
            f"retries= is how many times to run a call again, a whole number >= 0, not "
            f"{retries!r}; for example retries=2"
        )
    if isinstance(retry_on, type):
        retry_on = (retry_on,)
    if not isinstance(retry_on, tuple) or not all(
        isinstance(cls, type) and issubclass(cls, BaseException) for cls in retry_on
    ):
        raise ConfigurationError(
            f"retry_on= is a tuple of exception classes, not {retry_on!r}; for example "
            "retry_on=(TimeoutError,)"
        )
    if retry_on and not retries:
        raise ConfigurationError(
            "retry_on= names what to retry, and retries= how often: pass retries=N too, for "
            "example retries=2"
        )
    return retries, retry_on


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
    fn: Callable[P, R],
    /,
    *,
    timeout: float | None = None,
    session: SessionLike | None = None,
    retries: int = 0,
    retry_on: tuple[type[BaseException], ...] = (),
) -> RemoteFunction[P, R]: ...


@overload
def remote(
    fn: None = None,
    /,
    *,
    timeout: float | None = None,
    session: SessionLike | None = None,
    retries: int = 0,
    retry_on: tuple[type[BaseException], ...] = (),
) -> RemoteDecorator: ...


@public
def remote(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    timeout: float | None = None,
    session: SessionLike | None = None,
    retries: int = 0,
    retry_on: tuple[type[BaseException], ...] = (),
) -> RemoteFunction[..., Any] | RemoteDecorator:
    """Run the decorated function remotely: ``@remote``, ``@remote(timeout=600)``, or
    ``remote(fn, timeout=600)``. On a class, instances live on the kernel (a remote class).

    Without ``session=`` it uses the default session, made on first call from ``COLABREMOTE_*``
    settings (the local backend when none are set) and closed when the interpreter exits.
    ``retries=N`` (for idempotent work) runs a call again on a fresh kernel when its kernel
    died, and when it raised one of ``retry_on``.
    """
    options = _Options(timeout, session, retries, retry_on)
    if fn is None:
        return cast(RemoteDecorator, functools.partial(_make, options=options))
    return _make(fn, options)


class _Options(NamedTuple):
    timeout: float | None
    session: SessionLike | None
    retries: int
    retry_on: tuple[type[BaseException], ...]


def _make(fn: Callable[P, R], options: _Options) -> RemoteFunction[P, R]:
    timeout, session, retries, retry_on = options
    target = fn.fn if isinstance(fn, RemoteFunction) else fn
    if isinstance(target, type) and _class_maker is not None:
        if isinstance(fn, RemoteFunction):
            timeout = timeout if timeout is not None else fn.timeout
            session = session or fn._session
            retries, retry_on = retries or fn.retries, retry_on or fn.retry_on
        made = _class_maker(target, timeout, session)
        if retries:
            made = made.with_options(timeout=made.timeout, retries=retries, retry_on=retry_on)
        return cast(RemoteFunction[P, R], made)
    if isinstance(fn, RemoteFunction):
        return RemoteFunction(
            fn.fn,
            session=session or fn._session,
            timeout=timeout if timeout is not None else fn.timeout,
            retries=retries or fn.retries,
            retry_on=retry_on or fn.retry_on,
        )
    if not callable(fn):
        raise ConfigurationError(
            f"@remote decorates a function, not {type(fn).__name__}; write @remote or "
            "@remote(timeout=...) directly above a def"
        )
    return RemoteFunction(fn, session=session, timeout=timeout, retries=retries, retry_on=retry_on)
