"""Detached calls, kernel side: a spawned call's output, state and result go to the runtime's disk
as they happen, so another process can read them without talking to this kernel.

A spawned call runs like any call: on the kernel's main thread, inside the comm message that
brought it, so an interrupt (``call.cancel()``) stops it as Ctrl-C stops a notebook cell, and GPU
libraries see the thread they expect. While it runs the kernel is busy and answers no other
message; that is why everything a reader needs is in files, read through the Jupyter server's
Contents API (or directly, for a local kernel), never through this agent.

One folder per call under the calls folder (``colabremote-calls`` in the kernel's first working
directory, so under the Jupyter server's root, or where the client says for local kernels):

- ``meta.json``: id, function name, kernel, process id, start time; written before the call runs.
- ``log.000000``, ``log.000001``, ...: the text the call writes to ``sys.stdout``/``sys.stderr``,
  in pieces of ``LOG_SEGMENT_BYTES`` (a reader fetches only the piece it has not finished), at most
  ``LOG_LIMIT_BYTES`` in all.
- ``heartbeat``: rewritten every ``HEARTBEAT_SECONDS`` while the call runs.
- ``cancel``: written by a client to cancel the call; a thread of the agent that watches for it
  while the call runs interrupts the call (as Ctrl-C does), and only the call: once it has ended,
  the file stops nothing (an interrupt from outside could hit the next call instead).
- ``result.bin`` and ``result.json`` (the result's fields and part sizes), then ``state.json``
  (``running`` until then; ``done``, ``failed`` or ``cancelled``, with the finish time).

Before each new call, the oldest finished calls beyond ``KEEP_CALLS`` or ``KEEP_BYTES`` are
removed, and their ids noted in ``evicted.json`` so a client can say what became of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import threading
import time
from typing import Any

from ..wire import ItemStatus, Op, Status
from .loop import (
    EXTRA_OPERATIONS,
    Agent,
    _capturing_output,
    _Outcome,
    _OutputPump,
    exception_payload,
    pack_outcomes,
)

#: The calls folder's name, and the environment variable that remembers where it is in a kernel.
CALLS_DIR_NAME = "colabremote-calls"
CALLS_DIR_ENV = "COLABREMOTE_CALLS_DIR"
#: A call's log is kept in files of this size: a reader re-reads at most one of them.
LOG_SEGMENT_BYTES = 256 * 1024
#: The most output one call keeps; beyond it a note says what was left out.
LOG_LIMIT_BYTES = 64 * 1024 * 1024
#: Finished calls kept on disk; the oldest beyond either limit are evicted when a call starts.
KEEP_CALLS = 32
KEEP_BYTES = 2 * 1024 * 1024 * 1024
#: How often a running call's ``heartbeat`` file is rewritten (the client may ask for another).
HEARTBEAT_SECONDS = 10.0
#: How often a running call's folder is looked at for a ``cancel`` file.
CANCEL_POLL_SECONDS = 0.05
#: How many evicted ids ``evicted.json`` remembers.
KEEP_EVICTED = 1000
#: A call's states as ``state.json`` says them.
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
#: Said by a later call for one whose kernel process ended while it ran.
LOST = "lost"


#: A call id: what names its runtime or kernel, then ``c-`` and 16 hex digits (its folder).
#: Ids and folder names come from files a hostile kernel may write, so nothing else is used.
CALL_ID = re.compile(r"(?P<where>[A-Za-z0-9][A-Za-z0-9._-]{0,127}):(?P<folder>c-[0-9a-f]{16})")
CALL_FOLDER = re.compile(r"c-[0-9a-f]{16}")


def call_folder_name(call_id: object) -> str:
    """The folder of a call: the part of its id after the runtime's name."""
    match = CALL_ID.fullmatch(call_id) if isinstance(call_id, str) else None
    if match is None:
        raise ValueError(f"{call_id!r} is not a detached call id")
    return match["folder"]


def calls_home(chosen: str | None = None) -> str:
    """The calls folder: ``chosen`` (a local kernel's client picks it), else the one this kernel
    process first used, else ``colabremote-calls`` in its working directory now."""
    home = chosen or os.environ.get(CALLS_DIR_ENV)
    if not home:
        home = os.path.join(os.getcwd(), CALLS_DIR_NAME)
        os.environ[CALLS_DIR_ENV] = home  # a later os.chdir in user code does not move it
    os.makedirs(home, exist_ok=True)
    return home


