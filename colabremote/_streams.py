"""Remote generators: values as they are produced, with back-pressure and exactly-once delivery.

The generator lives in the kernel between messages (``_kernel/agent/streams.py``). The client
asks for steps, at most ``STREAM_WINDOW`` ahead of what the consumer has taken, so a slow
consumer pauses the producer. Each value arrives as its own message the moment it is produced,
in order with the generator's output; the output is written when the consumer reaches that
point, so prints and values interleave as they happened. Steps are calls (fetched, never sent
twice, across a dropped connection); values a drop lost are replayed from the kernel's copy,
kept until a later step confirms them, and delivered by index: none is lost or repeated.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from ._kernel.calls import Call
from ._kernel.client import KernelClient
from ._kernel.messages import AgentReply
from ._kernel.wire import STREAM_STEP_ITEMS, STREAM_WINDOW, ItemStatus, Op, Status
from ._loop import loop_thread, wait_future
from ._serialization import unpack_outcomes
from ._session.core import Item, Outcome, _Core, outcome_value
from ._tracebacks import debugging, trim
from .exceptions import ConfigurationError, ConnectionLost, KernelDied

__all__ = ["RemoteAsyncGenerator", "RemoteGenerator", "Stream"]

T = TypeVar("T")

log = logging.getLogger("colabremote")

#: How long a replay of lost values may take to come.
REPLAY_TIMEOUT = 60.0
#: The most values one hop to colabremote's loop hands to the consumer.
PULL_BATCH = 1024

#: What the consumer is handed: ``("output", name, text)`` or ``("value", outcome)``.
Event = tuple[Any, ...]


class Stream:
    """One remote generator, seen from here; every method runs on colabremote's loop."""

    def __init__(
        self, core: _Core, fn: Callable[..., Any], item: Item, *, name: str, timeout: float | None
    ) -> None:
        self._core = core
        self._fn = fn
        self._item: Item | None = item
        self.name = name
        self._timeout = timeout
        self._id = uuid.uuid4().hex
        self._client: KernelClient | None = None
        #: Output and values in arrival order: ("output", name, text) or ("item", index).
        self._events: deque[tuple[Any, ...]] = deque()
        self._values: dict[int, list[memoryview]] = {}
        self._have = 0  # every value before this index has arrived
        self._next = 0  # the index of the next value to hand out
        self._end: int | None = None  # how many values there are, once the generator is done
        #: Steps asked for and not answered, oldest first (a dict keeps the sending order).
        self._steps: dict[asyncio.Task[None], None] = {}
        self._unconsumed: deque[int] = deque()  # where each answered step's values end
        self._failure: BaseException | None = None
        self._changed = asyncio.Event()
        self._closed = False

    # -- what the kernel client calls (StreamSink) --------------------------------------------

    def output(self, name: str, text: str) -> None:
        self._events.append(("output", name, text))
        self._changed.set()

    def item(self, fields: dict[str, Any], parts: list[memoryview]) -> None:
        text = bytes(parts[0])
        at = 0
        rest = 1
        for name, what in fields.get("segments") or ():
            if name:
                self.output(
                    "stdout" if name == "stdout" else "stderr",
                    text[at : at + int(what)].decode("utf-8", "replace"),
                )
                at += int(what)
                continue
            for index, count in what:
                self._add(int(index), list(parts[rest : rest + int(count)]))
                rest += int(count)

    def _add_all(self, fields: dict[str, Any], parts: Sequence[memoryview]) -> None:
        """Values as the agent sends them: ``items`` is ``[index, nparts]`` each, in order."""
        start = 0
        for index, count in fields.get("items") or ():
            self._add(int(index), list(parts[start : start + int(count)]))
            start += int(count)

    def _add(self, index: int, parts: list[memoryview]) -> None:
        if index < self._have or index in self._values:
            return  # already here (a replay of what did arrive)
        self._values[index] = parts
        self._events.append(("item", index))
        while self._have in self._values:
            self._have += 1
        self._changed.set()

    # -- the consumer ---------------------------------------------------------------------

    async def pull(self) -> list[Event]:
        """The values that have arrived (at least one; none after the last), each after the
        output written before it; output that arrives while this waits is written at once."""
        if self._closed:
            return []
        try:
            while True:
                self._ask()
                batch = self._ready()
                if batch:
                    return batch
                if self._failure is not None:
                    failure, self._failure = self._failure, None
                    self._finished()
                    raise failure
                if self._end is not None and self._next >= self._end:
                    self._finished()
                    return []
                self._changed.clear()
                await self._changed.wait()
        except asyncio.CancelledError:
            # Ctrl-C or a cancelled task: stop the steps, then close the generator, before the
            # cancellation goes on (see _stop_steps).
            await self._stop_steps()
            raise

    async def _stop_steps(self) -> None:
        """Stop the steps asked for, then close the generator in the kernel.

        The steps are cancelled oldest first: the call queue stops each call in the order its
        cancellation arrives, and a later step stopped first would wait (holding the queue's
        stop lock) for the running one to end on its own. Every step is cancelled, so a
        ``next`` queued behind the interrupted one, which the kernel aborts, is not sent
        again. An interrupt that arrives between two steps leaves the generator paused at a
        ``yield``: the close that follows runs its ``finally`` all the same, before this
        returns, so the caller's KeyboardInterrupt comes after it.
        """
        steps = list(self._steps)
        for step in steps:
            step.cancel()
        await asyncio.gather(*steps, return_exceptions=True)
        if self._closed:
            return
        self._closed = True
        try:
            await self._close_remote()
        except Exception as error:  # noqa: BLE001 - the cancellation is what the caller sees
            log.debug("closing a remote generator after a cancel failed: %r", error)

    def _ready(self) -> list[Event]:
        """The arrived values, up to ``PULL_BATCH``, with the output before each; output after
        the last stays until the consumer comes back for more (when none arrived, it is
        written now: the consumer is waiting)."""
        batch: list[Event] = []
        text: list[Event] = []
        values = 0
        while self._events and values < PULL_BATCH:
            event = self._events[0]
            if event[0] == "output":
                text.append(self._events.popleft())
                continue
            if self._next not in self._values:
                break  # a value before it was lost on the way: it is being replayed
            self._events.popleft()
            batch.extend(text)
            text = []
            outcome = self._take()
            batch.append(("value", outcome))
            values += 1
            if outcome[0] != ItemStatus.OK:
                break
        if batch:
            self._events.extendleft(reversed(text))
        else:
            for event in text:
                self._write(event[1], event[2])
        return batch

    def write(self, name: str, text: str) -> None:
        """Write the generator's output where the session's output goes."""
        self._write(name, text)

    def _take(self) -> Outcome:
        parts = self._values.pop(self._next)
        self._next += 1
        while self._unconsumed and self._unconsumed[0] <= self._next:
            self._unconsumed.popleft()
        outcomes = unpack_outcomes(parts, trusted=self._core.trust_kernel)
        outcome = self._core.modules.explain_missing(outcomes)[0]
        if outcome[0] != ItemStatus.OK:
            self._end = self._next  # the generator raised: nothing comes after
            self._finished()
        return outcome

    def _write(self, name: str, text: str) -> None:
        try:
            self._core.on_output(name, text)
        except Exception:  # the user's handler must not break the stream
            log.exception("the on_output handler failed")

    def _ask(self) -> None:
        """Ask for more steps while fewer than ``STREAM_WINDOW`` are asked for or unconsumed."""
        while self._unconsumed and self._unconsumed[0] <= self._next:
            self._unconsumed.popleft()
        while (
            self._end is None
            and self._failure is None
            and len(self._steps) + len(self._unconsumed) < STREAM_WINDOW
            and (self._item is not None or self._client is not None)
        ):
            task = asyncio.get_running_loop().create_task(self._step())
            self._steps[task] = None
            task.add_done_callback(self._step_done)
            if self._client is None:
                return  # the first step opens the generator: the next ones wait for it

    def _step_done(self, task: asyncio.Task[None]) -> None:
        self._steps.pop(task, None)
        self._changed.set()  # the consumer may ask for the next step now

    async def _step(self) -> None:
        """One step: send it, take its values as they come, then its answer."""
        step_id = uuid.uuid4().hex
        fields: dict[str, Any] = {"id": step_id, "stream": self._id, "have": self._have}
        fields["max_items"] = 1 if self._timeout is not None else STREAM_STEP_ITEMS
        client = self._client
        try:
            if self._item is not None:
                item, self._item = self._item, None
                client = await self._core.ready_client()
                client.stream_sinks[step_id] = self  # before sending: values come at once
                call = await self._core.send_call(
                    client, self._fn, item, name=self.name, fields=fields
                )
                self._client = client
                self._changed.set()  # opened: the next steps may be asked for
            else:
                assert client is not None
                if client.failure is not None or client is not self._core.client:
                    raise client.failure or KernelDied(
                        f"the kernel that ran {self.name} is gone, and the generator with it"
                    )
                client.stream_sinks[step_id] = self
                call = client.calls.submit(self.name, "", (), (), fields={"op": Op.NEXT, **fields})
            await self._answer(client, call)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: BLE001 - raised to the consumer at this point
            if self._failure is None:
                self._failure = error
        finally:
            if client is not None:
                client.stream_sinks.pop(step_id, None)

    async def _answer(self, client: KernelClient, call: Call) -> None:
        interrupts = self._core.interrupts_for(client)
        reply = await client.calls.result(call, timeout=self._timeout, interrupts=interrupts)
        fields = reply.fields
        if fields.get("status") == Status.INTERRUPTED:  # by an interrupt from elsewhere
            outcome_value((ItemStatus.INTERRUPTED, None), self.name)
        if reply.parts:  # the generator could not be opened: the function's error
            outcomes = unpack_outcomes(reply.parts, trusted=self._core.trust_kernel)
            outcome_value(self._core.modules.explain_missing(outcomes)[0], self.name)
        end = int(fields.get("first", 0)) + int(fields.get("count", 0))
        if end > self._have:
            await self._replay(client)
            if end > self._have:
                raise ConnectionLost(
                    f"values of {self.name} were lost on the way here, and the kernel no "
                    "longer has them to send again"
                )
        self._unconsumed.append(end)
        if fields.get("done"):
            self._end = end

    async def _replay(self, client: KernelClient) -> None:
        """Values sent before the answer are missing (a dropped connection): ask again."""
        request = client.agent_request({"op": Op.REPLAY, "stream": self._id, "start": self._have})
        reply: AgentReply = await asyncio.wait_for(request, REPLAY_TIMEOUT)
        self._add_all(reply.fields, reply.parts)

    # -- closing --------------------------------------------------------------------------

    def _finished(self) -> None:
        """The consumer is done with it: free the generator in the kernel, without waiting."""
        if not self._closed:
            self._closed = True
            task = asyncio.get_running_loop().create_task(self._close_remote())
            task.add_done_callback(_consume)

    async def interrupt(self) -> None:
        """Ctrl-C reached the consumer: stop the running steps and close the generator."""
        await self._stop_steps()

    async def close(self) -> None:
        """Stop the generator now; its ``finally`` runs in the kernel before this returns."""
        if self._closed:
            return
        self._closed = True
        await self._close_remote()

    async def _close_remote(self) -> None:
        client = self._client
        if client is None or client.failure is not None or client is not self._core.client:
            return  # never opened, or its kernel is gone and the generator with it
        step_id = uuid.uuid4().hex
        fields = {"op": Op.CLOSE_STREAM, "id": step_id, "stream": self._id}
        client.stream_sinks[step_id] = self
        try:
            call = client.calls.submit(f"closing {self.name}", "", (), (), fields=fields)
            reply = await client.calls.result(
                call, timeout=None, interrupts=self._core.interrupts_for(client)
            )
        finally:
            client.stream_sinks.pop(step_id, None)
        for event in self._events:  # the finally's output
            if event[0] == "output":
                self._write(event[1], event[2])
        self._events.clear()
        outcomes = unpack_outcomes(reply.parts, trusted=self._core.trust_kernel)
        outcome_value(outcomes[0], self.name)


