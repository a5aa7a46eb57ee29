"""What crosses the wire: functions, arguments, results, exceptions and local modules.

- A function goes by value (cloudpickle) together with everything else from its own module, and
  each code object goes as source when its source can be read (see
  ``_kernel/agent/shipping.py``), so a function written in a ``.py`` file runs on a kernel of
  another Python minor version. Code with no source (typed at a plain REPL, made by ``exec``)
  goes as bytecode, which needs the same minor version on both sides; otherwise
  :class:`PythonVersionMismatch` is raised before anything is sent.
- Arguments and results are pickled with protocol 5: large buffers (numpy arrays, bytes) travel
  out of band, without copies.
- The user's own modules (files outside site-packages and the standard library) are shipped as
  source and imported on the kernel, so imports inside remote functions work.
- Results from a kernel the user does not trust (``trust_kernel=False``) are rebuilt only as plain
  data by :class:`PlainUnpickler`, and remote exceptions only from their type name and text.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import operator
import os
import pickle
import site
import sys
import sysconfig
import time
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle.cloudpickle as _cloudpickle_impl

from ._kernel import wire
from ._kernel.agent import shipping
from ._kernel.client import rebuild_remote_error
from .exceptions import (
    ArgumentNotSerializable,
    PythonVersionMismatch,
    RemoteTraceback,
    ResultNotSerializable,
    ResultRefused,
    SerializationError,
)

__all__ = [
    "FunctionPayload",
    "LocalModules",
    "PlainUnpickler",
    "SourceFile",
    "imported_names",
    "pack_arguments",
    "pack_function",
    "rebuild_exception",
    "unpack_outcomes",
]

Item = tuple[tuple[Any, ...], dict[str, Any]]


class RemoteCallable:
    """What a RemoteFunction is to the wire: a wrapper whose plain function ``fn`` travels in
    its place, so a remote function called from remote code runs inline on the kernel."""

    fn: Callable[..., Any]


def _unwrap(obj: Any) -> Any:
    """The plain function behind a RemoteFunction."""
    return obj.fn if isinstance(obj, RemoteCallable) else obj


class _SharedNamespace:
    """Stands for a module's globals in a pickle; the kernel gives every function of that
    module the same dict (see ``shipping.module_namespace``)."""

    __slots__ = ("base", "name")

    def __init__(self, name: str, base: dict[str, Any]) -> None:
        self.name = name
        self.base = base


class _ClientPickler(shipping.SourcePickler):
    """Pickles the functions and classes of ``by_value`` modules by value, never by import."""

    def __init__(
        self,
        file: io.BytesIO,
        *,
        by_value: frozenset[str],
        allow_bytecode: bool,
        buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None,
    ) -> None:
        super().__init__(file, buffer_callback=buffer_callback, allow_bytecode=allow_bytecode)
        self.by_value = by_value
        self._namespaces: dict[str, _SharedNamespace] = {}

    def _function_getnewargs(self, func: types.FunctionType) -> tuple[Any, ...]:
        code, base_globals, name, argdefs, closure = super()._function_getnewargs(func)
        module = str(base_globals.get("__name__") or func.__module__ or "__main__")
        shared = self._namespaces.get(module)
        if shared is None:
            shared = self._namespaces[module] = _SharedNamespace(module, base_globals)
        return code, shared, name, argdefs, closure

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is _SharedNamespace:
            return shipping.module_namespace, (obj.name, obj.base)

        if isinstance(obj, RemoteCallable):
            return operator.getitem, ([obj.fn], 0)
        if isinstance(obj, types.FunctionType):
            if obj.__module__ in self.by_value:
                return self._dynamic_function_reduce(obj)
        elif isinstance(obj, type) and obj.__module__ in self.by_value - {"builtins"}:
            return shipping.portable_class_reduce(obj, _cloudpickle_impl._dynamic_class_reduce(obj))
        return super().reducer_override(obj)


def _version(python: Sequence[int]) -> str:
    return f"{python[0]}.{python[1]}"


@dataclass(frozen=True)
class FunctionPayload:
    """A pickled function and its content hash (the kernel caches functions by hash)."""

    key: str
    parts: list[memoryview]
    name: str


def pack_function(fn: Callable[..., Any], *, kernel_python: Sequence[int]) -> FunctionPayload:
    """Pickle ``fn`` for a kernel running ``kernel_python``."""
    fn = _unwrap(fn)
    same_version = tuple(kernel_python[:2]) == sys.version_info[:2]
    module = getattr(fn, "__module__", None) or "__main__"
    stream = io.BytesIO()
    buffers: list[pickle.PickleBuffer] = []
    pickler = _ClientPickler(
        stream,
        by_value=frozenset({module, "__main__"}),
        allow_bytecode=same_version,
        buffer_callback=buffers.append,
    )
    name = getattr(fn, "__qualname__", repr(fn))
    try:
        pickler.dump(fn)
    except shipping.BytecodeRefused as exc:
        code = exc.code
        local, remote = _version(sys.version_info[:2]), _version(kernel_python)
        raise PythonVersionMismatch(
            f"{name} needs {code.co_name} (from {code.co_filename}), whose source cannot be read, "
            f"so it could only be sent as bytecode; bytecode from Python {local} does not run on "
            f"the kernel's Python {remote}. Define it in a .py file (its source is then sent), or "
            f"run Python {remote} locally.",
            local=local,
            remote=remote,
        ) from None
    except Exception as exc:
        raise SerializationError(
            f"cannot send function {name}: {exc}. Everything it uses from its module is sent "
            "with it; keep unpicklable objects (locks, open files, sessions) out of what it "
            "references, or create them inside the function."
        ) from exc
    parts = [stream.getbuffer(), *(b.raw() for b in buffers)]
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part)
    return FunctionPayload(digest.hexdigest(), parts, name)


def pack_arguments(items: Sequence[Item], *, kernel_python: Sequence[int]) -> list[memoryview]:
    """Pickle call arguments; the failing argument is named when one cannot be pickled."""
    same_version = tuple(kernel_python[:2]) == sys.version_info[:2]
    stream = io.BytesIO()
    buffers: list[pickle.PickleBuffer] = []
    pickler = _ClientPickler(
        stream,
        by_value=frozenset({"__main__"}),
        allow_bytecode=same_version,
        buffer_callback=buffers.append,
    )
    try:
        pickler.dump(list(items))
    except shipping.BytecodeRefused as exc:
        local, remote = _version(sys.version_info[:2]), _version(kernel_python)
        raise PythonVersionMismatch(
            f"an argument holds code ({exc.code.co_name}) whose source cannot be read, so it could "
            f"only be sent as bytecode, which does not run across Python {local} and the kernel's "
            f"Python {remote}. Define it in a .py file, or run Python {remote} locally.",
            local=local,
            remote=remote,
        ) from None
    except Exception as exc:
        raise _explain_argument_failure(items, exc) from exc
    return [stream.getbuffer(), *(b.raw() for b in buffers)]


def _explain_argument_failure(items: Sequence[Item], exc: Exception) -> ArgumentNotSerializable:
    for args, kwargs in items:
        named: list[tuple[str, Any]] = [(f"argument {i}", a) for i, a in enumerate(args)]
        named += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
        for label, value in named:
            try:
                _ClientPickler(
                    io.BytesIO(), by_value=frozenset({"__main__"}), allow_bytecode=True
                ).dump(value)
            except Exception as inner:  # noqa: BLE001 - this is the culprit
                return ArgumentNotSerializable(
                    f"{label} of type {type(value).__module__}.{type(value).__qualname__} cannot "
                    f"be pickled ({inner}); nothing was sent. Pass data the kernel can rebuild, "
                    "or create the object inside the remote function."
                )
    return ArgumentNotSerializable(f"the arguments cannot be pickled ({exc}); nothing was sent")


# -- outcomes ----------------------------------------------------------------------------------


def rebuild_exception(payload: dict[str, Any]) -> BaseException:
    """The remote exception as itself when it can be rebuilt here, else a RemoteError.

    A payload without its pickle (``trust_kernel=False`` drops it) comes back as a builtin
    exception type or a RemoteError, from its type name, text and traceback text alone.
    """
    type_name = str(payload.get("etype", "Exception"))
    value = str(payload.get("evalue", ""))
    text = str(payload.get("traceback", ""))
    if type_name == "colabremote.exceptions.ResultNotSerializable":
        return ResultNotSerializable(value)
    pickled = payload.get("pickled")
    if pickled:
        try:
            exc = pickle.loads(pickled)
        except Exception:  # noqa: BLE001, S110 - fall back to the description
            pass
        else:
            if isinstance(exc, BaseException):
                exc.__cause__ = RemoteTraceback(text)
                exc.__suppress_context__ = True
                return exc
    return rebuild_remote_error(type_name, value, text)


#: What a plain-data pickle may name besides the builtin exception types. numpy arrays and
#: scalars pickle through these functions (``numpy.core`` before numpy 2, ``numpy._core`` since).
_PLAIN_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", "complex"),
        ("builtins", "bytearray"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("collections", "OrderedDict"),
        ("datetime", "date"),
        ("datetime", "datetime"),
        ("datetime", "time"),
        ("datetime", "timedelta"),
        ("datetime", "timezone"),
        ("decimal", "Decimal"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        *(
            (f"numpy.{core}.{module}", name)
            for core in ("core", "_core")
            for module, name in (
                ("multiarray", "_reconstruct"),
                ("multiarray", "scalar"),
                ("numeric", "_frombuffer"),
            )
        ),
    }
)


class PlainUnpickler(pickle.Unpickler):
    """Rebuilds only plain data: None, bools, numbers, strings, bytes, containers, datetimes,
    decimals, numpy arrays and scalars, builtin exceptions. Any other name in the pickle raises
    :class:`ResultRefused` before anything it names is imported or called."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_GLOBALS or _is_builtin_exception(module, name):
            return super().find_class(module, name)
        raise ResultRefused(
            f"the result holds a {module}.{name}, which a session with trust_kernel=False does "
            "not rebuild; it rebuilds only plain data (numbers, strings, bytes, lists, dicts, "
            "sets, datetimes, numpy arrays) and builtin exceptions. Nothing of the result ran "
            "here; return plain data, or trust the kernel.",
            type_name=f"{module}.{name}",
        )


