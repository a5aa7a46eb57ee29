"""Detached calls, client side: ``f.spawn(...)``, ``s.call(id)``, ``s.calls()``.

A spawned call goes to the kernel like any call (through the session's call queue, so later
calls on the same session wait behind it and their time-outs do not start meanwhile), but the
agent writes its output, state and result to the runtime's disk (``agent/detached.py``).
Everything here reads those files through the Jupyter server (``files.py``), never through the
kernel, which is busy while the call runs: so logs, status and cancel work while it runs, from
any process, and the call does not need this one.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import secrets
import sys
import warnings
import weakref
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .._backends.colab import ColabBackend
from .._backends.jupyter import JupyterBackend
from .._backends.local import LocalBackend
from .._kernel.agent.detached import (
    CALL_ID,
    CANCELLED,
    DONE,
    FAILED,
    LOG_SEGMENT_BYTES,
    LOST,
    RUNNING,
    call_folder_name,
)
from .._kernel.calls import Call, Interrupts
from .._kernel.client import KernelClient
from .._kernel.wire import Op, Status
from .._serialization import KernelTarget, pack_arguments, pack_function, unpack_outcomes
from .._session.core import INTERRUPT_GRACE, Item, State, _Core, _silent, outcome_value
from ..exceptions import (
    CallCancelled,
    CallEvicted,
    CallFilesInvalid,
    CallNotFound,
    CallStillRunning,
    ConfigurationError,
    DetachedCallsWarning,
    KernelDied,
    ResultNotSerializable,
    RuntimeGone,
    SessionClosed,
)
from .files import CallFiles, LocalFiles, files_for
from .public import QUEUED, CallStatus

#: Waiting for a state: the first pause, and the longest (the pause doubles in between).
POLL_FIRST = 0.05
POLL_LONGEST = 1.0
#: A running call's kernel is checked for life at most this often while waiting.
KERNEL_CHECK_SECONDS = 5.0
#: What a spawned call's heartbeat period is, and how long the heartbeat may stand still (as
#: seen here, so clocks need not agree) before a call its kernel no longer runs is ``lost``:
#: generous, since a C extension holding the GIL delays the beat.
HEARTBEAT_SECONDS = 10.0
HEARTBEAT_STALE_SECONDS = 300.0
#: How long ``cancel()`` waits for the call's agent to act on its cancel file before it
#: interrupts the kernel instead.
CANCEL_FILE_SECONDS = 2.0
#: States after which nothing more is written to a call's folder.
ENDED = frozenset({DONE, FAILED, CANCELLED, LOST})


#: The most of a text from a call's files (its name, error line) shown here.
TEXT_LIMIT = 500


def _time(value: Any) -> datetime | None:
    """A time from a call's files, if it is one (they may come from a hostile kernel)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        with contextlib.suppress(OverflowError, OSError, ValueError):
            return datetime.fromtimestamp(value, tz=timezone.utc)
    return None


def _text(value: Any) -> str | None:
    """A text from a call's files, if it is one, cut to ``TEXT_LIMIT`` characters, on one line
    and without control characters (it is printed, and a terminal obeys escape sequences)."""
    if not isinstance(value, str) or not value:
        return None
    return "".join(c if c.isprintable() else " " for c in value[:TEXT_LIMIT])


def _part_sizes(fields: dict[str, Any], total: int) -> list[int] | None:
    """The sizes of a result's parts, if they are sizes that add up to ``total``."""
    sizes = fields.get("parts")
    if not isinstance(sizes, list):
        return None
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes):
        return None
    return sizes if sum(sizes) == total else None


@dataclass
class _Spawned:
    """The detached calls one session spawned whose end it has not seen (so ``close()`` knows
    whether their kernel must stay)."""

    running: dict[str, str] = field(default_factory=dict)  # id -> function name
    waiters: set[asyncio.Task[None]] = field(default_factory=set)
    #: Calls whose kernel died under them, as this session saw: lost, whatever the disk says.
    lost: set[str] = field(default_factory=set)


_spawned: weakref.WeakKeyDictionary[_Core, _Spawned] = weakref.WeakKeyDictionary()


def _spawned_of(core: _Core) -> _Spawned:
    """The session's record of its detached calls; made with the hook its close runs."""
    spawned = _spawned.get(core)
    if spawned is None:
        spawned = _spawned[core] = _Spawned()
        core.close_hooks.append(lambda: _before_close(core))
    return spawned


