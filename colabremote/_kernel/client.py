"""KernelClient: the Jupyter messaging protocol over a Transport, and the agent protocol over that.

One task reads every message the kernel sends and routes it: replies to their requests, output to
the session's output handler as it arrives, the agent's comm messages (reassembled from chunks) to
the requests waiting for them. Each agent request is delivered once across dropped connections:
a call is fetched, never sent twice blindly. Which calls run when, and their timeouts, are the
client's :class:`~.calls.CallQueue`. Everything here runs on the session's event loop.

The kernel is a trust boundary: anything running in it (a dependency, a second client of the same
kernel) can put messages on iopub. An agent reply is taken only when its parent header names this
client's session and one of its own requests that the reply's id answers, and a ``colab_request``
only while one of this client's calls or executes runs; anything else is dropped with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from jupyter_client.session import Session as MessageFactory

from .._progress import Progress
from ..exceptions import (
    ConnectionLost,
    KernelDied,
    KernelRestarted,
    KernelStartError,
    RemoteError,
)
from .agent import HELLO_EXPRESSION, install_code
from .agent.framing import Assembler, split_message
from .calls import CallQueue
from .messages import AgentReply, Buffer, Message
from .output import CallOutputs, rate_limit_notice, warn_rate_limited
from .transport import Transport
from .wire import Op, Status

log = logging.getLogger("colabremote.kernel")

OutputHandler = Callable[[str, str], None]
"""Receives ``(stream_name, text)`` for everything the kernel prints: stdout or stderr."""


class StreamSink(Protocol):
    """Where a generator step's output and values go, in the order they arrive."""

    def output(self, name: str, text: str) -> None: ...

    def item(self, fields: dict[str, Any], parts: list[memoryview]) -> None:
        """An ``item`` message: output and values, in the order the kernel produced them."""


ColabRequestHandler = Callable[[Message], Awaitable[dict[str, Any]]]
"""Answers a ``colab_request`` (Drive mount, ephemeral auth); returns the reply's ``value``."""

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_DEAD_STATES = frozenset({"restarting", "autorestarting", "dead"})
_ACK_DELAY = 0.05
#: Transfers at least this large get a progress bar on a terminal.
PROGRESS_THRESHOLD = 64 * 1024 * 1024
_MAX_FETCHES = 5
#: How long the agent's install may take (it runs first in the kernel, so it is quick unless the
#: kernel went away, or was restarted, under it).
INSTALL_TIMEOUT = 120.0


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


@dataclass
class _Inflight:
    """A logical message sent to the agent whose reply has not come yet."""

    msg_id: str
    future: asyncio.Future[AgentReply]
    is_call: bool
    fields: dict[str, Any] = field(default_factory=dict)
    parts: Sequence[Buffer] = ()  # kept until the reply comes, to resend a call that never arrived
    fetches: int = 0
    #: The connection its latest sending began on (None while it waits to be sent). One that
    #: began on a connection that dropped is fetched (a call) or sent again (anything else).
    sent_on: int | None = None


@dataclass(eq=False)
class _Resumption:
    """A reconnection's account of the calls that were in flight, until the agent has answered
    for each: with its kept outcome, or "never received" (``unknown``)."""

    pending: set[str]
    unknown: set[str] = field(default_factory=set)
    fetches: set[str] = field(default_factory=set)  # the ids of its fetch messages
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    def settle(self, msg_id: str, *, unknown: bool = False) -> None:
        if msg_id in self.pending:
            self.pending.discard(msg_id)
            if unknown:
                self.unknown.add(msg_id)
        if not self.pending:
            self.answered.set()


