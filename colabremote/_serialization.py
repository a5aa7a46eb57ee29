"""What crosses the wire: functions, arguments, results, exceptions and local modules.

- A function goes by value (cloudpickle) together with everything else from its own module, and
  each code object goes as source when its source can be read (see
  ``_kernel/agent/shipping.py``), so a function written in a ``.py`` file or an IPython cell
  runs on a kernel of another Python minor version. Code with no source (typed at a plain
  ``python`` prompt, made by ``exec``) goes as bytecode, which needs the same minor version on
  both sides; otherwise :class:`PythonVersionMismatch` is raised before anything is sent. The
  local IPython shell, which a cell's ``!`` and ``%`` lines call, becomes the kernel's shell.
- Arguments and results are pickled with protocol 5: large buffers (numpy arrays, bytes) travel
  out of band, without copies.
- The user's own modules (files outside site-packages and the standard library) that a call
  can reach are shipped as source and imported on the kernel, so imports inside remote
  functions work; modules it cannot reach, or that the session excludes, stay here.
- Results from a kernel the user does not trust (``trust_kernel=False``) are rebuilt only as plain
  data by :class:`PlainUnpickler`, and remote exceptions only from their type name and text.
"""

from __future__ import annotations

import abc
import ast
import contextlib
import fnmatch
import functools
import glob
import hashlib
import importlib.machinery
import io
import operator
import os
import pickle
import re
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
    ConfigurationError,
    PythonVersionMismatch,
    RefLost,
    RemoteTraceback,
    ResultNotSerializable,
    ResultRefused,
    SerializationError,
)

__all__ = [
    "FunctionPayload",
    "KeptReference",
    "KernelTarget",
    "LocalModules",
    "ModuleExclusions",
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


@dataclass(frozen=True)
class KernelTarget:
    """The kernel a pickle is made for: the session core that owns it, and the identity of the
    kernel's object table (``agent/objects.py``). Refs check it before they travel."""

    owner: object
    identity: str | None


class KeptReference(abc.ABC):
    """What a handle to an object kept on a kernel (a ref, a remote instance) is to the wire: it
    travels as its key, which the kernel resolves to the object, never as its value."""

    @abc.abstractmethod
    def _kept_reduce(self, target: KernelTarget | None) -> tuple[Any, ...]:
        """The pickle reduction for a call to ``target`` (None: no call, nothing to check);
        raises :class:`RefLost` when the object is not kept there."""


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
        kernel: KernelTarget | None = None,
    ) -> None:
        super().__init__(file, buffer_callback=buffer_callback, allow_bytecode=allow_bytecode)
        self.by_value = by_value
        self.kernel = kernel
        self.reached: set[str] = set()  # modules the kernel may import to rebuild or run this
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
        shell = _ipython_shell_class()
        if shell is not None and isinstance(obj, shell):
            # This IPython shell (what a cell's `!ls` and `%time` lines call through
            # `get_ipython()`) becomes the kernel's own, so they run on the kernel.
            from IPython.core.getipython import get_ipython

            return get_ipython, ()

        if isinstance(obj, (KeptReference, RemoteCallable)):
            return self._stand_in(obj)
        if isinstance(obj, types.FunctionType):
            if obj.__module__ in self.by_value:
                self.reached.update(imported_names(obj))  # it may import them when it runs
                return self._dynamic_function_reduce(obj)
            self._reaches(obj.__module__)
        elif isinstance(obj, type):
            if obj.__module__ in self.by_value - {"builtins"}:
                reduced = _cloudpickle_impl._dynamic_class_reduce(obj)
                return shipping.portable_class_reduce(obj, reduced)
            self._reaches(obj.__module__)
        elif isinstance(obj, types.ModuleType):
            self._reaches(obj.__name__)
        return super().reducer_override(obj)

    def _stand_in(self, obj: KeptReference | RemoteCallable) -> Any:
        """A handle to an object kept on the kernel travels as its key; a RemoteFunction as
        its plain function."""
        if isinstance(obj, KeptReference):
            return obj._kept_reduce(self.kernel)
        return operator.getitem, ([obj.fn], 0)

    def _reaches(self, module: object) -> None:
        """Note a module that a function or class pickled by reference (or a module object)
        makes the kernel import."""
        if isinstance(module, str):
            self.reached.add(module)