class DetachedCall:
    """One detached call, on colabremote's private loop: what RemoteCall and AsyncRemoteCall
    ask of it."""

    def __init__(self, core: _Core, files: CallFiles, call_id: str, name: str) -> None:
        self.core = core
        self.files = files
        self.id = call_id
        self.name = name
        self._folder = call_folder_name(call_id)
        self._kernel_checked = 0.0
        self._beat: tuple[Any, float] | None = None  # the last heartbeat seen, and since when

    def _check_open(self) -> None:
        """A closed session reads nothing more: its connection to the runtime is gone."""
        if self.core.state is State.CLOSED:
            raise SessionClosed(
                f"the session of detached call {self.id} ({self.name}) was closed; the call "
                f"itself is not affected: attach from an open session with s.call({self.id!r})"
            )

    def _spawned_here(self) -> bool:
        spawned = _spawned.get(self.core)
        return spawned is not None and self.id in spawned.running

    def _seen_lost(self) -> bool:
        spawned = _spawned.get(self.core)
        return spawned is not None and self.id in spawned.lost

    async def status(self, *, check_kernel: bool = True) -> CallStatus:
        """The call's state from its files (``lost`` when its kernel is gone while it runs)."""
        self._check_open()
        # Asked first: a call of ours may start and end while its files are read.
        queued = self._spawned_here()
        meta = await self.files.read_json(self._folder, "meta.json")
        if meta is None:
            if self.id in await self.files.evicted():
                raise CallEvicted(
                    f"detached call {self.id} was removed from the runtime to keep its disk "
                    "bounded (the oldest finished calls go first); its output and result are "
                    "gone"
                )
            if self._seen_lost():
                return CallStatus(self.id, self.name, LOST)  # its kernel died before it began
            if queued:
                return CallStatus(self.id, self.name, QUEUED)
            raise CallNotFound(
                f"no detached call {self.id} on this runtime; check the id (`colabremote calls` "
                "lists them) and that the session reaches the runtime the id names"
            )
        self.name = _text(meta.get("name")) or self.name
        state = await self.files.read_json(self._folder, "state.json") or {"state": RUNNING}
        name = _text(state.get("state")) or RUNNING
        if name == RUNNING and self._seen_lost():
            name = LOST
        elif name == RUNNING and check_kernel and not await self._runs(meta.get("kernel")):
            # It may have ended meanwhile: the state is final before the kernel lets go of it.
            state = await self.files.read_json(self._folder, "state.json") or {"state": LOST}
            name = LOST if state.get("state") == RUNNING else _text(state.get("state")) or LOST
        return CallStatus(
            self.id,
            self.name,
            name,
            started=_time(meta.get("started")),
            finished=_time(state.get("finished")),
            error=_text(state.get("error")),
        )

    async def _runs(self, kernel: str | None) -> bool:
        """Whether the call's kernel still runs it: the kernel is there, and the call's
        heartbeat has moved within ``HEARTBEAT_STALE_SECONDS`` (a restarted kernel keeps its
        id, and a call's state then stays "running" on disk)."""
        if not await self.files.kernel_alive(kernel):
            return False
        now = asyncio.get_running_loop().time()
        beat = (await self.files.read_json(self._folder, "heartbeat") or {}).get("beat")
        if self._beat is None or self._beat[0] != beat:
            self._beat = (beat, now)
            return True
        return now - self._beat[1] < HEARTBEAT_STALE_SECONDS

    async def _read_log(self, offset: int) -> tuple[bytes, int]:
        """The log's bytes from ``offset`` on, and the offset after them."""
        chunks: list[bytes] = []
        while True:
            index, within = divmod(offset, LOG_SEGMENT_BYTES)
            # The agent writes at most a segment to each file: more is not its writing.
            data = await self.files.read(self._folder, f"log.{index:06d}", LOG_SEGMENT_BYTES)
            if data is None or len(data) <= within:
                break
            chunks.append(data[within:])
            offset += len(data) - within
            if len(data) < LOG_SEGMENT_BYTES:
                break
        return b"".join(chunks), offset

    async def logs(self) -> str:
        """All the output so far."""
        await self.status(check_kernel=False)  # an unknown or evicted id says so
        data, _offset = await self._read_log(0)
        return codecs.getincrementaldecoder("utf-8")("replace").decode(data)

    async def follow(self) -> AsyncGenerator[str, None]:
        """The output from the start, then live, each piece once, until the call ends."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        offset = 0
        pause = POLL_FIRST
        while True:
            # The state first: once it says ended, the whole log is on disk.
            status = await self._poll_status()
            data, offset = await self._read_log(offset)
            text = decoder.decode(data, final=status.state in ENDED)
            if text:
                yield text
                pause = POLL_FIRST
            if status.state in ENDED:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_LONGEST)

    async def _poll_status(self) -> CallStatus:
        """The status, checking the kernel's life only every few seconds."""
        now = asyncio.get_running_loop().time()
        check = now - self._kernel_checked >= KERNEL_CHECK_SECONDS
        if check:
            self._kernel_checked = now
        return await self.status(check_kernel=check)

    async def wait(self, timeout: float | None) -> CallStatus:
        """The status once the call has ended; CallStillRunning after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = POLL_FIRST
        while True:
            status = await self._poll_status()
            if status.state in ENDED:
                return status
            if deadline is not None and loop.time() >= deadline:
                raise CallStillRunning(
                    f"detached call {self.id} ({self.name}) is still {status.state} after "
                    f"{timeout:g} s; it keeps running: call result() again later"
                )
            wait = pause if deadline is None else min(pause, max(0.0, deadline - loop.time()))
            await asyncio.sleep(wait)
            pause = min(pause * 2, POLL_LONGEST)

    async def result(self, timeout: float | None) -> Any:
        """The call's value once it has ended, or what it raised, raised here."""
        status = await self.wait(timeout)
        if status.state == CANCELLED:
            raise CallCancelled(f"detached call {self.id} ({self.name}) was cancelled")
        if status.state == LOST:
            raise KernelDied(
                f"the kernel running detached call {self.id} ({self.name}) ended before the "
                "call did (it died, was restarted or shut down); the call has no result"
            )
        fields = await self.files.read_json(self._folder, "result.json")
        data = await self.files.read(self._folder, "result.bin")
        if fields is None or data is None:
            raise ResultNotSerializable(
                f"detached call {self.id} ({self.name}) ended but left no result on the runtime"
            )
        if fields.get("status") == Status.NO_OUTCOME:
            raise ResultNotSerializable(
                f"{self.name} ran on the kernel, but its outcome could not be kept: "
                f"{_text(fields.get('evalue')) or 'no reason given'}"
            )
        sizes = _part_sizes(fields, len(data))
        if sizes is None:
            raise CallFilesInvalid(
                f"the result of detached call {self.id} ({self.name}) on the runtime is "
                "malformed (its parts do not add up to result.bin), so it was not unpacked"
            )
        parts: list[memoryview] = []
        view = memoryview(data)
        start = 0
        for size in sizes:
            parts.append(view[start : start + size])
            start += size
        outcomes = unpack_outcomes(parts, trusted=self.core.trust_kernel) if parts else []
        if not outcomes:
            raise ResultNotSerializable(f"detached call {self.id} ({self.name}) has no outcome")
        outcomes = self.core.modules.explain_missing(outcomes)
        return outcome_value(outcomes[0], self.name)

    async def cancel(self) -> CallStatus:
        """Interrupt the call if it runs, and wait (a while) for it to stop; its status then."""
        status = await self.status()
        if status.state == QUEUED:
            raise ConfigurationError(
                f"detached call {self.id} has not started: its kernel is still busy with an "
                "earlier call. Cancel it once status() says running"
            )
        if status.state != RUNNING:
            return status
        # Through the call's agent, which interrupts the call only while it runs: an interrupt
        # of the kernel could reach whatever runs next, if the call ends meanwhile.
        await self.files.request_cancel(self._folder)
        with contextlib.suppress(CallStillRunning):
            return await self.wait(CANCEL_FILE_SECONDS)
        # The agent did not act (one from before cancel files, or code holding the GIL): the
        # kernel's own interrupt, as Ctrl-C in a notebook, for a call that still runs.
        meta = await self.files.read_json(self._folder, "meta.json") or {}
        await self.files.interrupt(meta.get("kernel"))
        with contextlib.suppress(CallStillRunning):
            return await self.wait(INTERRUPT_GRACE - CANCEL_FILE_SECONDS)
        return await self.status()