def _is_builtin_exception(module: str, name: str) -> bool:
    import builtins

    candidate = getattr(builtins, name, None) if module == "builtins" else None
    return isinstance(candidate, type) and issubclass(candidate, BaseException)


def _plain_loads(parts: Sequence[memoryview]) -> Any:
    buffers = [bytearray(b) if b.readonly else b for b in parts[1:]]
    return PlainUnpickler(io.BytesIO(parts[0]), buffers=buffers).load()


def _without_pickles(outcome: tuple[str, Any]) -> tuple[str, Any]:
    """An outcome whose exception payload keeps its description but not its pickle."""
    status, value = outcome
    if status != wire.ItemStatus.OK and isinstance(value, dict):
        return status, {**value, "pickled": None}
    return status, value


def unpack_outcomes(parts: Sequence[memoryview], *, trusted: bool = True) -> list[tuple[str, Any]]:
    """``[(status, value or exception payload), ...]`` from a result message.

    Untrusted (``trusted=False``), only plain data is rebuilt (see :class:`PlainUnpickler`) and
    exceptions lose their pickles, so they are rebuilt from their type name and text.
    """
    try:
        outcomes = shipping.loads(parts) if trusted else _plain_loads(parts)
    except ResultRefused:
        raise
    except Exception as exc:
        raise ResultNotSerializable(
            f"the result arrived but cannot be rebuilt here ({type(exc).__name__}: {exc}); "
            "return plain data (numbers, strings, lists, dicts, numpy arrays) or types that "
            "are importable on this machine"
        ) from exc
    if trusted:
        return list(outcomes)
    if not isinstance(outcomes, list) or not all(
        isinstance(o, tuple) and len(o) == 2 for o in outcomes
    ):
        raise ResultNotSerializable("the kernel's reply is not a list of outcomes")
    return [_without_pickles(o) for o in outcomes]


