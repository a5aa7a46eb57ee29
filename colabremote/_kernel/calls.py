"""CallQueue: the calls in flight on one kernel connection, in the order the kernel runs them.

The agent runs calls one at a time, in the order they arrive, so the oldest call still waiting
for its result is the one running: the head. A call's timeout counts from the moment it becomes
the head, not while it waits behind others. Stopping a call waits until it is the head, then
interrupts the kernel; the agent then refuses the calls queued behind it ("aborted") until told
to resume, and they are sent again: they never ran. Everything here runs on the session's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..exceptions import ConnectionLost, KernelDied, RemoteTimeout, ResultNotSerializable
from .messages import AgentReply, Buffer
from .wire import NEVER_RAN, Op, Status


class AgentChannel(Protocol):
    """What the queue needs of the kernel client: send to the agent, acknowledge results."""

    def agent_request(
        self,
        fields: dict[str, Any],
        parts: Sequence[Buffer] = (),
        *,
        is_call: bool = False,
        expect_reply: bool = True,
    ) -> asyncio.Future[AgentReply]: ...

    def acknowledge(self, msg_id: str) -> None: ...


#: How many times a call is sent while the kernel answers that it never ran it.
MAX_SENDS = 5
#: How long the agent may take to answer ``resume``.
RESUME_TIMEOUT = 30.0


@dataclass(frozen=True)
class Interrupts:
    """How to stop the call running in the kernel; the session that owns the kernel knows how."""

    #: Interrupt the kernel (SIGINT), through its backend.
    interrupt: Callable[[], Awaitable[None]]
    #: The last resort, for a kernel that ignores the interrupt: fail this connection and start
    #: a fresh kernel.
    replace_kernel: Callable[[], Awaitable[None]]
    #: Tells the user what is happening.
    progress: Callable[[str], None]
    #: How long an interrupted call may take to stop before the kernel is replaced.
    grace: float


@dataclass(eq=False)
class _Attempt:
    """One sending of a call, until its reply comes."""

    future: asyncio.Future[AgentReply]
    became_head: asyncio.Event = field(default_factory=asyncio.Event)
    head_since: float | None = None


@dataclass(eq=False)
class Call:
    """A remote call: what it sends, and its current attempt (a new one per resend)."""

    name: str
    fn_key: str
    fn_parts: Sequence[Buffer]
    arguments: Sequence[Buffer]
    attempt: _Attempt
    #: A message of another op that runs user code (a generator's ``next``): sent as it is.
    fields: dict[str, Any] | None = None


class CallQueue:
    """The calls sent on one connection whose results have not come yet, oldest first.

    Also remembers which functions this connection's agent has cached, so each function's pickle
    is sent once.
    """

    def __init__(self, client: AgentChannel) -> None:
        self._client = client
        self._queue: deque[_Attempt] = deque()
        self._functions: set[str] = set()
        self._stop_lock = asyncio.Lock()  # one interrupt at a time

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def submit(
        self,
        name: str,
        fn_key: str,
        fn_parts: Sequence[Buffer],
        arguments: Sequence[Buffer],
        *,
        fields: dict[str, Any] | None = None,
    ) -> Call:
        """Send a call now, in order with every other message; :meth:`result` waits for it.

        ``fields`` go into the message too: a ``call``'s extra fields, or (with another ``op``)
        a message that runs user code, such as a detached call's ``spawn`` or a generator's
        ``next`` (which carries no function).
        """
        attempt = self._send(fn_key, fn_parts, arguments, fields)
        return Call(name, fn_key, fn_parts, arguments, attempt, fields)

    async def result(
        self, call: Call, *, timeout: float | None, interrupts: Interrupts
    ) -> AgentReply:
        """The call's reply, after sending it again for as long as the kernel says it never ran.

        With a ``timeout``, a call still running that long after it became the head is stopped
        and :class:`RemoteTimeout` raised; a result that arrives as the time runs out is kept.
        Cancelling this stops the call in the kernel too.
        """
        sends = 1
        while True:
            reply = await self._wait(call, timeout, interrupts)
            status = reply.fields.get("status")
            if status in NEVER_RAN:
                # An interrupt aimed elsewhere, the kernel forgot the function, or its arguments
                # were lost on the way: sending it again cannot run it twice.
                self._functions.discard(call.fn_key)
                if status == Status.ABORTED:
                    await self.resume()
                if sends == MAX_SENDS:
                    raise ConnectionLost(f"{call.name} could not be delivered to the kernel")
                sends += 1
                call.attempt = self._send(call.fn_key, call.fn_parts, call.arguments, call.fields)
                continue
            self._client.acknowledge(str(reply.fields["id"]))
            if status == Status.UNKNOWN:
                raise ConnectionLost(f"the kernel no longer has the result of {call.name}")
            if status == Status.NO_OUTCOME:
                # It started, so it is never sent again: what it did stays done.
                raise ResultNotSerializable(
                    f"{call.name} ran on the kernel, but its outcome could not be sent back: "
                    f"{reply.fields.get('evalue') or 'no reason given'}"
                )
            return reply

    async def resume(self) -> None:
        """Tell the agent to stop aborting (after an interrupt); harmless when it was not."""
        with contextlib.suppress(TimeoutError, ConnectionLost, KernelDied):
            resumed = self._client.agent_request({"op": Op.RESUME})
            await asyncio.wait_for(asyncio.shield(resumed), RESUME_TIMEOUT)

    # -- sending and the head of the queue --------------------------------------------------

    def _send(
        self,
        fn_key: str,
        fn_parts: Sequence[Buffer],
        arguments: Sequence[Buffer],
        extra: dict[str, Any] | None = None,
    ) -> _Attempt:
        include = fn_key not in self._functions and bool(fn_parts)
        fields = {"op": Op.CALL, "fn": fn_key, "fn_included": include, **(extra or {})}
        parts = [*fn_parts, *arguments] if include else arguments
        attempt = _Attempt(self._client.agent_request(fields, parts, is_call=True))
        if fn_parts:
            self._functions.add(fn_key)
        self._queue.append(attempt)
        if len(self._queue) == 1:
            self._mark_head(attempt)
        attempt.future.add_done_callback(lambda _: self._finished(attempt))
        return attempt

    def _finished(self, attempt: _Attempt) -> None:
        """A reply came (or the connection failed): the next call is the head."""
        if attempt in self._queue:
            was_head = self._queue[0] is attempt
            self._queue.remove(attempt)
            if was_head and self._queue:
                self._mark_head(self._queue[0])

    def _mark_head(self, attempt: _Attempt) -> None:
        attempt.head_since = asyncio.get_running_loop().time()
        attempt.became_head.set()

    def _is_head(self, attempt: _Attempt) -> bool:
        return bool(self._queue) and self._queue[0] is attempt

    # -- timeouts and stopping ---------------------------------------------------------------

    async def _wait(self, call: Call, timeout: float | None, interrupts: Interrupts) -> AgentReply:
        attempt = call.attempt
        future = attempt.future
        try:
            if timeout is None:
                return await asyncio.shield(future)
            loop = asyncio.get_running_loop()
            while True:
                if attempt.head_since is None:
                    # Queued behind other calls: the clock starts when this one starts.
                    await _until_done_or_set(future, attempt.became_head)
                    if future.done():
                        return future.result()
                    continue
                remaining = attempt.head_since + timeout - loop.time()
                if remaining > 0:
                    done, _ = await asyncio.wait([future], timeout=remaining)
                    if done:
                        return future.result()
                    continue
                reply = await asyncio.shield(self._stop(attempt, interrupts))
                if reply is not None and reply.fields.get("status") == Status.OK:
                    # It finished just as the time ran out: keep the result. (A call the
                    # interrupt reached says "interrupted" instead.)
                    return reply
                if reply is not None:
                    self._client.acknowledge(str(reply.fields["id"]))
                raise RemoteTimeout(
                    f"{call.name} did not finish within {timeout:g} s and was interrupted on "
                    "the kernel"
                )
        except asyncio.CancelledError:
            # Best effort: the caller has gone, so a clean-up failure (a closed session) has
            # nobody to report to, and must not replace the cancellation.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._stop(attempt, interrupts))
            raise

    async def _stop(self, attempt: _Attempt, interrupts: Interrupts) -> AgentReply | None:
        """Stop a call that was sent, and return its reply if one came.

        It waits until the call is the head (an interrupt now would stop a call ahead of it),
        interrupts the kernel, and replaces the kernel if the call has not stopped in time.
        """
        future = attempt.future
        async with self._stop_lock:
            while not future.done() and not self._is_head(attempt):
                await _until_done_or_set(future, attempt.became_head)
            if future.done():
                return _reply_or_none(future)
            interrupts.progress("interrupting the remote call")
            try:
                await interrupts.interrupt()
                done, _ = await asyncio.wait([future], timeout=interrupts.grace)
            except Exception:  # noqa: BLE001 - an interrupt that fails is handled as one that hangs
                done = set()
            if not done:
                await interrupts.replace_kernel()
                return None
            await self.resume()
            return _reply_or_none(future)


async def _until_done_or_set(future: asyncio.Future[AgentReply], event: asyncio.Event) -> None:
    """Wait until ``future`` is done or ``event`` is set, whichever comes first."""
    waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([future, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


def _reply_or_none(future: asyncio.Future[AgentReply]) -> AgentReply | None:
    if future.cancelled() or future.exception() is not None:
        return None
    return future.result()