def _write_json(path: str, value: dict[str, Any]) -> None:
    """Replace ``path`` whole, so a reader never sees half of it."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(value, f)
    os.replace(temporary, path)


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class _LogPump(_OutputPump):
    """A call's output pump that appends to the call's log files instead of sending."""

    def __init__(self, folder: str, limit: int = LOG_LIMIT_BYTES) -> None:
        super().__init__(lambda fields, parts: None, os.path.basename(folder), LOG_SEGMENT_BYTES)
        self._folder = folder
        self._log_limit = limit
        self._full = False

    def _emit(self, streams: list[list[Any]], pieces: list[bytes], size: int) -> None:
        data = b"".join(pieces)
        self.messages += 1
        if self._full:
            return
        if self.bytes + len(data) > self._log_limit:
            note = (
                f"\n[colabremote: this call's log reached its limit of {self._log_limit} bytes; "
                "later output was not kept]\n"
            ).encode()
            data = data[: max(0, self._log_limit - self.bytes)] + note
            self._full = True
        try:
            self._append(data)
        except OSError:  # a full disk costs the rest of the log, never the call
            self._full = True

    def _append(self, data: bytes) -> None:
        while data:
            index, within = divmod(self.bytes, LOG_SEGMENT_BYTES)
            piece = data[: LOG_SEGMENT_BYTES - within]
            with open(os.path.join(self._folder, f"log.{index:06d}"), "ab") as f:
                f.write(piece)
            self.bytes += len(piece)
            data = data[len(piece) :]


class _Heartbeat:
    """Rewrites ``heartbeat`` in a call's folder every few seconds while the call runs, so a
    reader can tell a running call from one whose kernel was restarted or stopped under it (the
    kernel, and its id, may still be there)."""

    def __init__(self, folder: str, interval: float) -> None:
        self._path = os.path.join(folder, "heartbeat")
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="colabremote-heartbeat", daemon=True)

    def __enter__(self) -> None:
        self._beat(1)  # before the call starts: a reader never sees a running call without one
        self._thread.start()

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self, beat: int) -> None:
        with contextlib.suppress(OSError):
            _write_json(self._path, {"beat": beat})

    def _run(self) -> None:
        beat = 1
        while not self._stop.wait(self._interval):
            beat += 1
            self._beat(beat)


class _CancelWatch:
    """Interrupts the kernel's main thread (as Ctrl-C does) once a ``cancel`` file appears in a
    call's folder, but never after :meth:`finish`, which the call's end calls: a late cancel
    cannot reach whatever the kernel runs next."""

    def __init__(self, folder: str, poll: float = CANCEL_POLL_SECONDS) -> None:
        self._path = os.path.join(folder, "cancel")
        self._poll = poll
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="colabremote-cancel", daemon=True)

    def __enter__(self) -> _CancelWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()
        self._thread.join()

    def finish(self) -> None:
        """The call has ended: from now on a cancel does nothing."""
        with self._lock:
            self._finished.set()

    def _run(self) -> None:
        while not self._finished.wait(self._poll):
            if not os.path.exists(self._path):
                continue
            with self._lock:
                if self._finished.is_set():
                    return
                main = threading.main_thread().ident
                # Aimed at the main thread, so a sleep or a wait there wakes to it.
                if hasattr(signal, "pthread_kill") and main is not None:
                    signal.pthread_kill(main, signal.SIGINT)
                else:
                    signal.raise_signal(signal.SIGINT)
            return


def _folder_bytes(folder: str) -> int:
    total = 0
    for name in os.listdir(folder):
        try:
            total += os.path.getsize(os.path.join(folder, name))
        except OSError:
            continue
    return total


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: it exists
    return True


def evict(home: str, keep_calls: int = KEEP_CALLS, keep_bytes: int = KEEP_BYTES) -> list[str]:
    """Make room for one more call: remove the oldest finished calls beyond ``keep_calls - 1``
    calls or ``keep_bytes``; calls whose kernel process is gone are marked lost first. The ids
    removed, which ``evicted.json`` also records."""
    finished: list[tuple[float, str, str, int]] = []  # (finished, id, folder, bytes)
    for name in os.listdir(home):
        folder = os.path.join(home, name)
        if not os.path.isdir(folder):
            continue
        state = _read_json(os.path.join(folder, "state.json")) or {}
        meta = _read_json(os.path.join(folder, "meta.json")) or {}
        if state.get("state", RUNNING) == RUNNING:
            if _process_alive(meta.get("pid")):
                continue
            state = {"state": LOST, "finished": time.time()}
            _write_json(os.path.join(folder, "state.json"), state)
        ended = state.get("finished")
        finished.append(
            (
                float(ended) if isinstance(ended, (int, float)) else 0.0,
                str(meta.get("id") or name),
                folder,
                _folder_bytes(folder),
            )
        )
    finished.sort()
    total = sum(entry[3] for entry in finished)
    running = len([n for n in os.listdir(home) if os.path.isdir(os.path.join(home, n))])
    removed: list[str] = []
    for _ended, call_id, folder, size in finished:
        if running - len(removed) < keep_calls and total <= keep_bytes:
            break
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(call_id)
        total -= size
    if removed:
        record = os.path.join(home, "evicted.json")
        known = (_read_json(record) or {}).get("ids")
        ids = [*(known if isinstance(known, list) else []), *removed]
        _write_json(record, {"ids": ids[-KEEP_EVICTED:]})
    return removed


def _state_of(status: str, outcomes: list[tuple[str, Any]]) -> str:
    if status == Status.INTERRUPTED:
        return CANCELLED
    if status == Status.OK and outcomes and outcomes[0][0] == ItemStatus.OK:
        return DONE
    return FAILED


def _error_line(outcomes: list[tuple[str, Any]]) -> str | None:
    """``Type: message`` of a failed call, for listings (the full exception is in the result)."""
    if not outcomes or outcomes[0][0] == ItemStatus.OK:
        return None
    payload = outcomes[0][1]
    if not isinstance(payload, dict):
        return None
    return f"{payload.get('etype', '?')}: {payload.get('evalue', '')}"[:500]


def _write_result(
    folder: str, call_id: str, status: str, outcomes: list[tuple[str, Any]], seconds: float
) -> None:
    """The outcome as the client unpacks a call's result: ``result.json`` and ``result.bin``."""
    fields: dict[str, Any] = {"op": Op.RESULT, "id": call_id, "status": status}
    fields["seconds"] = seconds
    parts = pack_outcomes(outcomes, fields)
    fields["parts"] = [part.nbytes for part in parts]
    # Written aside, then renamed: a reader never sees half a result, even one of a call that
    # the kernel's death interrupted while it was being written.
    path = os.path.join(folder, "result.bin")
    try:
        with open(f"{path}.tmp", "wb") as f:
            for part in parts:
                f.write(part)
        os.replace(f"{path}.tmp", path)
    except OSError as exc:  # a full disk: the call still ends, saying why it has no result
        fields.update(status=Status.NO_OUTCOME, parts=[])
        fields["evalue"] = f"the result could not be written to the runtime's disk ({exc})"
        with contextlib.suppress(OSError):
            os.unlink(f"{path}.tmp")
    _write_json(os.path.join(folder, "result.json"), fields)