# -- spawning ------------------------------------------------------------------------------


def _where(core: _Core) -> str:
    """The first part of a call id: what names the call's runtime or kernel."""
    backend = core.backend
    if isinstance(backend, ColabBackend) and backend.endpoint:
        return backend.endpoint
    if isinstance(backend, JupyterBackend) and backend.kernel_id:
        return backend.kernel_id
    return f"local-{os.getpid()}"


async def _nothing() -> None:
    """An interrupt that does nothing: a detached call is never stopped for its client."""


async def _watch_end(
    client: KernelClient, call: Call, spawned: _Spawned, call_id: str, item: Item
) -> None:
    """Wait for the agent's word that the call ended (resending it if the kernel says it never
    ran); a connection or session that ends first leaves the call running. ``item``, the
    call's arguments, is held until then: refs among them are not freed while a resent call
    may still need them on the kernel."""
    interrupts = Interrupts(_nothing, _nothing, _silent, 0.0)
    try:
        await client.calls.result(call, timeout=None, interrupts=interrupts)
    except KernelDied:
        # The call died with its kernel (which the server may restart under the same id, with
        # the call's state still "running" on disk): nothing there to keep the kernel for.
        spawned.lost.add(call_id)
    except Exception:  # noqa: BLE001 - this client went; the call runs on
        return
    spawned.running.pop(call_id, None)