class KernelClient:
    """Talks to one kernel. Create with :meth:`connect`; close with :meth:`close`."""

    def __init__(
        self,
        transport: Transport,
        *,
        on_output: OutputHandler,
        on_colab_request: ColabRequestHandler | None = None,
        on_disconnect: Callable[[ConnectionLost], None] | None = None,
    ) -> None:
        self.transport = transport
        self.on_output = on_output
        #: Calls' output from the agent, in order, with gaps reported.
        self._outputs = CallOutputs(self._write_output)
        self.on_colab_request = on_colab_request
        #: Called when the connection drops; it should call :meth:`reconnect` or :meth:`fail_all`.
        #: Without it, a dropped connection fails everything in flight.
        self.on_disconnect = on_disconnect
        #: A connection is up (stdin replies and a reconnection's own messages may go).
        self._connected = asyncio.Event()
        self._connected.set()
        #: Everything else may go: set once a reconnection has settled what was in flight.
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._generation = 0  # counts connections: a message is sent whole on one of them
        self._resumption: _Resumption | None = None
        self._resuming: asyncio.Task[None] | None = None
        self._closing = False
        self.factory = MessageFactory(username="colabremote")
        self.session_id = self.factory.session
        self._replies: dict[str, asyncio.Future[Message]] = {}
        self._idle: dict[str, asyncio.Future[None]] = {}
        self._errors: dict[str, dict[str, Any]] = {}
        self._quiet: set[str] = set()
        self._agent_comm: str | None = None
        self._assembler = Assembler()
        self._waiters: dict[str, _Inflight] = {}
        self._final_ids: dict[str, str] = {}  # last comm_msg id of a logical message -> its id
        # The last comm_msg of each logical message -> the reply ids that may answer it (a fetch
        # is answered under the ids it asks for); replies to anything else are refused.
        self._answers: dict[str, frozenset[str]] = {}
        self._calls_sent: dict[str, str] = {}  # the last comm_msg of a call -> the call's id
        self._busy: set[str] = set()  # messages the kernel reported busy with, not yet idle
        self._receiving: dict[str, Progress] = {}
        #: Show progress bars for large arguments and results (on terminals only).
        self.show_progress = True
        #: The calls in flight, in the order the kernel runs them, with their timeouts.
        self.calls = CallQueue(self)
        #: Generator steps in flight, by id: their output and values go there, in order.
        self.stream_sinks: dict[str, StreamSink] = {}
        self._send_lock = asyncio.Lock()
        self._pending_acks: list[str] = []
        self._ack_handle: asyncio.TimerHandle | None = None
        self._reader: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._ids = itertools.count()
        self.kernel_python: tuple[int, int, int] | None = None
        self.hello: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read_forever())

    async def close(self) -> None:
        self._closing = True
        self._connected.set()  # release anything waiting for a reconnection
        self._resumed.set()
        if self._resuming is not None:
            self._resuming.cancel()
        if self._ack_handle is not None:
            self._ack_handle.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        with contextlib.suppress(Exception):
            await self.transport.close()
        self.fail_all(ConnectionLost("the kernel connection was closed"))

    @property
    def failure(self) -> BaseException | None:
        """Why this client can no longer be used, or None while it is healthy."""
        return self._failure

    def fail_all(self, exc: BaseException) -> None:
        """Fail every request still waiting; later requests fail the same way."""
        if self._failure is None:
            self._failure = exc
        self._connected.set()  # senders waiting for a reconnection wake, and fail with ``exc``
        self._resumed.set()
        if self._resuming is not None:
            self._resuming.cancel()
        waiting: list[asyncio.Future[Any]] = [
            *self._replies.values(),
            *self._idle.values(),
            *(w.future for w in self._waiters.values()),
        ]
        for future in waiting:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # a caller that gave up must not leave "never retrieved"
        self._replies.clear()
        self._idle.clear()
        self._waiters.clear()

    # -- Jupyter requests ------------------------------------------------------------------

    def _message(
        self,
        msg_type: str,
        content: dict[str, Any],
        channel: str = "shell",
        buffers: Sequence[Buffer] = (),
    ) -> Message:
        raw = self.factory.msg(msg_type, content)
        return Message(
            channel,
            raw["header"],
            {},
            raw["metadata"],
            content,
            [memoryview(b).cast("B") if not isinstance(b, memoryview) else b for b in buffers],
        )

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _send(self, msg: Message) -> None:
        """Send a stdin reply: it answers the kernel, so it goes as soon as a connection is up."""
        self._check()
        await self._connected.wait()  # while reconnecting, messages wait for the new connection
        self._check()
        await self.transport.send(msg)

    @contextlib.asynccontextmanager
    async def _sending(self, gate: asyncio.Event) -> AsyncIterator[int]:
        """Hold the send lock once ``gate`` is open; gives the connection's generation.

        Senders wait for the gate before the lock, so a reconnection's own messages (which wait
        only for the connection) pass the messages it holds back; the lock keeps the messages
        of one sender together, in the order the senders came.
        """
        while True:
            self._check()
            await gate.wait()
            self._check()
            async with self._send_lock:
                if gate.is_set() and self._failure is None:
                    yield self._generation
                    return

    async def _send_on(self, msg: Message, generation: int) -> None:
        """Send on the connection ``generation``, or fail if it dropped since: a message is never
        continued on another connection (the reconnection fetches or resends it whole)."""
        self._check()
        if generation != self._generation or not self._connected.is_set():
            raise ConnectionLost("the kernel connection dropped while a message was being sent")
        await self.transport.send(msg)

    # -- dropped connections ---------------------------------------------------------------

    def _dropped(self, exc: ConnectionLost) -> None:
        if self._closing or self._failure is not None:
            return
        if self.on_disconnect is None or not self._connected.is_set():
            if self.on_disconnect is None:
                self.fail_all(exc)
            return
        log.warning("the kernel connection dropped (%s); reconnecting", exc)
        self._generation += 1
        self._connected.clear()
        self._resumed.clear()
        if self._resuming is not None:
            self._resuming.cancel()  # the next reconnection settles what was in flight again
        self.on_disconnect(exc)

    async def reconnect(self, transport: Transport) -> None:
        """Carry on over a new connection to the same kernel, losing nothing, in order.

        The agent keeps every result until acknowledged and handles messages in order. Until it
        has answered a ``fetch`` for every call in flight (its kept result, or ``unknown``: the
        call never reached the kernel), nothing new is sent; then the calls it never received
        are sent again, in their original order, ahead of everything that waited. They never
        ran, so each call still runs once, and calls run in the order they were made.
        """
        old, self.transport = self.transport, transport
        with contextlib.suppress(Exception):
            await old.close()
        self._assembler = Assembler()
        self._final_ids.clear()
        # What the kernel was doing for us goes on: a reply published while the connection was
        # down may still be replayed, and a call still running may still send colab_requests.
        waiting = set(self._waiters)
        self._answers = {k: ids for k, ids in self._answers.items() if ids & waiting}
        self._calls_sent = {k: i for k, i in self._calls_sent.items() if i in waiting}
        self._busy = {b for b in self._busy if b in self._calls_sent or b in self._idle}
        self._receiving.clear()
        self.start()
        # Messages that began on a lost connection, in the order they were made; those still
        # waiting to be sent go later, through the gate this reconnection opens.
        began = [w for w in self._waiters.values() if w.sent_on is not None]
        self._connected.set()
        self._resuming = asyncio.get_running_loop().create_task(
            self._resume(self._generation, began)
        )

    async def _resume(self, generation: int, began: list[_Inflight]) -> None:
        """Settle what a lost connection had in flight, then let held messages go."""
        # Everything but a call is idempotent (sources, info, resume): send it again.
        resent = [self._resend(w, priority=True) for w in began if not w.is_call]
        calls = [w.msg_id for w in began if w.is_call]
        if calls:
            resumption = _Resumption(set(calls))
            self._resumption = resumption
            try:
                self._fetch_for(resumption, calls)
                await resumption.answered.wait()
            finally:
                if self._resumption is resumption:
                    self._resumption = None
            order = {msg_id: index for index, msg_id in enumerate(calls)}
            for msg_id in sorted(resumption.unknown, key=order.__getitem__):
                waiter = self._waiters.get(msg_id)
                if waiter is not None and not waiter.future.done():
                    log.info("call %s never reached the kernel; sending it again", msg_id)
                    resent.append(self._resend(waiter, priority=True))
        if resent:
            await asyncio.wait(resent)
        if generation == self._generation and self._connected.is_set():
            self._resumed.set()

    def _fetch_for(self, resumption: _Resumption, ids: list[str]) -> None:
        """Ask the agent again about calls of a reconnection that it has not answered for."""
        fields: dict[str, Any] = {"op": Op.FETCH, "ids": ids}
        fields["id"] = f"{self.session_id[:8]}-{next(self._ids)}"
        resumption.fetches.add(fields["id"])
        task = asyncio.get_running_loop().create_task(self._send_logical(fields, (), priority=True))
        task.add_done_callback(_consume)

    async def request(self, msg: Message, *, timeout: float | None = None) -> Message:
        """Send a shell or control request and wait for its reply."""
        self._check()
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._replies[msg.msg_id] = future
        try:
            async with self._sending(self._resumed) as generation:
                await self._send_on(msg, generation)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._replies.pop(msg.msg_id, None)

    async def execute(
        self,
        code: str,
        *,
        silent: bool = False,
        quiet: bool = False,
        store_history: bool = False,
        timeout: float | None = None,
        idle_timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run code; output streams to the output handler unless ``quiet``. Raises on error.

        ``timeout`` bounds the wait for the reply, and then for the idle status that follows it
        on iopub; ``idle_timeout``, when given, bounds the second wait instead.
        """
        msg = self._message(
            "execute_request",
            {
                "code": code,
                "silent": silent,
                "store_history": store_history,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle[msg.msg_id] = idle
        if quiet:
            self._quiet.add(msg.msg_id)
        try:
            reply = await self.request(msg, timeout=timeout)
            await asyncio.wait_for(idle, timeout if idle_timeout is None else idle_timeout)
        finally:
            self._idle.pop(msg.msg_id, None)
            self._quiet.discard(msg.msg_id)
            error = self._errors.pop(msg.msg_id, None)
        content = reply.content
        if content.get("status") == "error":
            error = error or content
            raise rebuild_remote_error(
                str(error.get("ename", "Error")),
                str(error.get("evalue", "")),
                strip_ansi("\n".join(error.get("traceback") or ())),
            )
        return content

    # -- the agent -------------------------------------------------------------------------

    async def install_agent(self) -> dict[str, Any]:
        """Install the agent with one execute and return its hello.

        The agent opens its comm from the kernel's side under an id chosen here, and the hello
        comes back in the same reply (as a user expression), so this costs one round trip.
        """
        comm_id = uuid.uuid4().hex
        code = install_code(comm_id, self.transport.max_message_bytes)
        install = self._message(
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {"hello": HELLO_EXPRESSION},
                "allow_stdin": False,
                "stop_on_error": False,
            },
        )
        self._quiet.add(install.msg_id)
        try:
            reply = await self.request(install, timeout=INSTALL_TIMEOUT)
        except TimeoutError:
            raise ConnectionLost(
                f"the kernel did not answer the agent's install within {INSTALL_TIMEOUT:g} s"
            ) from None
        finally:
            self._quiet.discard(install.msg_id)
        content = reply.content
        hello = (content.get("user_expressions") or {}).get("hello") or {}
        if content.get("status") != "ok" or hello.get("status") != "ok":
            failed = content if content.get("status") != "ok" else hello
            raise KernelStartError(
                "the colabremote agent could not be installed in the kernel "
                f"({failed.get('ename', 'Error')}: {failed.get('evalue', '')}). The kernel "
                "needs Python 3.10 or newer and cloudpickle: run "
                "'python -m pip install cloudpickle' in the kernel's environment."
            )
        import ast
        import json

        fields: dict[str, Any] = json.loads(ast.literal_eval(hello["data"]["text/plain"]))
        self._agent_comm = comm_id
        self.hello = fields
        python = fields.get("python") or (0, 0, 0)
        self.kernel_python = (int(python[0]), int(python[1]), int(python[2]))
        return fields

    def agent_request(
        self,
        fields: dict[str, Any],
        parts: Sequence[Buffer] = (),
        *,
        is_call: bool = False,
        expect_reply: bool = True,
    ) -> asyncio.Future[AgentReply]:
        """Send one logical message to the agent; the future resolves with its reply.

        Sending starts at once (in order with every other message); awaiting the future waits
        for the reply. Acknowledgements of results already received ride along.
        """
        self._check()
        if self._agent_comm is None:
            raise ConnectionLost("the colabremote agent is not installed in this kernel")
        msg_id = str(fields.get("id") or f"{self.session_id[:8]}-{next(self._ids)}")
        fields = {**fields, "id": msg_id}
        if self._pending_acks:
            fields["ack"] = self._pending_acks
            self._pending_acks = []
        future: asyncio.Future[AgentReply] = asyncio.get_running_loop().create_future()
        if expect_reply:
            self._waiters[msg_id] = _Inflight(msg_id, future, is_call, fields, parts)
        task = asyncio.get_running_loop().create_task(self._send_logical(fields, parts))
        task.add_done_callback(lambda t: self._sent(msg_id, t))
        if not expect_reply:
            task.add_done_callback(lambda t: _settle(future, t))
        return future

    async def _send_logical(
        self, fields: dict[str, Any], parts: Sequence[Buffer], *, priority: bool = False
    ) -> None:
        """Send one logical message whole, on one connection. ``priority``: a reconnection's own
        message, which goes while the reconnection holds everything else back."""
        assert self._agent_comm is not None
        comm_id = self._agent_comm
        total = sum(memoryview(p).nbytes for p in parts)
        progress = self._progress("sending", total)
        async with self._sending(self._connected if priority else self._resumed) as generation:
            waiter = self._waiters.get(str(fields["id"]))
            if waiter is not None:
                waiter.sent_on = generation
            for data, buffers in split_message(fields, parts, self.transport.max_message_bytes):
                msg = self._message("comm_msg", {"comm_id": comm_id, "data": data}, buffers=buffers)
                if data.get("op") != Op.CHUNK:
                    # Registered before sending: the reply may come before the send returns.
                    self._answers[msg.msg_id] = _answered_by(fields)
                    if fields.get("op") in (Op.CALL, Op.NEXT, Op.CLOSE_STREAM):
                        self._calls_sent[msg.msg_id] = str(fields["id"])
                await self._send_on(msg, generation)
                if progress is not None:
                    progress.advance(sum(b.nbytes for b in buffers))
            if progress is not None:
                progress.done()
            # The kernel reports idle for this message after the agent has replied to it.
            self._final_ids[msg.msg_id] = str(fields["id"])

    def _sent(self, msg_id: str, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            exc: BaseException | None = ConnectionLost("sending to the kernel was cancelled")
        else:
            exc = task.exception()
        if exc is None:
            return
        waiter = self._waiters.get(msg_id)
        if (
            isinstance(exc, ConnectionLost)
            and waiter is not None
            and self.on_disconnect is not None
            and self._failure is None
        ):
            return  # the reconnection fetches or resends it
        waiter = self._waiters.pop(msg_id, None)
        if waiter is not None and not waiter.future.done():
            waiter.future.set_exception(exc)

    def _resend(self, waiter: _Inflight, *, priority: bool = False) -> asyncio.Task[None]:
        msg_id = waiter.msg_id
        waiter.sent_on = None  # until its sending begins
        task = asyncio.get_running_loop().create_task(
            self._send_logical(waiter.fields, waiter.parts, priority=priority)
        )
        task.add_done_callback(lambda t: self._sent(msg_id, t))
        return task

    def acknowledge(self, msg_id: str) -> None:
        """The result of ``msg_id`` is safely here; the kernel may forget it."""
        self._pending_acks.append(msg_id)
        if self._ack_handle is None:
            loop = asyncio.get_running_loop()
            self._ack_handle = loop.call_later(_ACK_DELAY, self._flush_acks)

    def _flush_acks(self) -> None:
        self._ack_handle = None
        if self._pending_acks and self._failure is None and self._agent_comm is not None:
            future = self.agent_request({"op": Op.ACK}, expect_reply=False)
            future.add_done_callback(_consume)

    @property
    def calls_in_flight(self) -> int:
        return self.calls.in_flight

    # -- reading ---------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        try:
            while True:
                msg = await self.transport.receive()
                try:
                    self._route(msg)
                except Exception:  # a malformed message must not stop the reader
                    log.exception("could not handle a %s message", msg.msg_type)
        except ConnectionLost as exc:
            self._dropped(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - surfaced to every waiting caller
            self.fail_all(ConnectionLost(f"reading from the kernel failed: {exc!r}"))

    def _route(self, msg: Message) -> None:
        msg_type = msg.msg_type
        parent = msg.parent_id
        if msg.channel in ("shell", "control"):
            future = self._replies.get(parent or "")
            if future is not None and not future.done():
                future.set_result(msg)
            return
        if msg_type == "comm_msg":
            if msg.content.get("comm_id") == self._agent_comm:
                if self._answers_ours(msg):
                    self._from_agent(msg)
                else:
                    log.warning(
                        "dropped a message on the agent's comm that answers no request of this "
                        "client (sent by other code in the kernel, or for another client)"
                    )
            return
        if msg_type == "stream":
            written = str(msg.content["text"])
            if parent not in self._quiet:
                self.on_output(str(msg.content.get("name", "stdout")), written)
            limit = rate_limit_notice(written) if msg.content.get("name") == "stderr" else None
            if limit is not None and (msg.parent_header or {}).get("session") == self.session_id:
                # The server dropped stream output of ours (it names the dropped message's
                # parent): output written to file descriptors, or by an execute.
                warn_rate_limited(limit)
            return
        if msg_type in ("display_data", "execute_result", "update_display_data"):
            text = (msg.content.get("data") or {}).get("text/plain")
            if text is not None and parent not in self._quiet:
                self.on_output("stdout", str(text) + "\n")
            return
        if msg_type == "error":
            if parent is not None:
                self._errors[parent] = msg.content
            return
        if msg_type == "status":
            self._on_status(str(msg.content.get("execution_state")), parent)
            return
        if msg_type == "shutdown_reply" and not self._closing:
            # The kernel tells every client, on iopub, that someone asked it to stop.
            if msg.content.get("restart"):
                self._restarted()
            else:
                self.fail_all(KernelDied("the kernel was shut down from outside this session"))
            return
        if msg_type == "comm_close" and msg.content.get("comm_id") == self._agent_comm:
            self.fail_all(KernelDied("the colabremote agent in the kernel went away"))
            return
        if msg_type == "colab_request":
            if self._asked_by_ours(msg):
                asyncio.get_running_loop().create_task(self._answer_colab_request(msg))
            else:
                log.warning(
                    "did not answer a colab_request that came from none of this client's calls "
                    "(sent by other code in the kernel, or for another client)"
                )
            return
        if msg_type == "input_request":
            # Remote calls run with allow_stdin off; answer anything else so nothing hangs.
            self._reply_input("")

    def _on_status(self, state: str, parent: str | None) -> None:
        """The kernel's execution state: busy and idle for a message, or a kernel lifecycle."""
        if state == "busy" and parent is not None:
            self._busy.add(parent)
        elif state == "idle" and parent is not None:
            self._busy.discard(parent)
            self._answers.pop(parent, None)
            self._calls_sent.pop(parent, None)
            idle = self._idle.get(parent)
            if idle is not None and not idle.done():
                idle.set_result(None)
            self._check_replied(parent)
        elif state in _DEAD_STATES:
            self.fail_all(KernelDied(f"the kernel died (its server reported {state!r})"))
        elif state == "starting" and self._agent_comm is not None:
            # A kernel announces "starting" once, before anyone installs an agent in it: a
            # new kernel behind our connection, whose agent is gone.
            self._restarted()

    def _restarted(self) -> None:
        self.fail_all(
            KernelRestarted(
                "the kernel was restarted from outside this session (a notebook's or editor's "
                "restart); its state is gone, and the next call installs colabremote again"
            )
        )

    def _answers_ours(self, msg: Message) -> bool:
        """Whether an agent comm message answers a request this client sent, by its parent header
        (our session, one of our agent messages) and its id (one that message is answered by)."""
        parent = msg.parent_header or {}
        if parent.get("session") != self.session_id:
            return False
        answers = self._answers.get(str(parent.get("msg_id")))
        data = msg.content.get("data")
        return answers is not None and isinstance(data, dict) and str(data.get("id")) in answers

    def _running_ours(self, msg_id: str) -> bool:
        """Whether ``msg_id`` is one of our executes, or the last message of one of our calls,
        whose answer has not come yet."""
        if msg_id in self._idle:
            return True
        call_id = self._calls_sent.get(msg_id)
        return call_id is not None and call_id in self._waiters

    def _asked_by_ours(self, msg: Message) -> bool:
        """Whether a ``colab_request`` comes from one of our calls or executes.

        Colab's own ``google.colab._message`` puts only the session in the parent header, so
        without a parent id the request must arrive while the kernel is busy with ours.
        """
        parent = msg.parent_header or {}
        if parent.get("session") != self.session_id:
            return False
        parent_id = parent.get("msg_id")
        if parent_id is not None:
            return self._running_ours(str(parent_id))
        return any(self._running_ours(busy) for busy in self._busy)

    def _check_replied(self, comm_msg_id: str) -> None:
        """The kernel finished a message of ours: if its reply never came, ask for it again.

        Jupyter servers drop iopub messages while a kernel exceeds their output rate limits
        (status messages excepted), which can take a result with them. The agent keeps every
        result until acknowledged, so asking again loses nothing and runs nothing twice.
        """
        msg_id = self._final_ids.pop(comm_msg_id, None)
        resumption = self._resumption
        if resumption is not None and msg_id in resumption.fetches:
            self._refetch(resumption)
            return
        waiter = self._waiters.get(msg_id) if msg_id is not None else None
        if waiter is None or waiter.future.done() or not waiter.is_call:
            return
        waiter.fetches += 1
        if waiter.fetches > _MAX_FETCHES:
            self._waiters.pop(waiter.msg_id, None)
            waiter.future.set_exception(
                ConnectionLost(f"the result of call {waiter.msg_id} was lost in transit")
            )
            return
        log.warning("the reply to %s did not arrive; asking the kernel again", waiter.msg_id)
        self._assembler.discard(waiter.msg_id)
        fetch = self.agent_request({"op": Op.FETCH, "ids": [waiter.msg_id]}, expect_reply=False)
        fetch.add_done_callback(_consume)

    def _refetch(self, resumption: _Resumption) -> None:
        """The agent has handled a reconnection's fetch: ask again for answers that were lost on
        the way (a server's rate limit), or give those calls up after a few tries."""
        missing = [m for m in resumption.pending if m in self._waiters]
        for msg_id in list(resumption.pending):
            if msg_id not in self._waiters:
                resumption.settle(msg_id)  # failed or answered meanwhile
        lost = []
        for msg_id in missing:
            waiter = self._waiters[msg_id]
            waiter.fetches += 1
            if waiter.fetches > _MAX_FETCHES:
                lost.append(msg_id)
        for msg_id in lost:
            waiter = self._waiters.pop(msg_id)
            waiter.future.set_exception(
                ConnectionLost(f"the result of call {msg_id} was lost in transit")
            )
            resumption.settle(msg_id)
        again = [m for m in missing if m not in lost]
        if again:
            log.warning("answers about calls in flight did not arrive; asking the kernel again")
            self._fetch_for(resumption, again)

    def _progress(self, verb: str, total: int) -> Progress | None:
        """A progress bar for a transfer large enough to deserve one (terminals only)."""
        if not self.show_progress or total < PROGRESS_THRESHOLD:
            return None
        progress = Progress(f"colabremote: {verb}", total)
        return progress if progress.enabled else None

    def _from_agent(self, msg: Message) -> None:
        data = msg.content.get("data") or {}
        if data.get("op") == Op.CHUNK:
            self._assembler.add_chunk(data, msg.buffers[0])
            key = str(data.get("id"))
            progress = self._receiving.get(key)
            if progress is None and int(data.get("offset", 0)) == 0:
                progress = self._progress("receiving", int(data.get("size", 0)))
                if progress is not None:
                    self._receiving[key] = progress
            if progress is not None:
                progress.advance(msg.buffers[0].nbytes)
            return
        finished = self._receiving.pop(str(data.get("id")), None)
        if finished is not None:
            finished.done()
        msg_id = str(data.get("id"))
        try:
            parts = self._assembler.finish(data, msg.buffers)
        except ValueError:
            return  # a chunk was dropped on the way: the idle that follows asks again
        sink = self.stream_sinks.get(msg_id)
        if data.get("op") == Op.OUTPUT:
            if parts and msg_id in self._waiters:
                self._outputs.receive(msg_id, data, parts[0], sink.output if sink else None)
            return
        if data.get("op") == Op.ITEM:
            if parts and sink is not None and msg_id in self._waiters:
                # The numbering and text bytes are checked as for output (nothing is written
                # here: the sink writes the text, in order with the values).
                self._outputs.receive(msg_id, {**data, "streams": []}, parts[0], sink.output)
                sink.item(data, parts)
            return
        waiter = self._waiters.get(msg_id)
        resumption = self._resumption
        if waiter is not None and waiter.is_call and data.get("status") == Status.UNKNOWN:
            # Asked for after a reconnection, and the kernel never got it: it is sent again,
            # in order, once the agent has answered for every call in flight.
            if resumption is not None and msg_id in resumption.pending:
                resumption.settle(msg_id, unknown=True)
            elif resumption is None or msg_id not in resumption.unknown:
                log.info("call %s never reached the kernel; sending it again", msg_id)
                self._resend(waiter)
            return
        waiter = self._waiters.pop(msg_id, None)
        if resumption is not None:
            resumption.settle(msg_id)
        if waiter is None:
            if data.get("op") == Op.RESULT:
                self.acknowledge(msg_id)  # a result nobody waits for any more: let it go
            return
        if waiter.is_call:
            self._outputs.finish(msg_id, data.get("output"), sink.output if sink else None)
        if not waiter.future.done():
            waiter.future.set_result(AgentReply(data, parts))

    def _write_output(self, name: str, text: str) -> None:
        """A call's output, from the agent's channel, to the session's output handler."""
        try:
            self.on_output(name, text)
        except Exception:  # the user's handler must not stop the reader
            log.exception("the on_output handler failed")

    async def _answer_colab_request(self, msg: Message) -> None:
        metadata = msg.metadata or {}
        msg_number = metadata.get("colab_msg_id")
        if self.on_colab_request is None or not isinstance(msg_number, int):
            return
        try:
            value = await self.on_colab_request(msg)
        except Exception as exc:  # noqa: BLE001 - always answer, with the error
            value = {"error": str(exc) or "unknown error"}
        value = {**value, "type": "colab_reply", "colab_msg_id": msg_number}
        with contextlib.suppress(ConnectionLost):
            await self._send(self._message("input_reply", {"value": value}, channel="stdin"))

    def _reply_input(self, value: str) -> None:
        reply = self._message("input_reply", {"value": value}, channel="stdin")
        asyncio.get_running_loop().create_task(self._send(reply)).add_done_callback(_consume)


def _answered_by(fields: dict[str, Any]) -> frozenset[str]:
    """The reply ids that may answer a logical message: a fetch's ids, else its own."""
    if fields.get("op") == Op.FETCH:
        return frozenset(str(i) for i in fields.get("ids", ()))
    return frozenset({str(fields["id"])})


def _settle(future: asyncio.Future[AgentReply], sent: asyncio.Task[None]) -> None:
    """Resolve a fire-and-forget request's future once it is sent (or failed to be)."""
    if future.done():
        return
    if sent.cancelled() or sent.exception() is not None:
        future.set_exception(sent.exception() or ConnectionLost("sending was cancelled"))
    else:
        future.set_result(AgentReply({}, []))


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def rebuild_remote_error(type_name: str, value: str, traceback_text: str) -> BaseException:
    """A remote exception as a local one: a builtin type when it is one, else RemoteError."""
    import builtins

    from ..exceptions import RemoteTraceback

    short = type_name.rsplit(".", 1)[-1]
    if type_name.startswith("builtins.") or "." not in type_name:
        candidate = getattr(builtins, short, None)
        if isinstance(candidate, type) and issubclass(candidate, BaseException):
            try:
                exc = candidate(value)
            except Exception:  # noqa: BLE001 - types that take other arguments
                exc = None
            if exc is not None:
                exc.__cause__ = RemoteTraceback(traceback_text)
                return exc
    return RemoteError(type_name, value, traceback_text)