def op_spawn(agent: Agent, data: dict[str, Any], parts: list[memoryview]) -> None:
    """Run a detached call: as ``call`` does, but with its output, state and result on disk."""
    call_id = str(data["id"])
    if agent.aborting:
        agent._reply(call_id, Status.ABORTED, None, 0.0)
        return
    if str(data["fn"]) not in agent.functions and not data.get("fn_included"):
        agent._reply(call_id, Status.NEED_FUNCTION, None, 0.0)
        return
    agent.kept[call_id] = _Outcome(
        {
            "op": Op.RESULT,
            "id": call_id,
            "status": Status.NO_OUTCOME,
            "evalue": "the agent stopped before the detached call ended",
        },
        [],
    )
    home = calls_home(data.get("home"))
    evict(home)
    folder = os.path.join(home, call_folder_name(call_id))
    os.makedirs(folder, exist_ok=True)
    wall = time.time()
    meta = {
        "id": call_id,
        "name": str(data.get("name") or "?"),
        "kernel": data.get("kernel"),
        "pid": os.getpid(),
        "started": wall,
    }
    _write_json(os.path.join(folder, "meta.json"), meta)
    _write_json(os.path.join(folder, "state.json"), {"state": RUNNING})
    started = time.perf_counter()
    pump = _LogPump(folder)
    heartbeat = _Heartbeat(folder, float(data.get("heartbeat") or HEARTBEAT_SECONDS))
    try:
        with heartbeat, _CancelWatch(folder) as watch:
            with _capturing_output(pump, agent.display_publisher):
                status, outcomes = agent._run_call(data, parts)
            watch.finish()
    except KeyboardInterrupt as exc:
        # A cancel that came as the call ended, once its function had returned: it still counts
        # (the function's value is gone with the agent's frame it was in).
        status, outcomes = Status.INTERRUPTED, [(ItemStatus.INTERRUPTED, exception_payload(exc))]
    # An interrupt during a detached call is its cancel, meant for it alone: the calls queued
    # behind it run (their clients may be gone, and could not send them again).
    agent.aborting = False
    seconds = time.perf_counter() - started
    _write_result(folder, call_id, status, outcomes, seconds)
    state = _state_of(status, outcomes)
    _write_json(
        os.path.join(folder, "state.json"),
        {
            "state": state,
            "finished": time.time(),
            "log_bytes": pump.bytes,
            "error": _error_line(outcomes) if state == FAILED else None,
        },
    )
    # The spawning client learns only that it ended; the outcome is read from disk.
    agent._reply(call_id, status, None, started)


EXTRA_OPERATIONS[Op.SPAWN] = op_spawn
