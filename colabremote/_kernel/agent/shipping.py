"""Shipping code as source, so a function written for one Python minor version runs on another.

cloudpickle sends a function by value as its code object, whose bytecode only loads on the same
minor version. For code whose source we can read, we send the top-level statement that contains
it instead; the receiver compiles that statement (without running it) and picks the code object
with the same name and first line. Enclosing scopes are compiled too, so closures, ``super()``
and nested functions get exactly the cell layout the original had.

Both halves use this module: the client pickles with it, and the agent's source bundle (see
``__init__.py``) carries it into the kernel, where it runs as part of ``_colabremote_agent``.
"""

from __future__ import annotations

import ast
import functools
import io
import linecache
import os
import pickle
import sys
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import cloudpickle

from ..wire import AGENT_MODULE, PICKLE_PROTOCOL
from .framing import Buffer

# Pickles name the object table's functions as _colabremote_agent.*, which on the client is this
# module (see the end of the file): so they must be found here too.
from .objects import (  # noqa: F401
    call_kept_method,
    keep_result,
    keep_value,
    kept_object,
    kept_value,
)


class SourceUnavailable(Exception):
    """This code object cannot be shipped as source."""


Chunk = tuple[int, str]  # (first line number, source text)

_PY_SOURCE_CACHE: dict[tuple[str, int], _Layout] = {}
_SPEC_CACHE: OrderedDict[types.CodeType, tuple[Any, ...] | None] = OrderedDict()
_COMPILED: OrderedDict[tuple[str, tuple[Chunk, ...], tuple[str, ...]], types.CodeType] = (
    OrderedDict()
)
_CACHE_LIMIT = 512


class _Layout:
    """Where the top-level statements and imports of a source file are."""

    __slots__ = ("futures", "imports", "spans")

    def __init__(
        self, spans: list[tuple[int, int]], imports: list[tuple[int, int]], futures: tuple[str, ...]
    ) -> None:
        self.spans = spans
        self.imports = imports
        self.futures = futures


def _future_flags(names: Sequence[str]) -> int:
    import __future__

    flags = 0
    for name in names:
        feature = getattr(__future__, name, None)
        if feature is not None:
            flags |= feature.compiler_flag
    return flags


def iter_code(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from iter_code(const)


T = TypeVar("T")


def _ast_call(make: Callable[[], T]) -> T:
    """Parse or compile, once more if CPython 3.11's AST converter reports "recursion depth
    mismatch": a known bug of that version (fixed in later 3.11 releases) when a finalizer runs
    in the middle of the conversion. The source is fine, and the second try succeeds."""
    try:
        return make()
    except SystemError as exc:
        if "recursion depth mismatch" not in str(exc):
            raise
        return make()


def _compile_chunks(
    filename: str, chunks: tuple[Chunk, ...], futures: tuple[str, ...]
) -> types.CodeType:
    """Compile (never run) source chunks as one module, each at its own line numbers.

    The chunks are the file's top-level imports and the statement that holds the code: the
    imports matter because some compilers emit different bytecode for names bound by imports.
    """
    key = (filename, chunks, futures)
    code = _COMPILED.get(key)
    if code is None:
        body: list[ast.stmt] = []
        for start, text in chunks:
            tree = _ast_call(functools.partial(ast.parse, text, filename))
            ast.increment_lineno(tree, start - 1)
            body.extend(tree.body)
        module = ast.Module(body=body, type_ignores=[])
        flags = _future_flags(futures)
        code = _ast_call(lambda: compile(module, filename, "exec", flags=flags, dont_inherit=True))
        _COMPILED[key] = code
        if len(_COMPILED) > _CACHE_LIMIT:
            _COMPILED.popitem(last=False)
    else:
        _COMPILED.move_to_end(key)
    return code


def _register_lines(filename: str, start: int, segment: str) -> None:
    """Make tracebacks on this side show the shipped source lines."""
    if os.path.exists(filename):
        return
    entry: Any = linecache.cache.get(filename)
    lines: list[str] = list(entry[2]) if entry is not None else []
    new = segment.splitlines(keepends=True)
    if len(lines) < start - 1 + len(new):
        lines.extend("\n" for _ in range(start - 1 + len(new) - len(lines)))
    lines[start - 1 : start - 1 + len(new)] = new
    linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)


