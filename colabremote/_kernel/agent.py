"""The remote half of colabremote: a comm target installed once in each kernel.

This file is shipped to the kernel as source and run there, so it imports nothing from
colabremote: only the standard library and cloudpickle. The client imports the same file for the
pieces both sides share (message framing and the source-based pickling of code), so the two halves
cannot drift apart.

Protocol, in comm messages on the target ``colabremote`` (``data`` is JSON, ``buffers`` are bytes):

- A logical message is ``{"op": ..., "id": ..., "nparts": N, "chunked": [...]}`` plus N binary
  parts.
  Parts larger than the chunk limit travel first as ``{"op": "chunk", ...}`` messages, each with
  one slice, because Jupyter servers drop WebSocket messages over 10 MiB.
- The kernel's facts come back with the install (``hello()``, as a user expression).
  ``sources``: local modules to make importable.
  ``call``: run a function (parts: function pickle if new, arguments pickle, out-of-band buffers).
  ``ack``: results the client has, to forget. ``resume``: stop aborting after an interrupt.
  ``fetch``: send a kept result again. ``info``: slower facts (GPUs).
- Results are kept, keyed by call id, until acknowledged, so a dropped socket loses nothing.
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import io
import linecache
import mmap
import os
import pickle
import platform
import shutil
import socket
import sys
import tempfile
import time
import traceback
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cloudpickle

AGENT_VERSION = 1
TARGET_NAME = "colabremote"
PICKLE_PROTOCOL = 5
#: Largest binary payload put in one comm message. Stock Jupyter servers drop inbound WebSocket
#: messages over 10 MiB; 8 MiB leaves room for the JSON and framing.
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024

Buffer = bytes | bytearray | memoryview

# --------------------------------------------------------------------------------------------
# Framing: one logical message as several comm messages


def split_message(
    fields: dict[str, Any], parts: Sequence[Buffer], limit: int = DEFAULT_CHUNK_SIZE
) -> Iterator[tuple[dict[str, Any], list[memoryview]]]:
    """Yield ``(data, buffers)`` comm messages that carry ``fields`` and ``parts``.

    Small parts ride inline on the final message; a part that would push it over ``limit`` is
    sent ahead in chunks of at most ``limit`` bytes. The final message comes last.
    """
    msg_id = fields["id"]
    chunked: list[int] = []
    inline: list[memoryview] = []
    inline_size = 0
    for index, part in enumerate(parts):
        view = memoryview(part).cast("B") if not isinstance(part, memoryview) else part
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        size = view.nbytes
        if inline_size + size <= limit:
            inline.append(view)
            inline_size += size
            continue
        chunked.append(index)
        for offset in range(0, size, limit):
            header = {"op": "chunk", "id": msg_id, "part": index, "offset": offset, "size": size}
            yield header, [view[offset : offset + limit]]
    yield {**fields, "nparts": len(parts), "chunked": chunked}, inline


_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux: map every page in one go


def allocate(size: int) -> memoryview:
    """A writable buffer of ``size`` bytes for a large part, not filled with zeros first.

    ``bytearray(size)`` writes zeros over every page before the data is copied in, a whole
    extra pass over memory; fresh anonymous pages come zeroed from the operating system, and
    ``MAP_POPULATE`` maps them all in one call instead of one page fault per 4 KiB.
    """
    if size <= 0:
        return memoryview(bytearray(0))
    if os.name == "posix":
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _POPULATE
        return memoryview(mmap.mmap(-1, size, flags=flags))
    return memoryview(mmap.mmap(-1, size))


class Assembler:
    """Puts chunked logical messages back together, one preallocated buffer per part."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[int, tuple[memoryview, int]]] = {}

    def add_chunk(self, data: dict[str, Any], buffer: Buffer) -> None:
        parts = self._pending.setdefault(str(data["id"]), {})
        index = int(data["part"])
        if index not in parts:
            parts[index] = (allocate(int(data["size"])), 0)
        target, received = parts[index]
        view = memoryview(buffer).cast("B")
        offset = int(data["offset"])
        target[offset : offset + view.nbytes] = view
        parts[index] = (target, received + view.nbytes)

    def finish(self, data: dict[str, Any], buffers: Sequence[Buffer]) -> list[memoryview]:
        """The message's parts in order, or ValueError if a chunk went missing."""
        chunks = self._pending.pop(str(data["id"]), {})
        chunked = set(data.get("chunked", ()))
        inline = iter(buffers)
        parts: list[memoryview] = []
        for index in range(int(data.get("nparts", len(buffers)))):
            if index in chunked:
                if index not in chunks:
                    raise ValueError(f"part {index} of message {data['id']} never arrived")
                target, received = chunks[index]
                if received != target.nbytes:
                    raise ValueError(
                        f"part {index} of message {data['id']}: {received} of {target.nbytes} bytes"
                    )
                parts.append(target)
            else:
                parts.append(memoryview(next(inline)).cast("B"))
        return parts

    def discard(self, msg_id: str) -> None:
        self._pending.pop(msg_id, None)