def _ipython_shell_class() -> type | None:
    """IPython's InteractiveShell, when this process has loaded it (never imported here)."""
    module = sys.modules.get("IPython.core.interactiveshell")
    shell = getattr(module, "InteractiveShell", None)
    return shell if isinstance(shell, type) else None


def _version(python: Sequence[int]) -> str:
    return f"{python[0]}.{python[1]}"


@dataclass(frozen=True)
class FunctionPayload:
    """A pickled function and its content hash (the kernel caches functions by hash)."""

    key: str
    parts: list[memoryview]
    name: str


def _home_module(fn: Any) -> str:
    """The module a callable's code comes from: through partials, bound and static methods to
    the function, and from a callable instance to its class. (A partial's own ``__module__`` is
    ``functools``, which must never be pickled by value.) A partial of one of the agent's own
    functions (``keep_result(fn, ...)``) counts as ``fn``'s; the agent's functions themselves go
    by reference, as every kernel has them."""
    target = fn
    while isinstance(target, functools.partial):
        inner = target.func
        if getattr(inner, "__module__", None) == wire.AGENT_MODULE and target.args:
            inner = target.args[0]
        target = inner
    target = getattr(target, "__func__", target)
    if not isinstance(target, (types.FunctionType, type)):
        target = type(target)
    module = str(getattr(target, "__module__", None) or "__main__")
    return "__main__" if module == wire.AGENT_MODULE else module


def pack_function(
    fn: Callable[..., Any],
    *,
    kernel_python: Sequence[int],
    reached: set[str] | None = None,
    kernel: KernelTarget | None = None,
) -> FunctionPayload:
    """Pickle ``fn`` for a kernel running ``kernel_python``: a function, a partial, a bound or
    static method, a callable instance, or a decorated function. The modules it reaches (that
    the kernel imports to rebuild or run it) are added to ``reached``."""
    fn = _unwrap(fn)
    same_version = tuple(kernel_python[:2]) == sys.version_info[:2]
    module = _home_module(fn)
    if module.partition(".")[0] in sys.stdlib_module_names:
        module = "__main__"  # a builtin or stdlib callable goes by reference, as pickle does
    stream = io.BytesIO()
    buffers: list[pickle.PickleBuffer] = []
    pickler = _ClientPickler(
        stream,
        by_value=frozenset({module, "__main__"}),
        allow_bytecode=same_version,
        buffer_callback=buffers.append,
        kernel=kernel,
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
    except RefLost:
        raise
    except Exception as exc:
        raise SerializationError(
            f"cannot send function {name}: {exc}. Everything it uses from its module is sent "
            "with it; keep unpicklable objects (locks, open files, sessions) out of what it "
            "references, or create them inside the function."
        ) from exc
    if reached is not None:
        reached |= pickler.reached
    parts = [stream.getbuffer(), *(b.raw() for b in buffers)]
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part)
    return FunctionPayload(digest.hexdigest(), parts, name)


def pack_arguments(
    items: Sequence[Item],
    *,
    kernel_python: Sequence[int],
    reached: set[str] | None = None,
    kernel: KernelTarget | None = None,
) -> list[memoryview]:
    """Pickle call arguments; the failing argument is named when one cannot be pickled. The
    modules the kernel imports to rebuild them (their classes') are added to ``reached``."""
    same_version = tuple(kernel_python[:2]) == sys.version_info[:2]
    stream = io.BytesIO()
    buffers: list[pickle.PickleBuffer] = []
    pickler = _ClientPickler(
        stream,
        by_value=frozenset({"__main__"}),
        allow_bytecode=same_version,
        buffer_callback=buffers.append,
        kernel=kernel,
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
    except RefLost:
        raise
    except Exception as exc:
        raise _explain_argument_failure(items, exc) from exc
    if reached is not None:
        reached |= pickler.reached
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
    --symlink``) is the user's own. Cached, since resolving is most of what deciding about a
    module costs, and that is decided again whenever reached modules are checked for edits.
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


def _find_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """Where ``name`` is, or would be imported from, here, without importing anything."""
    module = sys.modules.get(name)
    if module is not None:
        spec = getattr(module, "__spec__", None)
        return spec if isinstance(spec, importlib.machinery.ModuleSpec) else None
    parent = name.rpartition(".")[0]
    search: list[str] | None = None
    if parent:
        parent_spec = _find_spec(parent)
        if parent_spec is None or parent_spec.submodule_search_locations is None:
            return None  # no such package, or not a package: no submodules to find
        search = list(parent_spec.submodule_search_locations)
    try:
        return importlib.machinery.PathFinder.find_spec(name, search)
    except (ImportError, ValueError):
        return None