def _next_value(ready: deque[Event], stream: Stream) -> tuple[bool, Any]:
    """Write out the output in ``ready`` up to its next value: (True, that value), raising
    what the generator raised there; (False, None) when ``ready`` held no value."""
    while ready:
        event = ready.popleft()
        if event[0] != "output":
            return True, outcome_value(event[1], stream.name)
        stream.write(event[1], event[2])
    return False, None


def _consume(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("closing a remote generator failed: %r", task.exception())


class RemoteGenerator(collections.abc.Generator[T, None, None]):
    """What calling a remote generator function returns: iterate it for the values, as the
    kernel produces them. Leaving the loop early, ``close()`` or dropping it stops the
    generator in the kernel (its ``finally`` runs)."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._done = False
        self._ready: deque[Event] = deque()

    def __next__(self) -> T:
        __tracebackhide__ = True
        if self._done:
            raise StopIteration
        try:
            while True:
                found, value = _next_value(self._ready, self._stream)
                if found:
                    return cast(T, value)
                self._ready.extend(loop_thread().run(self._stream.pull()))
                if not self._ready:
                    self._done = True
                    raise StopIteration
        except StopIteration:
            raise
        except BaseException as error:
            self._done = True
            if isinstance(error, KeyboardInterrupt):
                # Ctrl-C may land outside the wait for a value (which stops the generator
                # itself): stop it here too, once. A second Ctrl-C stops the waiting.
                with contextlib.suppress(KeyboardInterrupt):
                    wait_future(loop_thread().submit(self._stream.interrupt()))
            if not debugging():
                trim(error)
            raise error

    def send(self, value: None) -> T:
        if value is not None:
            raise ConfigurationError(
                f"{self._stream.name} runs remotely and takes no values: use next() or a "
                "for loop, not send() with a value"
            )
        return self.__next__()

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> T:
        """Stop the remote generator, then raise the exception here (it cannot be thrown into
        the kernel's generator)."""
        self.close()
        error = typ if isinstance(typ, BaseException) else typ(*(() if val is None else (val,)))
        raise error.with_traceback(tb) if tb is not None else error

    def close(self) -> None:
        __tracebackhide__ = True
        if self._done:
            loop_thread().submit(self._stream.close()).add_done_callback(_forget)
            return
        self._done = True
        try:
            wait_future(loop_thread().submit(self._stream.close()))
        except BaseException as error:
            if not debugging():
                trim(error)
            raise error

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            loop_thread().submit(self._stream.close()).add_done_callback(_forget)

    def __repr__(self) -> str:
        return f"<RemoteGenerator {self._stream.name}>"


class RemoteAsyncGenerator(collections.abc.AsyncGenerator[T, None]):
    """What calling a remote async generator function returns: ``async for`` over it."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._done = False
        self._ready: deque[Event] = deque()

    async def __anext__(self) -> T:
        __tracebackhide__ = True
        if self._done:
            raise StopAsyncIteration
        try:
            while True:
                found, value = _next_value(self._ready, self._stream)
                if found:
                    return cast(T, value)
                pulled: list[Event] = await asyncio.wrap_future(
                    loop_thread().submit(self._stream.pull())
                )
                self._ready.extend(pulled)
                if not self._ready:
                    self._done = True
                    raise StopAsyncIteration
        except StopAsyncIteration:
            raise
        except BaseException as error:
            self._done = True
            if not debugging():
                trim(error)
            raise error

    async def asend(self, value: None) -> T:
        if value is not None:
            raise ConfigurationError(
                f"{self._stream.name} runs remotely and takes no values: use async for, not "
                "asend() with a value"
            )
        return await self.__anext__()

    async def athrow(self, typ: Any, val: Any = None, tb: Any = None) -> T:
        """Stop the remote generator, then raise the exception here."""
        await self.aclose()
        error = typ if isinstance(typ, BaseException) else typ(*(() if val is None else (val,)))
        raise error.with_traceback(tb) if tb is not None else error

    async def aclose(self) -> None:
        __tracebackhide__ = True
        self._done = True
        try:
            await asyncio.wrap_future(loop_thread().submit(self._stream.close()))
        except BaseException as error:
            if not debugging():
                trim(error)
            raise error

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            loop_thread().submit(self._stream.close()).add_done_callback(_forget)

    def __repr__(self) -> str:
        return f"<RemoteAsyncGenerator {self._stream.name}>"


def _forget(future: Any) -> None:
    if not future.cancelled():
        future.exception()