# -- local modules -----------------------------------------------------------------------------


@functools.cache
def _excluded_roots() -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(path)
    with contextlib.suppress(AttributeError):  # virtualenv's old site module lacks it
        roots.update(site.getsitepackages())
    user_site = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    if isinstance(user_site, str):
        roots.add(user_site)
    return tuple(sorted({os.path.realpath(r) + os.sep for r in roots if r}))


@functools.lru_cache(maxsize=16384)
def _is_local_file(path: str, excluded: tuple[str, ...]) -> bool:
    """Whether a module file is the user's own, not the standard library's or an installed one.

    Links are resolved first: a project symlinked into site-packages (``flit install
    --symlink``) is the user's own. Cached, since resolving is most of what looking at every
    loaded module costs, and every session's first call does that.
    """
    real = os.path.realpath(path)
    if real.startswith(excluded):
        return False
    parts = real.split(os.sep)
    return "site-packages" not in parts and "dist-packages" not in parts


_SKIP_PACKAGES = frozenset(
    {"colabremote", wire.AGENT_MODULE, "cloudpickle", "__main__", "__mp_main__"}
)


def _skipped(name: str) -> bool:
    return name.partition(".")[0] in _SKIP_PACKAGES


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative to its import root, with "/" separators
    module: str
    digest: str
    content: bytes