def _matching(code: types.CodeType, name: str, firstlineno: int) -> list[types.CodeType]:
    return [c for c in iter_code(code) if c.co_name == name and c.co_firstlineno == firstlineno]


def rebuild_code(
    filename: str,
    chunks: tuple[Chunk, ...],
    futures: tuple[str, ...],
    name: str,
    firstlineno: int,
    index: int,
    freevars: tuple[str, ...],
) -> types.CodeType:
    """Compile shipped source and return the code object it describes (the unpickling side)."""
    chunks = tuple((int(start), str(text)) for start, text in chunks)
    module_code = _compile_chunks(filename, chunks, tuple(futures))
    start, segment = chunks[-1]
    _register_lines(filename, start, segment)
    matches = _matching(module_code, name, firstlineno)
    if index >= len(matches):
        raise pickle.UnpicklingError(f"{name} at {filename}:{firstlineno} not found in its source")
    code = matches[index]
    if code.co_freevars != tuple(freevars):
        raise pickle.UnpicklingError(
            f"{name} at {filename}:{firstlineno}: closure variables {code.co_freevars} compiled "
            f"here differ from {tuple(freevars)} at the sender"
        )
    return code


def _same_code(a: types.CodeType, b: types.CodeType) -> bool:
    if (
        a.co_code != b.co_code
        or a.co_names != b.co_names
        or a.co_varnames != b.co_varnames
        or a.co_freevars != b.co_freevars
        or a.co_cellvars != b.co_cellvars
        or len(a.co_consts) != len(b.co_consts)
    ):
        return False
    for x, y in zip(a.co_consts, b.co_consts, strict=False):
        if isinstance(x, types.CodeType):
            if not isinstance(y, types.CodeType) or not _same_code(x, y):
                return False
        elif type(x) is not type(y) or x != y:
            return False
    return True


def _source_layout(filename: str, lines: list[str]) -> _Layout:
    key = (filename, hash(tuple(lines)))
    layout = _PY_SOURCE_CACHE.get(key)
    if layout is None:
        tree = _ast_call(lambda: ast.parse("".join(lines), filename))
        spans: list[tuple[int, int]] = []
        imports: list[tuple[int, int]] = []
        futures: list[str] = []
        for node in tree.body:
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            span = (first, node.end_lineno or node.lineno)
            spans.append(span)
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                futures.extend(alias.name for alias in node.names)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                imports.append(span)
        layout = _Layout(spans, imports, tuple(futures))
        if len(_PY_SOURCE_CACHE) > _CACHE_LIMIT:
            _PY_SOURCE_CACHE.clear()
        _PY_SOURCE_CACHE[key] = layout
    return layout


def code_source_spec(code: types.CodeType) -> tuple[Any, ...] | None:
    """Arguments for :func:`rebuild_code` that recreate ``code``, or None if there is no source.

    The source is checked by compiling it here and comparing with the live code object, so a file
    edited after it was imported falls back to bytecode instead of shipping the wrong code.
    """
    if code in _SPEC_CACHE:
        _SPEC_CACHE.move_to_end(code)
        return _SPEC_CACHE[code]
    spec: tuple[Any, ...] | None = None
    try:
        spec = _find_source_spec(code)
    except (SyntaxError, ValueError, SourceUnavailable, OSError, RecursionError):
        spec = None
    _SPEC_CACHE[code] = spec
    if len(_SPEC_CACHE) > _CACHE_LIMIT:
        _SPEC_CACHE.popitem(last=False)
    return spec


def _text(lines: list[str], first: int, last: int) -> str:
    text = "".join(lines[first - 1 : last])
    return text if text.endswith("\n") else text + "\n"


