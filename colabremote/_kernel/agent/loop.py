"""The agent: the remote half of colabremote, one per comm, running calls inside the kernel.

The kernel receives this module as part of one source bundle (see ``__init__.py``) and runs it as
the module ``_colabremote_agent``. Besides its siblings in the bundle, it imports only the standard
library and cloudpickle (and, where it is used, the kernel's own IPython machinery).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import functools
import io
import os
import platform
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
import traceback
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cloudpickle

from ..wire import (
    AGENT_MODULE,
    AGENT_VERSION,
    DEFAULT_CHUNK_SIZE,
    OUTPUT_BUFFER_LIMIT,
    OUTPUT_INTERVAL,
    OUTPUT_MESSAGE_BYTES,
    STREAM_STEP_BYTES,
    STREAM_STEP_ITEMS,
    STREAM_STEP_SECONDS,
    TARGET_NAME,
    ItemStatus,
    Op,
    Status,
)
from .framing import Assembler, Buffer, split_message
from .objects import forget_kept, kernel_identity
from .shipping import SourcePickler, dumps, loads
from .streams import GENERATOR_DONE, GeneratorState


def _describe_exception(exc: BaseException) -> dict[str, Any]:
    """Type, message and traceback text of an exception raised by user code."""
    tb = exc.__traceback__
    # Drop the agent's own frames, so the traceback starts in the user's function.
    while tb is not None and tb.tb_frame.f_code.co_filename == _AGENT_FILENAME:
        tb = tb.tb_next
    exc_type = type(exc)
    try:
        text = "".join(traceback.format_exception(exc_type, exc, tb))
    except BaseException:  # noqa: BLE001 - a broken __str__ or __repr__ costs only the text
        text = f"{_type_name(exc_type)}: {_safe_str(exc)}\n"
    return {"etype": _type_name(exc_type), "evalue": _safe_str(exc), "traceback": text}


def _type_name(cls: type) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', '?')}"


def _safe_str(obj: object) -> str:
    """``str(obj)``, or a stand-in naming its type when user code makes that raise."""
    try:
        return str(obj)
    except BaseException as exc:  # noqa: BLE001 - user code: anything may come out of __str__
        return f"<unprintable {type(obj).__name__}: its __str__ raised {type(exc).__name__}>"


# In the kernel, every frame of the bundle carries this name (wire.AGENT_FILENAME).
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


def _utf8_pieces(data: bytes, limit: int) -> Iterator[bytes]:
    """``data`` in slices of at most ``limit`` bytes, never cutting a UTF-8 character in two."""
    start = 0
    while len(data) - start > limit:
        end = start + limit
        while end > start + 1 and data[end] & 0xC0 == 0x80:  # a continuation byte: back off
            end -= 1
        yield data[start:end]
        start = end
    yield data[start:]


class _OutputPump:
    """What one call writes to ``sys.stdout`` and ``sys.stderr``, sent on the agent's comm.

    Jupyter servers drop stream messages over their iopub rate limits (1 MB/s by default), and
    count every message towards another limit: so writes are coalesced, by a thread that sends
    what has gathered every ``OUTPUT_INTERVAL`` (live output) or at once past
    ``OUTPUT_MESSAGE_BYTES``. The thread starts at the first write, so a quiet call costs nothing,
    and a write only appends to a list under a lock.
    """

    def __init__(
        self, send: Callable[[dict[str, Any], Sequence[Buffer]], None], call_id: str, limit: int
    ) -> None:
        self._send = send
        self._id = call_id
        self._limit = max(1024, min(limit, OUTPUT_MESSAGE_BYTES))
        # Reentrant: a signal handler that prints may run while its thread is in write().
        self._lock = threading.RLock()
        self._sending = threading.Lock()
        self._segments: list[tuple[str, list[str]]] = []  # in write order, same stream merged
        self._waiting = 0  # characters not sent yet
        # Made with the sender thread, at the first write: (wake the sender: a message's worth
        # is waiting, or the call ended; room: the buffer was emptied, for held-back writers).
        self._signals: tuple[threading.Event, threading.Event] | None = None
        #: Writes go elsewhere: the call has ended, or this is a forked child's copy (which has
        #: no sender; the kernel's own streams handle children).
        self.ended = False
        # Sends come from this thread, under the call's context, so the kernel gives them the
        # call's message as their parent (the client routes them by it).
        self._context = contextvars.copy_context()
        self._thread: threading.Thread | None = None
        #: Sent so far: the messages, and the bytes of text in them.
        self.messages = 0
        self.bytes = 0

    def write(self, name: str, text: str) -> bool:
        """Take ``text`` for sending; False once :attr:`ended` (the caller writes it to the
        kernel's own stream instead)."""
        with self._lock:
            if self.ended:
                return False
            segments = self._segments
            if segments and segments[-1][0] == name:
                segments[-1][1].append(text)
            else:
                segments.append((name, [text]))
            self._waiting += len(text)
            waiting = self._waiting
            if self._signals is None:
                self._signals = (threading.Event(), threading.Event())
                self._thread = threading.Thread(
                    target=self._context.run,
                    args=(self._run, *self._signals),
                    name="colabremote-output",
                    daemon=True,
                )
                self._thread.start()
            wake, room = self._signals
        if waiting >= self._limit:
            wake.set()  # a full message: no need to wait for the interval
            if waiting >= OUTPUT_BUFFER_LIMIT and threading.current_thread() is not self._thread:
                room.clear()
                while self._waiting >= OUTPUT_BUFFER_LIMIT and not self.ended:
                    room.wait(OUTPUT_INTERVAL)  # the sender is behind: bounded memory
        return True

    def close(self) -> tuple[int, int]:
        """Send what is left and stop; the totals sent, ``(messages, bytes)``."""
        with self._lock:
            self.ended = True
            thread, signals = self._thread, self._signals
        if thread is not None and signals is not None:
            for signal_ in signals:
                signal_.set()
            thread.join()
        self.drain()  # nothing, unless the sender died: then what it left goes from here
        return self.messages, self.bytes

    def forked(self) -> None:
        """In a forked child: this copy has no sender, so writes go to the kernel's streams."""
        self.ended = True

    def _run(self, wake: threading.Event, room: threading.Event) -> None:
        while True:
            # Writes gather for an interval (or until a message's worth is waiting), then go.
            wake.wait(OUTPUT_INTERVAL)
            wake.clear()
            with self._lock:
                ended = self.ended
            self.drain()
            room.set()
            if ended:
                return

    def drain(self) -> None:
        """Send what has gathered now, from this thread: before a display message (which the
        kernel sends at once), so output keeps its order with it."""
        with self._sending:  # one batch at a time, so the numbering follows the writing
            with self._lock:
                batch, self._segments, self._waiting = self._segments, [], 0
            if batch:
                self._ship(batch)

    def _ship(self, batch: list[tuple[str, list[str]]]) -> None:
        streams: list[list[Any]] = []
        pieces: list[bytes] = []
        size = 0
        for name, texts in batch:
            for piece in _utf8_pieces("".join(texts).encode("utf-8", "replace"), self._limit):
                if size + len(piece) > self._limit and pieces:
                    self._emit(streams, pieces, size)
                    streams, pieces, size = [], [], 0
                if streams and streams[-1][0] == name:
                    streams[-1][1] += len(piece)
                else:
                    streams.append([name, len(piece)])
                pieces.append(piece)
                size += len(piece)
        if pieces:
            self._emit(streams, pieces, size)

    def _emit(self, streams: list[list[Any]], pieces: list[bytes], size: int) -> None:
        fields = {
            "op": Op.OUTPUT,
            "id": self._id,
            "seq": self.messages,
            "offset": self.bytes,
            "streams": streams,
        }
        # Counted even when sending fails: the client then sees the gap and says so.
        self.messages += 1
        self.bytes += size
        with contextlib.suppress(Exception):
            self._send(fields, [b"".join(pieces)])


class _CallStream:
    """Stands in for ``sys.stdout`` or ``sys.stderr`` while a call runs: writes go to the call's
    :class:`_OutputPump`. After the call, an object kept from it (a logging handler made during
    the call, a thread's reference) writes where that stream's writes go now: to the call
    running then, or else to the stream it replaced. Everything else is the replaced stream's."""

    def __init__(self, name: str, original: Any, pump: _OutputPump) -> None:
        self._name = name
        self._original = original
        self._pump = pump

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self._pump.write(self._name, text):
            return len(text)
        result: int = self._now().write(text)
        return result

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        # While the call runs, its output goes out within OUTPUT_INTERVAL anyway; sending on
        # every flush would make one message per print(..., flush=True).
        if self._pump.ended:
            self._now().flush()

    def _now(self) -> Any:
        """Where this stream's writes go once its call has ended: the running call's stream of
        the same name (never another ended one, so this cannot loop), else the replaced one."""
        current = getattr(sys, self._name, None)
        if isinstance(current, _CallStream) and current is not self and not current._pump.ended:
            return current
        return self._original

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


#: The pump of the call running now, if any (calls run one at a time, on the main thread).
_CAPTURING: list[_OutputPump] = []


def _forked_child() -> None:
    for pump in _CAPTURING:
        pump.forked()


if hasattr(os, "register_at_fork"):  # not on Windows, where the client imports this too
    os.register_at_fork(after_in_child=_forked_child)


@contextlib.contextmanager
def _capturing_output(pump: _OutputPump, publisher: Any = None) -> Iterator[None]:
    """Put the call's streams in place of ``sys.stdout`` and ``sys.stderr``; on the way out,
    send what is left and put the old ones back (unless user code replaced them meanwhile).
    ``publisher`` is the kernel's display publisher, when it takes hooks (ipykernel's does)."""
    saved = (sys.stdout, sys.stderr)
    sys.stdout = _CallStream("stdout", saved[0], pump)
    sys.stderr = _CallStream("stderr", saved[1], pump)
    ours = (sys.stdout, sys.stderr)
    _CAPTURING.append(pump)
    # The kernel sends display() and clear_output() at once, but first flushes sys.stdout,
    # which for us gathers output to send later: so before each, what gathered goes first.
    hook = _DrainFirst(pump)
    if publisher is not None:
        publisher.register_hook(hook)
    try:
        yield
    finally:
        if publisher is not None:
            with contextlib.suppress(Exception):
                publisher.unregister_hook(hook)
        if sys.stdout is ours[0]:
            sys.stdout = saved[0]
        if sys.stderr is ours[1]:
            sys.stderr = saved[1]
        _CAPTURING.remove(pump)
        pump.close()


class _DrainFirst:
    """A display publisher hook: sends a call's gathered output, then lets the message go."""

    def __init__(self, pump: _OutputPump) -> None:
        self._pump = pump

    def __call__(self, msg: Any) -> Any:
        if not self._pump.ended:
            self._pump.drain()
        return msg


SOURCES_PREFIX = "colabremote-src-"
#: In each sources folder: a file its kernel holds an exclusive flock on while it lives. The
#: lock goes with the process however it ends (SIGKILL included), unlike an exit hook.
_OWNER = ".owner"
#: The open lock files of this process's sources folders (closing one would release its lock).
_HELD: list[int] = []


def sources_folder() -> str:
    """A new folder for shipped module sources, locked by this process; the folders of kernels
    that ended without running their exit hooks (killed) are removed first."""
    sweep_sources()
    path = tempfile.mkdtemp(prefix=SOURCES_PREFIX)
    atexit.register(_remove_in, os.getpid(), path)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the exit hook is all there is
        return path
    # Locked under another name, then renamed: a sweeper only ever sees a locked ``.owner``.
    pending = os.path.join(path, _OWNER + ".new")
    fd = os.open(pending, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(pending, os.path.join(path, _OWNER))
    _HELD.append(fd)
    return path


def sweep_sources(root: str | None = None) -> list[str]:
    """Remove this user's sources folders whose kernel has ended (their lock is free); the
    folders removed. Folders without a lock file (being made, or from older agents) stay."""
    try:
        import fcntl
    except ImportError:
        return []
    root = root or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return []
    for name in names:
        path = os.path.join(root, name)
        if not name.startswith(SOURCES_PREFIX):
            continue
        try:
            status = os.lstat(path)
            if status.st_uid != os.getuid() or not stat.S_ISDIR(status.st_mode):
                continue
            fd = os.open(os.path.join(path, _OWNER), os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its kernel still runs
        else:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


#: The stream name under which a generator step's values wait among its output.
_VALUES = "\x00values"


class _StreamPump(_OutputPump):
    """A generator step's output pump: its values wait in the same queue as the text, so they
    leave in the order they were produced, gathered into few messages like the output."""

    def __init__(
        self, send: Callable[[dict[str, Any], Sequence[Buffer]], None], call_id: str, limit: int
    ) -> None:
        super().__init__(send, call_id, limit)
        self._values: dict[str, list[memoryview]] = {}

    def value(self, index: int, parts: list[memoryview]) -> None:
        """Send a value's pickle after the output written before it."""
        key = str(index)
        with self._lock:
            self._values[key] = parts
        if not self.write(_VALUES, key):  # ended: never while the step runs; sent at once
            self._ship([(_VALUES, [key])])

    def _ship(self, batch: list[tuple[str, list[str]]]) -> None:
        """One ``item`` message per batch (or per ``limit`` bytes): ``segments`` in the order
        written, text as ``[stream, nbytes]`` of part 0, values as ``["", [[index, nparts],
        ...]]`` of the parts after it."""
        segments: list[list[Any]] = []
        text: list[bytes] = []
        parts: list[memoryview] = []
        size = 0
        for name, entries in batch:
            if name == _VALUES:
                with self._lock:
                    values = [(int(key), self._values.pop(key)) for key in entries]
                segments.append(["", [[index, len(value)] for index, value in values]])
                for _, value in values:
                    parts.extend(value)
                    size += sum(part.nbytes for part in value)
            else:
                for piece in _utf8_pieces("".join(entries).encode("utf-8", "replace"), self._limit):
                    if segments and segments[-1][0] == name:
                        segments[-1][1] += len(piece)
                    else:
                        segments.append([name, len(piece)])
                    text.append(piece)
                    size += len(piece)
            if size >= self._limit:
                self._emit_step(segments, text, parts)
                segments, text, parts, size = [], [], [], 0
        if segments:
            self._emit_step(segments, text, parts)

    def _emit_step(
        self, segments: list[list[Any]], text: list[bytes], parts: list[memoryview]
    ) -> None:
        joined = b"".join(text)
        fields = {
            "op": Op.ITEM,
            "id": self._id,
            "seq": self.messages,
            "offset": self.bytes,
            "segments": segments,
        }
        # Counted even when sending fails: the client sees the gap, and replays the values.
        self.messages += 1
        self.bytes += len(joined)
        with contextlib.suppress(Exception):
            self._send(fields, [joined, *parts])


def _remove_in(pid: int, path: str) -> None:
    """At exit, remove ``path`` if this is still the process that made it (not a forked child
    of the kernel, which runs the same exit hooks)."""
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


#: Operations that later agent modules add (``detached``): op name -> handler(agent, data, parts).
EXTRA_OPERATIONS: dict[str, Callable[..., None]] = {}


class Agent:
    """Handles the client's messages on one comm. Runs on the kernel's main thread."""

    FUNCTION_CACHE_SIZE = 256

    def __init__(self, comm: Any, chunk_size: int, kernel: Any = None) -> None:
        self.comm = comm
        self.kernel = kernel
        publisher = getattr(getattr(kernel, "shell", None), "display_pub", None)
        #: The kernel's display publisher, if it takes hooks: a call's output goes before each
        #: display message.
        self.display_publisher = publisher if hasattr(publisher, "register_hook") else None
        self.chunk_size = chunk_size
        self.assembler = Assembler()
        self.functions: OrderedDict[str, Callable[..., Any]] = OrderedDict()
        self.kept: dict[str, _Outcome] = {}
        self.aborting = False
        #: Whether SIGINT (an interrupt) arrived during the current call.
        self.signalled = False
        self.source_dir = sources_folder()
        self.source_hashes: dict[str, str] = {}
        sys.path.insert(0, self.source_dir)
        self.operations: dict[str, Callable[[dict[str, Any], list[memoryview]], None]] = {
            Op.CALL: self.op_call,
            Op.SOURCES: self.op_sources,
            Op.FETCH: self.op_fetch,
            Op.ACK: self.op_ack,
            Op.RESUME: self.op_resume,
            Op.INFO: self.op_info,
            Op.FREE: self.op_free,
            Op.NEXT: self.op_next,
            Op.CLOSE_STREAM: self.op_close_stream,
            Op.REPLAY: self.op_replay,
        }
        #: Generators kept between steps, by the id the client gave them.
        self.streams: dict[str, GeneratorState] = {}
        for op, handler in EXTRA_OPERATIONS.items():
            self.operations[op] = functools.partial(handler, self)
        comm.on_msg(self.on_msg)

    # -- plumbing --------------------------------------------------------------------------

    def send(self, fields: dict[str, Any], parts: Sequence[Buffer] = ()) -> None:
        for data, buffers in split_message(fields, parts, self.chunk_size):
            self.comm.send(data=data, buffers=buffers)

    def on_msg(self, msg: dict[str, Any]) -> None:
        _repair()
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
        if op == Op.CHUNK:
            self.assembler.add_chunk(data, buffers[0])
            return
        for call_id in data.get("ack", ()):
            self.kept.pop(call_id, None)
        try:
            parts = self.assembler.finish(data, buffers)
        except ValueError as exc:
            self.send(
                {"op": Op.RESULT, "id": data.get("id"), "status": Status.LOST, "evalue": str(exc)}
            )
            return
        handler = self.operations.get(str(op))
        if handler is None:
            self.send({"op": Op.ERROR, "id": data.get("id"), "evalue": f"unknown op {op!r}"})
            return
        handler(data, parts)

    # -- operations ------------------------------------------------------------------------

    def op_info(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        self.send({"op": Op.INFO, "id": data["id"], "gpus": _gpu_info(), "tpus": _tpu_info()})

    def op_ack(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        """Acknowledgements ride on every message; this op exists to send them alone."""

    def op_free(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        """Forget kept objects whose refs the client dropped; no answer (like ``ack``)."""
        forget_kept(data.get("keys", ()), str(data.get("identity")))

    def op_resume(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        self.aborting = False
        self.send({"op": Op.RESUMED, "id": data["id"]})

    def op_fetch(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        for call_id in data.get("ids", ()):
            kept = self.kept.get(call_id)
            if kept is None:
                self.send({"op": Op.RESULT, "id": call_id, "status": Status.UNKNOWN})
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
            self.functions.clear()  # they hold the old modules: the client sends them again
        importlib.invalidate_caches()
        self.send({"op": Op.SOURCES, "id": data["id"], "count": len(parts)})

    def op_call(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        """Run the function once per item, in order; reply with one outcome per item."""
        call_id = data["id"]
        if self.aborting:
            self._reply(call_id, Status.ABORTED, None, 0.0)
            return
        if str(data["fn"]) not in self.functions and not data.get("fn_included"):
            self._reply(call_id, Status.NEED_FUNCTION, None, 0.0)  # evicted: the client resends it
            return
        # From here on the call may run: until its real outcome replaces this, a ``fetch`` says
        # so, and the client never sends it again.
        self.kept[call_id] = _Outcome(
            {
                "op": Op.RESULT,
                "id": call_id,
                "status": Status.NO_OUTCOME,
                "evalue": "the agent stopped before it could send the outcome",
            },
            [],
        )
        if data.get("stream") is not None:
            self._stream_step(call_id, data, parts)
            return
        started = time.perf_counter()
        pump = _OutputPump(self.send, call_id, self.chunk_size)
        with _capturing_output(pump, self.display_publisher):
            status, outcomes = self._run_call(data, parts)
        self._reply(call_id, status, outcomes, started, output=(pump.messages, pump.bytes))

    # -- generators (see streams.py) --------------------------------------------------------

    def op_next(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        """Run a kept generator for one more step."""
        call_id = data["id"]
        if self.aborting:
            self._reply(call_id, Status.ABORTED, None, 0.0)
            return
        self._starting(call_id)
        self._stream_step(call_id, data, None)

    def op_close_stream(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        """Close a kept generator: its ``finally`` runs, with output like a call's."""
        call_id = data["id"]
        if self.aborting:
            self._reply(call_id, Status.ABORTED, None, 0.0)
            return
        self._starting(call_id)
        started = time.perf_counter()
        state = self.streams.pop(str(data["stream"]), None)
        outcome: tuple[str, Any] = (ItemStatus.OK, None)
        pump = _OutputPump(self.send, call_id, self.chunk_size)
        with _capturing_output(pump, self.display_publisher), self._noting_interrupts():
            try:
                if state is not None:
                    state.close()
            except BaseException as exc:  # noqa: BLE001 - the finally's error goes to the client
                outcome = (ItemStatus.ERROR, exception_payload(exc))
        self._reply(call_id, Status.OK, [outcome], started, output=(pump.messages, pump.bytes))

    def op_replay(self, data: dict[str, Any], parts: list[memoryview]) -> None:
        """Send a generator's kept values again (a dropped connection lost them on the way)."""
        state = self.streams.get(str(data["stream"]))
        layout, kept = state.replay(int(data.get("start", 0))) if state else ([], [])
        self.send({"op": Op.REPLAY, "id": data["id"], "items": layout}, kept)

    def _starting(self, call_id: str) -> None:
        """From here on the message may run user code: a ``fetch`` must never say it did not."""
        self.kept[call_id] = _Outcome(
            {
                "op": Op.RESULT,
                "id": call_id,
                "status": Status.NO_OUTCOME,
                "evalue": "the agent stopped before it could send the outcome",
            },
            [],
        )

    def _stream_step(
        self, call_id: str, data: dict[str, Any], parts: list[memoryview] | None
    ) -> None:
        """Open the generator (``parts``: a ``call``'s) or take the kept one, run it for one
        step, and reply with how many values the step sent and whether the generator is done."""
        started = time.perf_counter()
        stream_id = str(data["stream"])
        pump = _StreamPump(self.send, call_id, self.chunk_size)
        status: str = Status.OK
        outcomes: list[tuple[str, Any]] | None = None
        first = count = 0
        done = True
        with _capturing_output(pump, self.display_publisher):
            state = self.streams.get(stream_id)
            if parts is not None:
                status, outcomes, state = self._open_generator(stream_id, data, parts)
            elif state is None:
                outcomes = [
                    (
                        ItemStatus.ERROR,
                        exception_payload(
                            LookupError("this generator is no longer in the kernel (it was closed)")
                        ),
                    )
                ]
            if state is not None:
                state.confirm(int(data.get("have", 0)))
                first = state.produced
                status = self._run_step(call_id, state, data, pump, started)
                count, done = state.produced - first, state.done
        extra = {"first": first, "count": count, "done": done}
        self._reply(
            call_id, status, outcomes, started, output=(pump.messages, pump.bytes), extra=extra
        )

    def _open_generator(
        self, stream_id: str, data: dict[str, Any], parts: list[memoryview]
    ) -> tuple[str, list[tuple[str, Any]] | None, GeneratorState | None]:
        status, outcomes = self._run_call(data, parts)
        if status != Status.OK or outcomes[0][0] != ItemStatus.OK:
            return status, outcomes, None
        try:
            state = GeneratorState(outcomes[0][1])
        except TypeError as exc:
            return Status.OK, [(ItemStatus.ERROR, exception_payload(exc))], None
        self.streams[stream_id] = state
        return Status.OK, None, state

    def _run_step(
        self,
        call_id: str,
        state: GeneratorState,
        data: dict[str, Any],
        pump: _StreamPump,
        started: float,
    ) -> str:
        """Produce values until the step's bounds, each sent the moment it is produced (after
        the output written before it): the status of the step."""
        most = max(1, min(int(data.get("max_items", STREAM_STEP_ITEMS)), STREAM_STEP_ITEMS))
        size = 0
        sent = 0
        status: str = Status.OK
        with self._noting_interrupts():
            while not state.done:
                try:
                    value = state.advance()
                    if value is GENERATOR_DONE:
                        break
                    outcome: tuple[str, Any] = (ItemStatus.OK, value)
                except KeyboardInterrupt as exc:
                    if self.signalled:
                        # The client stopped it (a timeout, Ctrl-C): the step's status says so.
                        self.aborting = True
                        status = Status.INTERRUPTED
                        break
                    outcome = (ItemStatus.ERROR, exception_payload(exc))
                except BaseException as exc:  # noqa: BLE001 - raised at that point in the client
                    outcome = (ItemStatus.ERROR, exception_payload(exc))
                size += self._send_item(state, outcome, pump)
                sent += 1
                if (
                    sent >= most
                    or size >= STREAM_STEP_BYTES
                    or time.perf_counter() - started >= STREAM_STEP_SECONDS
                ):
                    break
        return status

    def _send_item(self, state: GeneratorState, outcome: tuple[str, Any], pump: _StreamPump) -> int:
        """Send one value (kept for a replay until confirmed); its size in bytes."""
        try:
            item_parts = dumps([outcome])
        except BaseException:  # noqa: BLE001 - it goes as the error that it cannot travel
            item_parts = dumps([_picklable_outcome(outcome)])
        pump.value(state.keep(item_parts), item_parts)
        return sum(part.nbytes for part in item_parts)

    def _run_call(
        self, data: dict[str, Any], parts: list[memoryview]
    ) -> tuple[str, list[tuple[str, Any]]]:
        """Load the function and run it on each item: the status and one outcome per item."""
        try:
            fn = self._function(data, parts)
            items = loads(parts[1 if data.get("fn_included") else 0 :])
        except BaseException as exc:  # noqa: BLE001 - reported to the client, never swallowed
            return Status.SETUP_ERROR, [(ItemStatus.ERROR, exception_payload(exc))]
        status: str = Status.OK
        outcomes: list[tuple[str, Any]] = []
        with self._noting_interrupts():
            for args, kwargs in items:
                try:
                    outcomes.append((ItemStatus.OK, fn(*args, **kwargs)))
                except KeyboardInterrupt as exc:
                    if not self.signalled:
                        # The function raised it itself: an exception like any other.
                        outcomes.append((ItemStatus.ERROR, exception_payload(exc)))
                        continue
                    # The client interrupted us: all it queued before saying "resume" is stale.
                    self.aborting = True
                    outcomes.append((ItemStatus.INTERRUPTED, exception_payload(exc)))
                    status = Status.INTERRUPTED
                    break
                except BaseException as exc:  # noqa: BLE001 - SystemExit too: it is the caller's
                    outcomes.append((ItemStatus.ERROR, exception_payload(exc)))
        return status, outcomes

    @contextlib.contextmanager
    def _noting_interrupts(self) -> Iterator[None]:
        """While a call runs, SIGINT is noted before it raises KeyboardInterrupt, so that an
        interrupt is told apart from a KeyboardInterrupt the function raises itself."""
        self.signalled = False
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread gets signals (and may set their handlers)
            return

        def interrupted(signum: int, frame: Any) -> None:
            self.signalled = True
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, interrupted)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

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
        self,
        call_id: str,
        status: str,
        outcomes: list[tuple[str, Any]] | None,
        started: float,
        output: tuple[int, int] = (0, 0),
        extra: dict[str, Any] | None = None,
    ) -> None:
        for stream in (sys.stdout, sys.stderr):
            # Output that went the kernel's own way (written to a file descriptor, or by code
            # that kept the stream object) arrives before the result; a broken stream must not
            # lose the result.
            with contextlib.suppress(Exception):
                stream.flush()
        fields: dict[str, Any] = {"op": Op.RESULT, "id": call_id, "status": status}
        fields["seconds"] = time.perf_counter() - started if started else 0.0
        fields["output"] = list(output)  # what was sent ahead: the client checks it all came
        fields.update(extra or {})
        parts = pack_outcomes(outcomes, fields) if outcomes is not None else []
        self.kept[call_id] = _Outcome(fields, parts)
        try:
            self.send(fields, parts)
        except BaseException as exc:  # noqa: BLE001 - the client's fetch gets the reason
            failed = f"the outcome could not be sent ({type(exc).__name__}: {_safe_str(exc)})"
            no_outcome = {**fields, "status": Status.NO_OUTCOME, "evalue": failed}
            self.kept[call_id] = _Outcome(no_outcome, [])


def pack_outcomes(outcomes: list[tuple[str, Any]], fields: dict[str, Any]) -> list[memoryview]:
    """A result's outcomes pickled; an item that cannot be pickled becomes its error. When even
    that fails (user code broke the agent's own pickling), ``fields`` say so and nothing goes."""
    try:
        try:
            return dumps(outcomes)
        except BaseException:  # noqa: BLE001 - find the items that cannot travel
            return dumps([_picklable_outcome(outcome) for outcome in outcomes])
    except BaseException as exc:  # noqa: BLE001 - user code broke the agent's own pickling
        fields["status"] = Status.NO_OUTCOME
        fields["evalue"] = (
            f"the outcome could not be packed ({type(exc).__name__}: {_safe_str(exc)})"
        )
        return []


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
        error["evalue"] = (
            f"the result ({type(outcome[1]).__name__}) cannot be pickled: {_safe_str(exc)}"
        )
        return (ItemStatus.ERROR, error)
    return outcome


_AGENTS: dict[str, Agent] = {}
#: The agent's top-level names and module as installed: user code that deletes or replaces them
#: (``del sys.modules["_colabremote_agent"]``, a patched helper) is undone before each message.
_PRISTINE: dict[str, Any] = {}
_HOME: list[types.ModuleType] = []


def _repair() -> None:
    namespace = globals()
    for name, value in _PRISTINE.items():
        if namespace.get(name) is not value:
            namespace[name] = value
    if _HOME and AGENT_MODULE not in sys.modules:
        # Only when missing: a newer agent installed by another client owns the name then.
        sys.modules[AGENT_MODULE] = _HOME[0]


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
        "kept_identity": kernel_identity(),
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

    if not _PRISTINE:
        _PRISTINE.update(globals())
        home = sys.modules.get(__name__)
        if __name__ == AGENT_MODULE and home is not None:
            _HOME.append(home)
    kernel = getattr(get_ipython(), "kernel", None)
    comm = _create_comm(comm_id)
    _AGENTS[comm_id] = Agent(comm, chunk_size, kernel)

    def forget(_msg: dict[str, Any]) -> None:
        _AGENTS.pop(comm_id, None)

    comm.on_close(forget)
    _install_shim()