class LocalModules:
    """Finds the user's own modules and tracks which versions the kernel already has."""

    RESCAN_SECONDS = 1.0  # how often loaded modules are checked for edits

    def __init__(self) -> None:
        self._sent: dict[str, str] = {}
        self._stat_cache: dict[str, tuple[int, int, str, bytes]] = {}
        self._last_scan = -1e9
        self._last_count = -1
        self._files: dict[str, tuple[str, str]] = {}  # relpath -> (module, absolute path)
        self._looked_up: set[str] = set()

    def forget_sent(self) -> None:
        """The kernel was replaced: everything must be sent again."""
        self._sent.clear()
        self._last_scan = -1e9

    def _is_local(self, path: str) -> bool:
        return _is_local_file(path, _excluded_roots())

    def _candidate(self, name: str, module: types.ModuleType) -> tuple[str, str] | None:
        if _skipped(name):
            return None
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not path.endswith(".py") or not os.path.isfile(path):
            return None
        if not self._is_local(path):
            return None
        pieces = name.split(".")
        is_package = os.path.basename(path) == "__init__.py"
        expected = os.path.join(*pieces, "__init__.py") if is_package else os.path.join(*pieces)
        expected = expected if is_package else expected + ".py"
        if not os.path.normpath(path).endswith(os.sep + expected):
            return None  # loaded under a name that does not match its path: cannot place it
        return expected.replace(os.sep, "/"), path

    def _scan(self, extra_names: Iterable[str]) -> None:
        for name, module in list(sys.modules.items()):
            if module is None:
                continue
            found = self._candidate(name, module)
            if found is not None:
                self._files[found[0]] = (name, found[1])
        for name in extra_names:
            if name in sys.modules or _skipped(name):
                continue
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                continue
            origin = spec.origin if spec is not None else None
            if origin and origin.endswith(".py") and self._is_local(origin):
                relative = name.replace(".", "/")
                if os.path.basename(origin) == "__init__.py":
                    relative += "/__init__.py"
                else:
                    relative += ".py"
                if origin.replace(os.sep, "/").endswith(relative):
                    self._files[relative] = (name, origin)

    def pending(self, extra_names: Iterable[str] = ()) -> list[SourceFile]:
        """Files the kernel does not have yet, or has in an older version."""
        now = time.monotonic()
        new_names = [n for n in extra_names if n not in self._looked_up]
        if (
            not new_names
            and len(sys.modules) == self._last_count
            and now - self._last_scan < self.RESCAN_SECONDS
        ):
            return []
        self._scan(new_names)
        self._looked_up.update(new_names)
        self._last_count = len(sys.modules)
        self._last_scan = now
        out: list[SourceFile] = []
        for relpath, (module, path) in sorted(self._files.items()):
            try:
                stat = os.stat(path)
            except OSError:
                continue
            cached = self._stat_cache.get(path)
            if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
                digest, content = cached[2], cached[3]
            else:
                with open(path, "rb") as f:
                    content = f.read()
                digest = hashlib.blake2b(content, digest_size=16).hexdigest()
                self._stat_cache[path] = (stat.st_mtime_ns, stat.st_size, digest, content)
            if self._sent.get(relpath) != digest:
                out.append(SourceFile(relpath, module, digest, content))
        return out

    def mark_sent(self, files: Iterable[SourceFile]) -> None:
        for f in files:
            self._sent[f.path] = f.digest


_IMPORTS_CACHE: dict[types.CodeType, tuple[str, ...]] = {}


def imported_names(fn: Callable[..., Any]) -> tuple[str, ...]:
    """Modules that ``fn``'s code imports by name (``import x`` inside the function)."""
    import dis

    code = getattr(_unwrap(fn), "__code__", None)
    if code is None:
        return ()
    names = _IMPORTS_CACHE.get(code)
    if names is None:
        found: list[str] = []
        for c in shipping.iter_code(code):
            for instruction in dis.get_instructions(c):
                if instruction.opname == "IMPORT_NAME" and isinstance(instruction.argval, str):
                    found.append(instruction.argval)
        names = _IMPORTS_CACHE[code] = tuple(found)
    return names