def _find_source_spec(code: types.CodeType) -> tuple[Any, ...] | None:
    """Source from linecache: a file on disk, or a cell IPython cached there under a name no
    file has (``<ipython-input-3-...>``; ipykernel's ``/tmp/ipykernel_1/2.py``). linecache holds
    nothing for ``<stdin>`` or ``exec``'d strings, which then go as bytecode."""
    filename = code.co_filename
    if not filename:
        return None
    lines = linecache.getlines(filename)
    if not lines:
        return None
    layout = _source_layout(filename, lines)
    for first, last in layout.spans:
        if first <= code.co_firstlineno <= last:
            break
    else:
        return None
    chunks = tuple((a, _text(lines, a, b)) for a, b in layout.imports if b < first)
    chunks += ((first, _text(lines, first, last)),)
    compiled = _compile_chunks(filename, chunks, layout.futures)
    matches = _matching(compiled, code.co_name, code.co_firstlineno)
    same = [i for i, candidate in enumerate(matches) if _same_code(candidate, code)]
    if len(same) != 1:
        return None
    return (
        filename,
        chunks,
        layout.futures,
        code.co_name,
        code.co_firstlineno,
        same[0],
        code.co_freevars,
    )


_DATACLASS_GENERATED = frozenset(
    {
        "__init__",
        "__repr__",
        "__eq__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__hash__",
        "__setattr__",
        "__delattr__",
        "__getstate__",
        "__setstate__",
        "__replace__",
    }
)
_DATACLASS_OPTIONS = (
    "init",
    "repr",
    "eq",
    "order",
    "unsafe_hash",
    "frozen",
    "match_args",
    "kw_only",
)


def portable_class_reduce(cls: type, reduced: Any) -> Any:
    """Adapt cloudpickle's by-value reduction of a class so it works on any Python version.

    A dataclass's ``__init__``, ``__eq__`` and friends are generated with ``exec`` and have no
    source: they are left out, and the receiver applies ``@dataclass`` again to make its own.
    """
    import dataclasses

    if not isinstance(reduced, tuple) or not dataclasses.is_dataclass(cls):
        return reduced
    params = cls.__dict__.get("__dataclass_params__")
    if params is None or getattr(params, "slots", False):
        return reduced
    make, args, (clsdict, slotstate), listitems, dictitems, _setter = reduced
    generated = {
        name
        for name, value in clsdict.items()
        if name in _DATACLASS_GENERATED
        and (_made_without_source(value) or getattr(value, "__module__", None) == "dataclasses")
    }
    if not generated:
        return reduced
    # Field and parameter objects have version-specific slots: they travel as plain data.
    generated |= {"__dataclass_fields__", "__dataclass_params__"}
    kept = {name: value for name, value in clsdict.items() if name not in generated}
    options = {name: getattr(params, name) for name in _DATACLASS_OPTIONS if hasattr(params, name)}
    fields = []
    for field in dataclasses.fields(cls):
        spec: dict[str, Any] = {
            "name": field.name,
            "init": field.init,
            "repr": field.repr,
            "hash": field.hash,
            "compare": field.compare,
            "metadata": dict(field.metadata),
        }
        if field.default is not dataclasses.MISSING:
            spec["default"] = field.default
        if field.default_factory is not dataclasses.MISSING:
            spec["default_factory"] = field.default_factory
        if isinstance(getattr(field, "kw_only", None), bool):
            spec["kw_only"] = field.kw_only
        fields.append(spec)
    state = ((kept, slotstate), options, fields)
    return make, args, state, listitems, dictitems, dataclass_setstate


def _made_without_source(value: Any) -> bool:
    """A function (or the one a decorator wraps, like ``__repr__``'s) that has no source."""
    import inspect

    if not isinstance(value, types.FunctionType):
        return False
    inner = inspect.unwrap(value)
    code = getattr(inner, "__code__", None)
    return isinstance(code, types.CodeType) and code_source_spec(code) is None


