"""The object table: values kept on the kernel under a key, for refs and remote instances.

Bundled into the agent (see ``__init__.py``), before ``shipping``. A reconnect installs the agent
afresh, so the table lives apart from it, in one module object per kernel process, tagged with an
identity made when the process first needs it: a ref made on another kernel, or before a
restart, never resolves here. The functions a pickle names (``kept_object``, ``keep_value``,
``keep_result``, ``call_kept_method``, ``kept_value``) carry the agent's module name, so pickles
made on either side name them the same way.
"""

from __future__ import annotations

import itertools
import sys
import types
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from ..wire import AGENT_MODULE

#: The module (in ``sys.modules``) that holds the table, so it outlives agent reinstalls.
KEPT_MODULE = "_colabremote_kept"


def _kept_table() -> Any:
    """This process's table: ``identity``, ``objects`` (key -> value) and ``keys`` (a counter)."""
    table = sys.modules.get(KEPT_MODULE)
    if table is None:
        table = types.ModuleType(KEPT_MODULE, "Objects colabremote keeps on this kernel.")
        table.__dict__.update(identity=uuid.uuid4().hex, objects={}, keys=itertools.count(1))
        sys.modules[KEPT_MODULE] = table
    return table


def kernel_identity() -> str:
    """Names this kernel process among all others, for the client to tag its refs with."""
    return str(_kept_table().identity)


def _kept_type_name(value: Any) -> str:
    cls = type(value)
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', '?')}"


def keep_value(value: Any) -> list[str]:
    """Keep ``value`` here; the client gets ``[key, kernel identity, type name]``, plain data."""
    table = _kept_table()
    key = str(next(table.keys))
    table.objects[key] = value
    return [key, str(table.identity), _kept_type_name(value)]


def keep_result(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[str]:
    """Call ``fn`` and keep what it returns (``f.keep``, and building a remote instance)."""
    return keep_value(fn(*args, **kwargs))


def kept_object(key: str, identity: str) -> Any:
    """The kept value a ref's pickle stands for (the unpickling side)."""
    table = _kept_table()
    if identity != table.identity:
        raise LookupError(
            f"object {key} was kept on another kernel (or before this one restarted); "
            "keep it again on this one"
        )
    try:
        return table.objects[key]
    except KeyError:
        raise LookupError(f"object {key} is no longer kept on this kernel (freed)") from None


def kept_value(value: Any) -> Any:
    """The argument itself: a ref's value on its way home (``ref.fetch()``)."""
    return value


def call_kept_method(obj: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """A remote instance's method call: the instance arrives as its key, resolved here."""
    return getattr(obj, name)(*args, **kwargs)


def forget_kept(keys: Iterable[str], identity: str) -> None:
    """Drop kept values the client no longer holds (refs freed or garbage-collected there)."""
    table = _kept_table()
    if identity != table.identity:
        return
    for key in keys:
        table.objects.pop(str(key), None)


keep_value.__module__ = AGENT_MODULE
keep_result.__module__ = AGENT_MODULE
kept_object.__module__ = AGENT_MODULE
kept_value.__module__ = AGENT_MODULE
call_kept_method.__module__ = AGENT_MODULE
