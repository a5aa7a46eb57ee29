"""Tracebacks a user reads: their own frames and our one-line message, not our internals.

Each public entry point is wrapped by :func:`public` (or its async and iterator forms). An error
leaving it is raised again without the frames of colabremote, the standard library and the
libraries colabremote drives, and without the internal exceptions it was chained to; a remote
traceback, and a cause raised by the user's own code, stay. The one frame left of ours is the
wrapper's, which pytest hides as well (``__tracebackhide__``; IPython hides it unless it is the
last one, which it is when the error came from colabremote). ``COLABREMOTE_DEBUG=1``, read when
the error is raised, leaves every traceback and chain whole.
"""

from __future__ import annotations

import functools
import os
import sysconfig
import types
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, ParamSpec, TypeVar

from .exceptions import RemoteTraceback

__all__ = ["debugging", "public", "public_async", "public_iterator", "trim"]

P = ParamSpec("P")
R = TypeVar("R")

#: Frames from files under this folder are colabremote's own.
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

_paths = sysconfig.get_paths()
#: The standard library (futures, threads, asyncio, shutil, ...), but not its site-packages.
_STDLIB = tuple({os.path.join(_paths[key], "") for key in ("stdlib", "platstdlib")})
_SITE = tuple({os.path.join(_paths[key], "") for key in ("purelib", "platlib")})

#: Top-level packages colabremote drives: their frames only say how it did its work.
_LIBRARIES = frozenset(
    {
        "anyio",
        "cloudpickle",
        "google",
        "httpcore",
        "httpx",
        "jupyter_client",
        "keyring",
        "tenacity",
        "tornado",
        "websockets",
        "zmq",
    }
)


def debugging() -> bool:
    """Whether ``COLABREMOTE_DEBUG`` asks for whole tracebacks (any value but empty or 0)."""
    return os.environ.get("COLABREMOTE_DEBUG", "").strip() not in ("", "0")


def _internal(frame: types.FrameType) -> bool:
    """Whether a frame is colabremote's, or of the standard library or a library it called
    (the user's own code, such as a ``__reduce__`` that failed, is none of these)."""
    path = frame.f_code.co_filename
    if path.startswith((_PACKAGE, "<frozen ")):
        return True
    if path.startswith(_STDLIB) and not path.startswith(_SITE):
        return True
    module = frame.f_globals.get("__name__")
    return isinstance(module, str) and module.partition(".")[0] in _LIBRARIES


def _user_frames(tb: types.TracebackType | None) -> list[types.TracebackType]:
    entries = []
    while tb is not None:
        if not _internal(tb.tb_frame):
            entries.append(tb)
        tb = tb.tb_next
    return entries


def _rebuilt(entries: list[types.TracebackType]) -> types.TracebackType | None:
    """A traceback of just ``entries``, in their order."""
    head: types.TracebackType | None = None
    for entry in reversed(entries):
        head = types.TracebackType(head, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return head


def _reaches_user_code(error: BaseException) -> bool:
    return bool(_user_frames(error.__traceback__))


def trim(error: BaseException) -> BaseException:
    """``error`` with only the user's frames in its traceback, and only the user's exceptions
    (and a remote traceback) in its chain; changed in place and returned, to be raised."""
    _trim(error, set())
    return error


def _trim(error: BaseException, seen: set[int]) -> None:
    if id(error) in seen:
        return
    seen.add(id(error))
    error.__traceback__ = _rebuilt(_user_frames(error.__traceback__))
    cause = error.__cause__
    if cause is not None and not isinstance(cause, RemoteTraceback):
        if _reaches_user_code(cause):
            _trim(cause, seen)
        else:  # an httpx, pickle or jupyter_client error: its text is already in our message
            error.__cause__ = None
            error.__suppress_context__ = True
    context = error.__context__
    if context is not None and not error.__suppress_context__:
        if _reaches_user_code(context):
            _trim(context, seen)
        else:  # "During handling of the above exception": ours, not the user's
            error.__suppress_context__ = True


def public(fn: Callable[P, R]) -> Callable[P, R]:
    """A public function or method whose errors reach the user trimmed (see the module)."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        __tracebackhide__ = True
        try:
            return fn(*args, **kwargs)
        except BaseException as error:
            if debugging():
                raise
            trim(error)
            # colabremote's own frames are left out of the traceback; COLABREMOTE_DEBUG=1 keeps them
            raise error

    return call


def public_async(
    fn: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """:func:`public` for a coroutine function."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        __tracebackhide__ = True
        try:
            return await fn(*args, **kwargs)
        except BaseException as error:
            if debugging():
                raise
            trim(error)
            # colabremote's own frames are left out of the traceback; COLABREMOTE_DEBUG=1 keeps them
            raise error

    return call


def public_iterator(fn: Callable[P, Iterator[R]]) -> Callable[P, Iterator[R]]:
    """:func:`public` for a generator function: errors raised while iterating are trimmed."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
        __tracebackhide__ = True
        try:
            yield from fn(*args, **kwargs)
        except GeneratorExit:  # close(): the generator's own control flow, not an error
            raise
        except BaseException as error:
            if debugging():
                raise
            trim(error)
            # colabremote's own frames are left out of the traceback; COLABREMOTE_DEBUG=1 keeps them
            raise error

    return call