def _local_source(name: str) -> tuple[str, str] | None:
    """``(path relative to its import root, file)`` when module ``name`` is the user's own
    ``.py`` file, which the kernel can import once it is written under that relative path."""
    if not name or _skipped(name):
        return None
    module = sys.modules.get(name)
    if module is not None:
        path = getattr(module, "__file__", None)
    else:
        spec = _find_spec(name)
        path = spec.origin if spec is not None else None
    if not isinstance(path, str) or not path.endswith(".py") or not os.path.isfile(path):
        return None
    if not _is_local_file(path, _excluded_roots()):
        return None
    is_package = os.path.basename(path) == "__init__.py"
    relpath = name.replace(".", "/") + ("/__init__.py" if is_package else ".py")
    if not os.path.normpath(path).replace(os.sep, "/").endswith("/" + relpath):
        return None  # loaded under a name that does not match its path: cannot place it
    return relpath, path


def _absolute_name(package: str, level: int, name: str) -> str | None:
    """The module an import names, written ``level`` dots deep inside ``package``."""
    if level == 0:
        return name
    parts = package.split(".") if package else []
    if level > len(parts):
        return None  # climbs above the top-level package: fails on the kernel as it does here
    base = ".".join(parts[: len(parts) - level + 1])
    return f"{base}.{name}" if name else base


def _import_targets(package: str, level: int, name: str, fromlist: Iterable[str]) -> list[str]:
    """Modules one import statement may load: the module named, and for ``from m import a``
    also ``m.a``, which is a module when ``a`` is a submodule."""
    base = _absolute_name(package, level, name)
    if not base:
        return []
    return [base, *(f"{base}.{item}" for item in fromlist if item != "*")]


_IMPORTS_CACHE: dict[types.CodeType, tuple[str, ...]] = {}


def imported_names(fn: Callable[..., Any]) -> tuple[str, ...]:
    """Modules that ``fn``'s code (nested functions too) imports, as absolute names."""
    import dis

    fn = _unwrap(fn)
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        return ()
    names = _IMPORTS_CACHE.get(code)
    if names is None:
        package = getattr(fn, "__globals__", {}).get("__package__") or ""
        found: list[str] = []
        for c in shipping.iter_code(code):
            # IMPORT_NAME follows the loads of its level and its from-list.
            level: Any = 0
            fromlist: Any = None
            for instruction in dis.get_instructions(c):
                if instruction.opname == "IMPORT_NAME" and isinstance(instruction.argval, str):
                    found += _import_targets(
                        str(package),
                        level if isinstance(level, int) else 0,
                        instruction.argval,
                        fromlist if isinstance(fromlist, tuple) else (),
                    )
                level, fromlist = fromlist, instruction.argval
        names = _IMPORTS_CACHE[code] = tuple(dict.fromkeys(found))
    return names


_SOURCE_IMPORTS: dict[tuple[str, str], tuple[str, ...]] = {}