def dataclass_setstate(cls: type, state: tuple[Any, dict[str, Any], list[dict[str, Any]]]) -> type:
    """Fill in a dataclass shipped by :func:`portable_class_reduce` (the unpickling side)."""
    import dataclasses
    import inspect

    from cloudpickle.cloudpickle import _class_setstate

    if "__dataclass_fields__" in cls.__dict__:
        return cls  # a class this process already has, complete: leave it alone
    class_state, options, fields = state
    _class_setstate(cls, class_state)
    field_options = inspect.signature(dataclasses.field).parameters
    for spec in fields:
        kwargs = {k: v for k, v in spec.items() if k != "name" and k in field_options}
        setattr(cls, spec["name"], dataclasses.field(**kwargs))  # what @dataclass read first
    accepted = inspect.signature(dataclasses.dataclass).parameters
    # @dataclass reads string annotations in the namespace of the class's module, which may not
    # exist here: stand in the namespace its shipped functions share, for the duration.
    module_name = cls.__module__
    stand_in = None
    if module_name not in sys.modules:
        stand_in = types.ModuleType(module_name)
        stand_in.__dict__.update(_NAMESPACES.get(module_name, {}))
        sys.modules[module_name] = stand_in
    try:
        dataclasses.dataclass(cls, **{k: v for k, v in options.items() if k in accepted})
    finally:
        if stand_in is not None and sys.modules.get(module_name) is stand_in:
            del sys.modules[module_name]
    return cls


class BytecodeRefused(pickle.PicklingError):
    """A code object had to go as bytecode, and the receiver runs another Python version."""

    def __init__(self, code: types.CodeType) -> None:
        super().__init__(f"{code.co_name} ({code.co_filename}:{code.co_firstlineno})")
        self.code = code


class SourcePickler(cloudpickle.Pickler):  # type: ignore[misc]
    """A cloudpickle pickler that ships code objects as source whenever it can.

    ``allow_bytecode=False`` turns the bytecode fallback into :class:`BytecodeRefused`, for
    receivers on another Python minor version.
    """

    def __init__(
        self,
        file: io.BufferedIOBase | io.BytesIO,
        *,
        buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None,
        allow_bytecode: bool = True,
    ) -> None:
        super().__init__(file, protocol=PICKLE_PROTOCOL, buffer_callback=buffer_callback)
        self.allow_bytecode = allow_bytecode

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType:
            spec = code_source_spec(obj)
            if spec is not None:
                return rebuild_code, spec
            if not self.allow_bytecode:
                raise BytecodeRefused(obj)
            return NotImplemented
        reduced = super().reducer_override(obj)
        if isinstance(obj, type):
            return portable_class_reduce(obj, reduced)
        return reduced


def dumps(obj: Any, *, allow_bytecode: bool = True) -> list[memoryview]:
    """Pickle ``obj`` into parts: the pickle stream, then its out-of-band buffers (zero copy)."""
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    SourcePickler(stream, buffer_callback=buffers.append, allow_bytecode=allow_bytecode).dump(obj)
    return [stream.getbuffer(), *(b.raw() for b in buffers)]


def loads(parts: Sequence[Buffer]) -> Any:
    """Unpickle what :func:`dumps` made. Out-of-band buffers become the arrays' memory, so one
    that arrived read-only (inside a received WebSocket frame) is copied first: arrays come back
    writable, as they would from a local call. Reassembled large parts are writable already."""
    buffers = [bytearray(b) if memoryview(b).readonly else b for b in parts[1:]]
    return pickle.loads(parts[0], buffers=buffers)


_NAMESPACES: dict[str, dict[str, Any]] = {}


def module_namespace(name: str, base: dict[str, Any]) -> dict[str, Any]:
    """The one globals dict, per module name, that functions shipped by value share here.

    Locally, functions of one module share its globals; so do their copies in the kernel, across
    calls: state one remote function stores in a global is seen by the next.
    """
    namespace = _NAMESPACES.setdefault(name, {})
    for key, value in base.items():
        namespace.setdefault(key, value)
    return namespace


# So that pickles made on either side name these functions the same way.
module_namespace.__module__ = AGENT_MODULE
dataclass_setstate.__module__ = AGENT_MODULE
rebuild_code.__module__ = AGENT_MODULE
if __name__ != AGENT_MODULE:
    # On the client, this module stands for the agent when a result's pickle names it.
    sys.modules.setdefault(AGENT_MODULE, sys.modules[__name__])
