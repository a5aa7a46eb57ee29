"""Remote classes: ``@remote`` on a class. Calling it runs ``__init__`` once, on the kernel; the
instance stays there (in the agent's object table) and the caller gets a handle.

A handle's methods are :class:`RemoteMethod` objects, RemoteFunctions with every way to call
(``m.predict(x)``, ``.submit``, ``.map``, ``.aio``): the agent's ``call_kept_method`` gets the
instance by its key and calls the method on it. A handle passed to a remote function of the same
session arrives there as the instance itself; it is freed on the kernel by ``close()``, at the
end of a ``with`` block, or when it is garbage-collected.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast

from .._kernel.agent.objects import call_kept_method
from .._kernel.wire import ItemStatus
from .._remote import (
    RemoteFunction,
    SessionLike,
    _generator_kind,
    _KeptResults,
    use_class_maker,
)
from .._serialization import KeptReference, KernelTarget
from .._session.core import Item, Outcome
from .._tracebacks import public
from ..exceptions import ConfigurationError, RemoteAttributeError
from .refs import Ref, caller_origin

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class RemoteClass(RemoteFunction[..., Any], Generic[T]):
    """A class whose instances live on a session's kernel (``@s.remote`` above a class).

    Calling it, or ``submit``/``map``/``aio``, runs ``__init__`` on the kernel, once per
    instance, and gives a :class:`RemoteInstance` handle. ``timeout=`` applies to the
    constructor and to every method call. ``cls`` is the class itself.
    """

    def __init__(
        self, cls: type[T], *, session: SessionLike | None = None, timeout: float | None = None
    ) -> None:
        super().__init__(cls, session=session, timeout=timeout)
        self.cls = cls

    @public
    def __call__(self, *args: Any, **kwargs: Any) -> RemoteInstance[T]:
        """Make an instance on the kernel (its ``__init__`` runs there) and return its handle."""
        instance: RemoteInstance[T] = super().__call__(*args, **kwargs)
        return instance

    def with_options(self, **options: Any) -> RemoteClass[T]:
        """The same class with other call options (for its constructor and methods)."""
        remade = RemoteClass.__new__(RemoteClass)
        remade.__dict__.update(RemoteFunction.with_options(self, **options).__dict__)
        remade.cls = self.cls
        return remade

    def local(self, *args: Any, **kwargs: Any) -> T:
        """An ordinary instance, made here."""
        return self.cls(*args, **kwargs)

    def _kept_form(self) -> RemoteFunction[..., Ref[Any]]:
        raise RemoteAttributeError(
            f"{self.__qualname__} is a remote class: its instances stay on the kernel already, "
            f"and {self.__qualname__}(...) returns a handle to one; drop the .keep"
        )

    def _run(self, items: list[Item]) -> Coroutine[Any, Any, tuple[list[Outcome], float]]:
        origin = caller_origin(f"{self.__qualname__}()")
        constructor: RemoteFunction[..., Any] = RemoteFunction.__new__(RemoteFunction)
        constructor.__dict__.update(self.__dict__)  # the class's options, as a plain function
        return self._handles(_KeptResults(constructor).run_kept(items, origin))

    async def _handles(
        self, running: Coroutine[Any, Any, tuple[list[Outcome], float]]
    ) -> tuple[list[Outcome], float]:
        outcomes, kernel_seconds = await running
        handles = [
            (status, RemoteInstance(self, value) if status == ItemStatus.OK else value)
            for status, value in outcomes
        ]
        return handles, kernel_seconds

    def __repr__(self) -> str:
        return f"<RemoteClass {self.__qualname__} timeout={self.timeout}>"


class RemoteInstance(KeptReference, Generic[T]):
    """A handle to an instance that lives on the kernel (what calling a :class:`RemoteClass`
    returns).

    ``handle.name`` is the method ``name`` as a :class:`RemoteMethod` (call it, or use
    ``.submit``, ``.map``, ``.aio``); ``handle.method(Cls.cls.name)`` is the same, typed from
    the method's signature. Attributes that are not methods, and names starting with ``_``, are
    not forwarded (:class:`~colabremote.exceptions.RemoteAttributeError`): the instance's data
    lives on the kernel, so read it through a method. Passed to a remote function of the same
    session, the handle arrives there as the instance itself.
    """

    def __init__(self, remote_class: RemoteClass[T], ref: Ref[T]) -> None:
        self._remote_class = remote_class
        self._ref = ref

    @property
    def ref(self) -> Ref[T]:
        """The instance as a :class:`Ref` (``ref.fetch()`` brings a copy here)."""
        return self._ref

    def _kept_reduce(self, target: KernelTarget | None) -> tuple[Any, ...]:
        return self._ref._kept_reduce(target)

    def __getattr__(self, name: str) -> RemoteMethod[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return RemoteMethod(self, name)

    def method(self, fn: Callable[Concatenate[T, P], R]) -> RemoteMethod[P, R]:
        """The remote form of one of the class's methods, typed from it:
        ``m.method(Model.cls.predict).submit(x)``. Reaches methods whose names a handle uses
        itself (``close``, ``method``, ``ref``) or that start with ``_``."""
        name = getattr(fn, "__name__", None)
        own = inspect.getattr_static(self._remote_class.cls, name, None) if name else None
        if name is None or getattr(own, "__func__", own) is not getattr(fn, "__func__", fn):
            raise ConfigurationError(
                f"{fn!r} is not a method of {self._remote_class.__qualname__}; pass one from "
                f"the class, like handle.method({self._remote_class.__qualname__}.cls.name)"
            )
        return RemoteMethod(self, name)

    def close(self) -> None:
        """Free the instance on the kernel now (garbage collection of the handle does too).
        Never waits; the handle cannot be used afterwards."""
        self._ref.free()

    def __enter__(self) -> RemoteInstance[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._ref.freed else ""
        return (
            f"<RemoteInstance {self._remote_class.__qualname__} {self._ref.key}{state} "
            f"session={self._ref.session!r}>"
        )

    def __reduce__(self) -> Any:
        raise TypeError(
            f"a remote {self._remote_class.__qualname__} instance can only travel as an argument "
            "of its own session's remote functions"
        )


class RemoteMethod(RemoteFunction[P, R], KeptReference):
    """A method of a remote instance: calls run on the kernel, on the instance there, with
    every way a RemoteFunction has (``.submit``, ``.map``, ``.aio``, timeouts, Ctrl-C)."""

    def __init__(self, instance: RemoteInstance[Any], name: str) -> None:
        remote_class = instance._remote_class
        attribute = inspect.getattr_static(remote_class.cls, name, None)
        function = getattr(attribute, "__func__", attribute)
        if not callable(function) or isinstance(attribute, property):
            what = "has no attribute" if attribute is None else "has a non-method attribute"
            raise RemoteAttributeError(
                f"{remote_class.__qualname__} {what} {name!r}; a remote instance's data lives "
                f"on the kernel: read it through a method (def get_{name}(self): return "
                f"self.{name}), or fetch a copy with handle.ref.fetch()"
            )
        caller = cast(Callable[P, R], call_kept_method)
        super().__init__(caller, session=remote_class._session, timeout=remote_class.timeout)
        self._name(instance, name, function)

    def _name(self, instance: RemoteInstance[Any], name: str, function: Any) -> None:
        self._instance = instance
        self._method = name
        self._function = function
        functools.update_wrapper(self, function)
        self.__name__ = name
        self.__qualname__ = f"{instance._remote_class.__qualname__}.{name}"
        # A generator method streams, like a remote generator function.
        self._generator = _generator_kind(function)

    def with_options(self, **options: Any) -> RemoteMethod[P, R]:
        """The same method with other call options."""
        remade = RemoteMethod.__new__(RemoteMethod)
        remade.__dict__.update(RemoteFunction.with_options(self, **options).__dict__)
        remade._name(self._instance, self._method, self._function)
        return remade

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        raise ConfigurationError(
            f"{self.__qualname__} belongs to an instance that lives on the kernel, with no copy "
            "here to run it on; call it without .local"
        )

    def _run(self, items: list[Item]) -> Coroutine[Any, Any, tuple[list[Outcome], float]]:
        bound: list[Item] = [((self._instance, self._method, *args), kw) for args, kw in items]
        return super()._run(bound)

    def _stream(self, item: Item) -> R:
        args, kwargs = item
        return super()._stream(((self._instance, self._method, *args), kwargs))

    def _kept_reduce(self, target: KernelTarget | None) -> tuple[Any, ...]:
        # Inside another remote function, the bound method of the instance on the kernel.
        return getattr, (self._instance, self._method)

    def __repr__(self) -> str:
        return f"<RemoteMethod {self.__qualname__} of {self._instance!r}>"


def _make_class(cls: type, timeout: float | None, session: SessionLike | None) -> RemoteClass[Any]:
    return RemoteClass(cls, session=session, timeout=timeout)


use_class_maker(_make_class)