def _source_imports(module: str, relpath: str, digest: str, content: bytes) -> tuple[str, ...]:
    """Modules a module's source imports anywhere in it (inside functions too), as absolute
    names. Parsed once per file version."""
    key = (digest, module)
    names = _SOURCE_IMPORTS.get(key)
    if names is None:
        package = module if relpath.endswith("/__init__.py") else module.rpartition(".")[0]
        found: list[str] = []
        try:
            tree = ast.parse(content)
        except (SyntaxError, ValueError):
            tree = None  # it is still sent, and fails to import there as it does here
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.Import):
                found += (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                targets = [alias.name for alias in node.names]
                found += _import_targets(package, node.level, node.module or "", targets)
        names = _SOURCE_IMPORTS[key] = tuple(dict.fromkeys(found))
    return names


def _is_path_pattern(pattern: str) -> bool:
    return "/" in pattern or os.sep in pattern or pattern.endswith(".py") or pattern[0] == "~"


class ModuleExclusions:
    """The local modules a session never sends (``exclude_modules=``).

    Each pattern is a file path or glob (``"secrets.py"``, ``"scratch/*"``; relative ones are
    relative to the working directory when the session was made, and a folder covers what is
    in it) or a module name or glob (``"secrets"``, ``"mypkg.*"``; a package covers its
    submodules). A pattern is a path when it has a ``/`` or ends in ``.py``.
    """

    def __init__(self, patterns: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]):
        if isinstance(patterns, (str, os.PathLike)):
            patterns = [patterns]  # one pattern, not its characters
        self._names: list[str] = []
        self._paths: list[tuple[str, str]] = []  # (absolute glob, the pattern as written)
        base = glob.escape(os.getcwd())
        for pattern in patterns:
            text = os.fspath(pattern)
            if not text:
                raise ConfigurationError(
                    "exclude_modules has an empty pattern; give file paths or globs "
                    '("secrets.py", "scratch/*") or module names ("secrets")'
                )
            if _is_path_pattern(text):
                full = os.path.join(base, os.path.expanduser(text))
                self._paths.append((os.path.normcase(os.path.normpath(full)), text))
            else:
                self._names.append(text)

    def __bool__(self) -> bool:
        return bool(self._names or self._paths)

    def match(self, name: str, path: str | None) -> str | None:
        """The pattern that excludes module ``name`` (whose file is ``path``), or None."""
        for pattern in self._names:
            if fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern + "."):
                return pattern
        if path is None or not self._paths:
            return None
        files = {os.path.normcase(p) for p in (os.path.abspath(path), os.path.realpath(path))}
        for full, text in self._paths:
            inside = os.path.join(full, "*")
            if any(fnmatch.fnmatchcase(f, full) or fnmatch.fnmatchcase(f, inside) for f in files):
                return text
        return None

    def excluding(self, name: str) -> str | None:
        """The pattern that kept module ``name``, or the package it is in, off the kernel."""
        pieces = name.split(".")
        for end in range(len(pieces), 0, -1):
            candidate = ".".join(pieces[:end])
            found = _local_source(candidate)
            pattern = self.match(candidate, found[1] if found else None)
            if pattern is not None:
                return pattern
        return None


_NO_MODULE = re.compile(r"No module named '([^']+)'")

#: Import names whose package on PyPI is called something else.
_PIP_NAMES = {
    "attr": "attrs",
    "bs4": "beautifulsoup4",
    "cv2": "opencv-python",
    "dateutil": "python-dateutil",
    "docx": "python-docx",
    "dotenv": "python-dotenv",
    "fitz": "pymupdf",
    "jwt": "pyjwt",
    "PIL": "pillow",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
}


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def pip_name(module: str) -> str:
    """The package to ``pip install`` for ``module``: the distribution that provides it here,
    if one does (``google.cloud.storage``: the one named after the most of its parts), else a
    well-known name (``sklearn``: ``scikit-learn``), else the top-level module name."""
    import importlib.metadata

    top = module.partition(".")[0]
    try:
        here = importlib.metadata.packages_distributions().get(top, [])
    except Exception:  # noqa: BLE001 - broken metadata here must not hide the kernel's error
        here = []
    by_name = {_normalized(d): d for d in here}
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        wanted = _normalized("-".join(parts[:end]))
        if wanted in by_name:
            return by_name[wanted]
    if len(set(by_name)) == 1:
        return here[0]
    return _PIP_NAMES.get(top, top)


def install_hint(module: str) -> str:
    """The message for a package missing on the kernel: what is missing, and the command that
    installs it there (``%pip`` runs in the kernel's own environment, on every backend)."""
    return (
        f"No module named {module!r} on the kernel. Install it there with "
        f's.exec("%pip install {pip_name(module)}") (s: your Session, or '
        "colabremote.default_session()), then call again"
    )


def _is_local_module(name: str) -> bool:
    """Whether ``name``, or the package it is in, is one of the user's own files here."""
    pieces = name.split(".")
    return any(_local_source(".".join(pieces[:end])) for end in range(len(pieces), 0, -1))