async def spawn(core: _Core, fn: Callable[..., Any], item: Item, name: str) -> DetachedCall:
    """Start ``fn`` on the kernel as a detached call; returns once the call has been sent."""
    client = await core.ready_client()
    files = files_for(core.backend)
    python = client.kernel_python or sys.version_info[:3]
    reached: set[str] = set()
    # Refs and remote instances among the arguments travel as keys, checked against this kernel.
    target = KernelTarget(core, client.hello.get("kept_identity"))
    function = pack_function(fn, kernel_python=python, reached=reached, kernel=target)
    arguments = pack_arguments([item], kernel_python=python, reached=reached, kernel=target)
    sources = core.modules.pending(reached)
    call_id = f"{_where(core)}:c-{secrets.token_hex(8)}"
    extra = {
        "op": Op.SPAWN,
        "id": call_id,
        "name": name,
        "kernel": getattr(core.backend, "kernel_id", None),
        "home": files.home,
        "heartbeat": HEARTBEAT_SECONDS,
    }
    spawned = _spawned_of(core)
    # Nothing is awaited between here and the call's sending, so calls keep their order.
    shipped = core._ship(client, sources) if sources else None
    call = client.calls.submit(name, function.key, function.parts, arguments, fields=extra)
    spawned.running[call_id] = name
    waiter = asyncio.get_running_loop().create_task(
        _watch_end(client, call, spawned, call_id, item)
    )
    spawned.waiters.add(waiter)
    waiter.add_done_callback(spawned.waiters.discard)
    if shipped is not None:
        # Answered only when the kernel is free; a failed import shows in the call's result.
        shipped.add_done_callback(lambda f: f.cancelled() or f.exception())
    # Messages go out in order: once this one has gone, the call has too.
    await client.agent_request({"op": Op.ACK}, expect_reply=False)
    return DetachedCall(core, files, call_id, name)