# --------------------------------------------------------------------------------------------
# Shipping code as source, so a function written for one Python minor version runs on another.
#
# cloudpickle sends a function by value as its code object, whose bytecode only loads on the same
# minor version. For code whose source we can read, we send the top-level statement that contains
# it instead; the receiver compiles that statement (without running it) and picks the code object
# with the same name and first line. Enclosing scopes are compiled too, so closures, ``super()``
# and nested functions get exactly the cell layout the original had.


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


def _iter_code(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _iter_code(const)


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
            tree = ast.parse(text, filename)
            ast.increment_lineno(tree, start - 1)
            body.extend(tree.body)
        module = ast.Module(body=body, type_ignores=[])
        code = compile(module, filename, "exec", flags=_future_flags(futures), dont_inherit=True)
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
    return [c for c in _iter_code(code) if c.co_name == name and c.co_firstlineno == firstlineno]


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
        tree = ast.parse("".join(lines), filename)
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
    filename = code.co_filename
    if not filename or (filename.startswith("<") and filename.endswith(">")):
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
module_namespace.__module__ = "_colabremote_agent"
dataclass_setstate.__module__ = "_colabremote_agent"
rebuild_code.__module__ = "_colabremote_agent"
if __name__ != "_colabremote_agent":
    sys.modules.setdefault("_colabremote_agent", sys.modules[__name__])


# --------------------------------------------------------------------------------------------
# The agent (runs in the kernel)


def _describe_exception(exc: BaseException) -> dict[str, Any]:
    """Type, message and traceback text of an exception raised by user code."""
    tb = exc.__traceback__
    # Drop the agent's own frames, so the traceback starts in the user's function.
    while tb is not None and tb.tb_frame.f_code.co_filename == _AGENT_FILENAME:
        tb = tb.tb_next
    exc_type = type(exc)
    lines = traceback.format_exception(exc_type, exc, tb)
    return {
        "etype": f"{exc_type.__module__}.{exc_type.__qualname__}",
        "evalue": str(exc),
        "traceback": "".join(lines),
    }


_AGENT_FILENAME = sys._getframe().f_code.co_filename


def _gpu_info() -> list[dict[str, str]]:
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 3:
            gpus.append({"name": fields[0], "memory": fields[1], "driver": fields[2]})
    return gpus


def _tpu_info() -> list[str]:
    return (
        sorted(name for name in os.listdir("/dev") if name.startswith("accel"))
        if os.path.isdir("/dev")
        else []
    )


class _Outcome:
    """A call's result, kept until the client acknowledges it."""

    __slots__ = ("fields", "parts")

    def __init__(self, fields: dict[str, Any], parts: list[memoryview]) -> None:
        self.fields = fields
        self.parts = parts


def _remove_in(pid: int, path: str) -> None:
    """At exit, remove ``path`` if this is still the process that made it (not a forked child
    of the kernel, which runs the same exit hooks)."""
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


class Agent:
    """Handles the client's messages on one comm. Runs on the kernel's main thread."""

    FUNCTION_CACHE_SIZE = 256

    def __init__(self, comm: Any, chunk_size: int, kernel: Any = None) -> None:
        self.comm = comm
        self.kernel = kernel
        self.chunk_size = chunk_size
        self.assembler = Assembler()
        self.functions: OrderedDict[str, Callable[..., Any]] = OrderedDict()
        self.kept: dict[str, _Outcome] = {}
        self.aborting = False
        self.source_dir = tempfile.mkdtemp(prefix="colabremote-src-")
        atexit.register(_remove_in, os.getpid(), self.source_dir)
        self.source_hashes: dict[str, str] = {}
        sys.path.insert(0, self.source_dir)
        comm.on_msg(self.on_msg)

    # -- plumbing --------------------------------------------------------------------------

    def send(self, fields: dict[str, Any], parts: Sequence[Buffer] = ()) -> None:
        for data, buffers in split_message(fields, parts, self.chunk_size):
            self.comm.send(data=data, buffers=buffers)

    def on_msg(self, msg: dict[str, Any]) -> None:
        self._watch_idle_interrupts()
        try:
            self._on_msg(msg)
        except KeyboardInterrupt:
            # The interrupt landed in our own code rather than in a user function.
            self.aborting = True

    def _watch_idle_interrupts(self) -> None:
        """Notice interrupts that arrive between calls, which the kernel would otherwise drop.

        The kernel restores ``saved_sigint_handler`` after each message it handles; making that
        our handler means an interrupt aimed at a call that has just finished still aborts the
        calls queued behind it, instead of being lost.
        """
        kernel = self.kernel
        if kernel is not None and hasattr(kernel, "saved_sigint_handler"):
            kernel.saved_sigint_handler = self._idle_interrupt

    def _idle_interrupt(self, signum: int, frame: Any) -> None:
        self.aborting = True

    def _on_msg(self, msg: dict[str, Any]) -> None:
        data = msg["content"]["data"]
        buffers = msg.get("buffers") or []
        op = data.get("op")
        if op == "chunk":
            self.assembler.add_chunk(data, buffers[0])
            return
        for call_id in data.get("ack", ()):
            self.kept.pop(call_id, None)
        try:
            parts = self.assembler.finish(data, buffers)
        except ValueError as exc:
            self.send({"op": "result", "id": data.get("id"), "status": "lost", "evalue": str(exc)})
            return
        handler = getattr(self, "op_" + str(op), None)
        if handler is None:
            self.send({"op": "error", "id": data.get("id"), "evalue": f"unknown op {op!r}"})
            return
        handler(data, parts)

    # -- operations ------------------------------------------------------------------------

    def op_info(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        self.send({"op": "info", "id": data["id"], "gpus": _gpu_info(), "tpus": _tpu_info()})

    def op_ack(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        """Acknowledgements ride on every message; this op exists to send them alone."""

    def op_resume(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        self.aborting = False
        self.send({"op": "resumed", "id": data["id"]})

    def op_fetch(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        for call_id in data.get("ids", ()):
            kept = self.kept.get(call_id)
            if kept is None:
                self.send({"op": "result", "id": call_id, "status": "unknown"})
            else:
                self.send(kept.fields, kept.parts)

    def op_sources(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        """Write the client's local modules where this kernel imports from."""
        import importlib

        changed = []
        for entry, content in zip(data["files"], parts, strict=False):
            relpath = os.path.normpath(entry["path"])
            if relpath.startswith("..") or os.path.isabs(relpath):
                continue
            path = os.path.join(self.source_dir, relpath)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            cache = os.path.join(os.path.dirname(path), "__pycache__")
            stem = os.path.splitext(os.path.basename(path))[0] + "."
            if os.path.isdir(cache):
                for name in os.listdir(cache):
                    if name.startswith(stem):
                        os.unlink(os.path.join(cache, name))
            with open(path, "wb") as f:
                f.write(content)
            if entry["path"] in self.source_hashes:
                changed.append(entry["module"])  # an edited file, sent again
            self.source_hashes[entry["path"]] = entry["hash"]
        if changed:
            # Modules import each other: forget every shipped module, so the next import sees
            # one consistent version of them all.
            prefix = os.path.join(self.source_dir, "")
            for name, module in list(sys.modules.items()):
                if str(getattr(module, "__file__", "") or "").startswith(prefix):
                    del sys.modules[name]
        importlib.invalidate_caches()
        self.send({"op": "sources", "id": data["id"], "count": len(parts)})

    def op_call(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        """Run the function once per item, in order; reply with one outcome per item."""
        call_id = data["id"]
        if self.aborting:
            self._reply(call_id, "aborted", None, 0.0)
            return
        if str(data["fn"]) not in self.functions and not data.get("fn_included"):
            self._reply(call_id, "need_function", None, 0.0)  # evicted: the client resends it
            return
        started = time.perf_counter()
        try:
            fn = self._function(data, parts)
            items = loads(parts[1 if data.get("fn_included") else 0 :])
        except BaseException as exc:  # noqa: BLE001 - reported to the client, never swallowed
            self._reply(call_id, "setup_error", [("error", exception_payload(exc))], started)
            return
        status = "ok"
        outcomes: list[tuple[str, Any]] = []
        for args, kwargs in items:
            try:
                outcomes.append(("ok", fn(*args, **kwargs)))
            except KeyboardInterrupt as exc:
                # The client interrupted us: everything it queued before saying "resume" is stale.
                self.aborting = True
                outcomes.append(("interrupted", exception_payload(exc)))
                status = "interrupted"
                break
            except BaseException as exc:  # noqa: BLE001 - SystemExit too: it is the caller's
                outcomes.append(("error", exception_payload(exc)))
        self._reply(call_id, status, outcomes, started)

    # -- helpers ---------------------------------------------------------------------------

    def _function(self, data: dict[str, Any], parts: list[memoryview]) -> Callable[..., Any]:
        key = str(data["fn"])
        fn = self.functions.get(key)
        if fn is None:
            if not data.get("fn_included"):
                raise LookupError(f"function {key} is not cached in this kernel")
            fn = loads([parts[0]])
            self.functions[key] = fn
            if len(self.functions) > self.FUNCTION_CACHE_SIZE:
                self.functions.popitem(last=False)
        else:
            self.functions.move_to_end(key)
        return fn

    def _reply(
        self, call_id: str, status: str, outcomes: list[tuple[str, Any]] | None, started: float
    ) -> None:
        for stream in (sys.stdout, sys.stderr):
            # Output printed by the call arrives before its result; a broken stream must not
            # lose the result.
            with contextlib.suppress(Exception):
                stream.flush()
        fields: dict[str, Any] = {"op": "result", "id": call_id, "status": status}
        fields["seconds"] = time.perf_counter() - started if started else 0.0
        parts: list[memoryview] = []
        if outcomes is not None:
            try:
                parts = dumps(outcomes)
            except BaseException:  # noqa: BLE001 - find the items that cannot travel
                parts = dumps([_picklable_outcome(outcome) for outcome in outcomes])
        self.kept[call_id] = _Outcome(fields, parts)
        self.send(fields, parts)


def exception_payload(exc: BaseException) -> dict[str, Any]:
    """An exception as data: type name, message, traceback text, and the pickled exception.

    The exception is pickled on its own, so one the receiver cannot rebuild costs only itself.
    """
    payload = _describe_exception(exc)
    try:
        stream = io.BytesIO()
        SourcePickler(stream).dump(exc)
        payload["pickled"] = stream.getvalue()
    except BaseException:  # noqa: BLE001 - unpicklable exceptions travel as text
        payload["pickled"] = None
    return payload


def _picklable_outcome(outcome: tuple[str, Any]) -> tuple[str, Any]:
    try:
        dumps(outcome)
    except BaseException as exc:  # noqa: BLE001
        error = exception_payload(exc)
        error["etype"] = "colabremote.exceptions.ResultNotSerializable"
        error["evalue"] = f"the result ({type(outcome[1]).__name__}) cannot be pickled: {exc}"
        return ("error", error)
    return outcome


_AGENTS: dict[str, Agent] = {}


def _install_shim() -> None:
    """Make ``import colabremote`` work in the kernel when the real package is absent.

    User modules shipped here may decorate functions with ``@colabremote.remote``; inside the
    runtime those functions simply run in place.
    """
    try:
        import colabremote  # noqa: F401
    except ImportError:
        pass
    else:
        return

    shim = types.ModuleType("colabremote", "Pass-through stand-in inside a colabremote kernel.")

    def remote(fn: Any = None, **_options: Any) -> Any:
        if fn is None:
            return lambda f: f
        return fn

    class Session:
        def __init__(self, *_args: Any, **_kwargs: Any) -> None:
            self.remote = remote

        def __enter__(self) -> Session:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def close(self) -> None:
            return None

    shim.remote = remote  # type: ignore[attr-defined]
    shim.Session = Session  # type: ignore[attr-defined]
    shim.AsyncSession = Session  # type: ignore[attr-defined]
    sys.modules["colabremote"] = shim


def hello() -> dict[str, Any]:
    """Facts about this kernel, for the client's first look."""
    return {
        "agent_version": AGENT_VERSION,
        "python": list(sys.version_info[:3]),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "cloudpickle": cloudpickle.__version__,
    }


def hello_json() -> str:
    import json

    return json.dumps(hello())


def _create_comm(comm_id: str) -> Any:
    """Open the agent's comm from the kernel side, under the id the client chose."""
    try:
        from comm import create_comm

        return create_comm(target_name=TARGET_NAME, comm_id=comm_id, data={})
    except (ImportError, NotImplementedError):
        from ipykernel.comm import Comm

        return Comm(target_name=TARGET_NAME, comm_id=comm_id, data={})  # type: ignore[no-untyped-call]


def install(comm_id: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
    """Create the agent on a new comm. Installing again (a new client) adds another agent."""
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    comm = _create_comm(comm_id)
    _AGENTS[comm_id] = Agent(comm, chunk_size, kernel)

    def forget(_msg: dict[str, Any]) -> None:
        _AGENTS.pop(comm_id, None)

    comm.on_close(forget)
    _install_shim()