class LocalModules:
    """The user's own modules that calls can reach, and which versions the kernel already has.

    A call reaches the modules its pickles name (what the function uses from other modules,
    the classes of its arguments) and the modules its code imports, then every local module
    those import, transitively. Modules it cannot reach stay here, whatever is loaded.
    """

    RESCAN_SECONDS = 1.0  # how often reached modules are checked for edits

    def __init__(
        self, exclude: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] = ()
    ) -> None:
        self.exclusions = ModuleExclusions(exclude)
        self._sent: dict[str, str] = {}
        self._stat_cache: dict[str, tuple[int, int, str, bytes]] = {}
        self._roots: set[str] = set()
        self._last_scan = -1e9

    def forget_sent(self) -> None:
        """The kernel was replaced: everything must be sent again."""
        self._sent.clear()
        self._last_scan = -1e9

    def pending(self, roots: Iterable[str]) -> list[SourceFile]:
        """Files the kernel does not have yet, or has in an older version, among those that
        ``roots`` (module names a call's pickles and code name) and earlier calls reach."""
        now = time.monotonic()
        new = set(roots) - self._roots
        if not new and now - self._last_scan < self.RESCAN_SECONDS:
            return []
        self._roots |= new
        self._last_scan = now
        return [f for f in self._reach() if self._sent.get(f.path) != f.digest]

    def mark_sent(self, files: Iterable[SourceFile]) -> None:
        for f in files:
            self._sent[f.path] = f.digest

    def explain_missing(self, outcomes: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """``outcomes``, where a ModuleNotFoundError from the kernel says what to do: a module
        the session excluded says so; a package missing there names the command that
        installs it on the runtime. A local module keeps the kernel's message."""
        messages: dict[str, str | None] = {}  # a map's items often fail alike: decide once
        return [self._explained(outcome, messages) for outcome in outcomes]

    def _explained(
        self, outcome: tuple[str, Any], messages: dict[str, str | None]
    ) -> tuple[str, Any]:
        status, payload = outcome
        if (
            status != wire.ItemStatus.ERROR
            or not isinstance(payload, dict)
            or payload.get("etype") != "builtins.ModuleNotFoundError"
        ):
            return outcome
        found = _NO_MODULE.match(str(payload.get("evalue", "")))
        if found is None:
            return outcome
        name = found.group(1)
        if name not in messages:
            messages[name] = self._missing(name)
        message = messages[name]
        if message is None:
            return outcome
        error = ModuleNotFoundError(message, name=name)
        return status, {**payload, "evalue": message, "pickled": pickle.dumps(error)}

    def missing_in_exec(self, error: ModuleNotFoundError) -> ModuleNotFoundError | None:
        """For ``s.exec``: the same advice as for a call's outcome, as a new
        ModuleNotFoundError (None: keep the kernel's own error)."""
        found = _NO_MODULE.match(str(error))
        if found is None:
            return None
        message = self._missing(found.group(1))
        return None if message is None else ModuleNotFoundError(message, name=found.group(1))

    def _missing(self, name: str) -> str | None:
        """What to say about module ``name`` missing on the kernel (None: the kernel's words)."""
        pattern = self.exclusions.excluding(name) if self.exclusions else None
        if pattern is not None:
            return (
                f"No module named {name!r} on the kernel: it was not sent, because "
                f"exclude_modules has {pattern!r}"
            )
        if _is_local_module(name):
            return None  # the user's own code, not a package: pip would not help
        return install_hint(name)

    def _reach(self) -> list[SourceFile]:
        """The current version of every local module the roots reach. A module's imports are
        followed, and a submodule brings its packages; excluded modules are neither sent nor
        followed."""
        files: dict[str, SourceFile] = {}
        seen: set[str] = set()
        todo = list(self._roots)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            found = _local_source(name)
            if found is None or self.exclusions.match(name, found[1]) is not None:
                continue
            relpath, path = found
            version = self._read(path)
            if version is None:
                continue
            digest, content = version
            files[relpath] = SourceFile(relpath, name, digest, content)
            todo += _source_imports(name, relpath, digest, content)
            while "." in name:
                name = name.rpartition(".")[0]
                todo.append(name)
        return [files[relpath] for relpath in sorted(files)]

    def _read(self, path: str) -> tuple[str, bytes] | None:
        """A file's digest and content, read again only when its size or mtime changed."""
        try:
            stat = os.stat(path)
        except OSError:
            return None
        cached = self._stat_cache.get(path)
        if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
            return cached[2], cached[3]
        try:
            with open(path, "rb") as f:
                content = f.read()
        except OSError:
            return None
        digest = hashlib.blake2b(content, digest_size=16).hexdigest()
        self._stat_cache[path] = (stat.st_mtime_ns, stat.st_size, digest, content)
        return digest, content