async def attach(core: _Core, call_id: str) -> DetachedCall:
    """A detached call on the session's runtime, by id (another process's, or this one's)."""
    if not isinstance(call_id, str) or ":" not in call_id:
        raise ConfigurationError(
            f"{call_id!r} is not a detached call id; ids look like 'RUNTIME:c-0123456789abcdef' "
            "(call.id, or `colabremote calls` lists them)"
        )
    where = call_id.rsplit(":", 1)[0]
    try:
        call_folder_name(call_id)
    except ValueError:
        raise ConfigurationError(f"{call_id!r} is not a detached call id") from None
    backend = core.backend
    if isinstance(backend, LocalBackend) and where != f"local-{os.getpid()}":
        raise ConfigurationError(
            f"detached call {call_id} is not from this process: a local kernel ends with the "
            "process that started it, so its calls cannot be attached from another one. Spawn "
            "on a runtime that outlives the process (a Jupyter server, Colab, or a ColabEmulator "
            "reached with backend='colab')"
        )
    if isinstance(backend, ColabBackend):
        if backend.endpoint is None:
            raise ConfigurationError(
                f"detached call {call_id} runs on Colab runtime {where}: attach with "
                f"Session(backend='colab', endpoint={where!r})"
            )
        if backend.endpoint != where:
            raise ConfigurationError(
                f"detached call {call_id} runs on Colab runtime {where}, not on this session's "
                f"{backend.endpoint}: attach with Session(backend='colab', endpoint={where!r})"
            )
    try:
        if core.state is State.NEW:
            await core.open(connect=False)
        if backend.gone is not None:
            raise backend.gone
        _spawned_of(core)  # its close removes what a local kernel's calls left
        call = DetachedCall(core, files_for(backend), call_id, "?")
        await call.status(check_kernel=False)
    except RuntimeGone as gone:
        raise RuntimeGone(
            f"detached call {call_id} ran on Colab runtime {where}, which is gone ({gone}). "
            "Colab reclaims a runtime that nothing keeps alive (`colabremote keep-alive "
            "ENDPOINT` does); the call's output and result went with it"
        ) from None
    return call


async def list_calls(core: _Core) -> list[CallStatus]:
    """Every detached call on the session's runtime, oldest first."""
    if core.state is State.NEW:
        await core.open(connect=False)
    files = files_for(core.backend)
    _spawned_of(core)
    statuses = []
    for folder in await files.folders():
        try:
            meta = await files.read_json(folder, "meta.json") or {}
        except CallFilesInvalid:
            continue  # not colabremote's writing: not a call to list
        call_id = meta.get("id")
        match = CALL_ID.fullmatch(call_id) if isinstance(call_id, str) else None
        if match is None or match["folder"] != folder:
            continue  # not a call's folder, or its meta names another: nothing to trust
        call = DetachedCall(core, files, match[0], _text(meta.get("name")) or "?")
        with contextlib.suppress(CallNotFound, CallFilesInvalid):
            statuses.append(await call.status())
    statuses.sort(key=lambda s: s.started or datetime.min.replace(tzinfo=timezone.utc))
    return statuses


async def _before_close(core: _Core) -> None:
    """At close: detached calls of this session still running keep their kernel (and runtime),
    and a warning says which, and how to attach; a local kernel cannot stay."""
    spawned = _spawned.get(core)
    if spawned is None:
        return
    files = files_for(core.backend)
    try:
        await _warn_of_running(core, spawned, files)
    finally:
        if isinstance(files, LocalFiles):
            files.remove()  # its kernel ends now, and with it every call it ran


async def _warn_of_running(core: _Core, spawned: _Spawned, files: CallFiles) -> None:
    """The warning of ``_before_close``, if this session's calls still run."""
    if not spawned.running:
        return
    still: list[str] = []
    for call_id, name in list(spawned.running.items()):
        try:
            status = await DetachedCall(core, files, call_id, name).status()
        except Exception:  # noqa: BLE001 - unknown: assume it runs, and keep the kernel
            still.append(call_id)
            continue
        if status.running:
            still.append(call_id)
    if not still:
        return
    ids = ", ".join(still)
    backend = core.backend
    if backend.keep_kernel():
        if isinstance(backend, ColabBackend):
            how = (
                f"Colab runtime {backend.endpoint} stays assigned (and billed) for them; attach "
                f"with Session(backend='colab', endpoint={backend.endpoint!r}).call(ID) or "
                "`colabremote logs ID --follow`, and release it when done: `colabremote "
                f"runtimes release {backend.endpoint}`"
            )
        else:
            how = (
                f"kernel {getattr(backend, 'kernel_id', '?')} stays running for them (shut it "
                "down when done); attach with Session(backend='jupyter', url=..., "
                "token=...).call(ID), a session on the same server"
            )
        message = f"the session closed with detached calls running ({ids}): {how}"
    else:
        message = (
            f"the session closed with detached calls running ({ids}); the {backend.name} "
            "backend's kernel ends with its session, so they end now. For calls that outlive "
            "the session, spawn on a runtime that outlives it (a Jupyter server, Colab, or a "
            "ColabEmulator reached with backend='colab')"
        )
    warnings.warn(DetachedCallsWarning(message, call_ids=tuple(still)), stacklevel=3)
