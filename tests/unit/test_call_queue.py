"""CallQueue: order, head-of-line timing, timeouts and resends, against an in-memory kernel.

``ScriptedKernel`` is a Transport with a scripted agent behind it, the way httpx's MockTransport
stands in for a server: it handles messages one at a time in arrival order, as the real agent
does, and each call runs until the test finishes it or the kernel is interrupted. The client and
the queue under test are the real ones.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from colabremote._kernel.calls import MAX_SENDS, Call, CallQueue, Interrupts
from colabremote._kernel.client import KernelClient
from colabremote._kernel.messages import AgentReply, Message
from colabremote._kernel.transport import Transport
from colabremote._kernel.wire import Op, Status
from colabremote.exceptions import ConnectionLost, KernelDied, RemoteTimeout


class ScriptedKernel(Transport):
    """A kernel and agent in memory. Calls are labelled by their function key."""

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._comm_id = ""
        self._running: asyncio.Future[str] | None = None
        self.started: asyncio.Queue[str] = asyncio.Queue()  # calls as they start running
        self.ran: list[str] = []  # calls that ran, in order
        self.received: list[tuple[str, bool]] = []  # every call message: (fn, fn_included)
        self.acks: asyncio.Queue[str] = asyncio.Queue()  # acknowledged ids, as they arrive
        self.functions: set[str] = set()  # the agent's function cache
        self.aborting = False
        self.interrupts = 0
        self.deaf = False  # ignores interrupts, like a call stuck in native code
        self.too_late = False  # an interrupt lands just after the running call finished
        self.stubborn = False  # refuses every call as aborted, whatever the client says
        self._parent: dict[str, Any] = {}  # the header of the message being handled
        self.kept: dict[str, dict[str, Any]] = {}  # outcomes by call id, for fetch
        self.lose_next_call = False  # the next call is lost in transit: the agent never gets it
        self.call_lost = asyncio.Event()  # ... and that happened
        self.lose_fetch_answers = 0  # answers to fetches lost on the way (a server's rate limit)
        self.outlives_connections = False  # closing a connection leaves the kernel running
        self._task = asyncio.get_running_loop().create_task(self._handle_forever())

    # -- the test's side ----------------------------------------------------------------------

    def finish(self, status: str = Status.OK) -> None:
        """The running call returns."""
        assert self._running is not None and not self._running.done()
        self._running.set_result(status)

    async def interrupt(self) -> None:
        self.interrupts += 1
        if self.deaf:
            return
        if self._running is None or self._running.done():
            self.aborting = True  # between calls: the agent's idle-interrupt handler
        elif self.too_late:
            self._running.set_result(Status.OK)
            self.aborting = True
        else:
            self._running.set_result(Status.INTERRUPTED)

    # -- Transport ----------------------------------------------------------------------------

    async def send(self, msg: Message) -> None:
        if msg.msg_type == "execute_request":
            self._install(msg)
        elif msg.msg_type == "comm_msg":
            data = msg.content["data"]
            if data.get("op") == Op.CALL and self.lose_next_call:
                self.lose_next_call = False
                self.call_lost.set()
                return
            for acked in data.get("ack", ()):
                self.acks.put_nowait(acked)
            self._inbox.put_nowait(msg)

    async def receive(self) -> Message:
        msg = await self._outbox.get()
        if msg is None:
            raise ConnectionLost("dropped by the test")
        return msg

    async def close(self) -> None:
        if not self.outlives_connections:
            self._task.cancel()

    def drop(self) -> Transport:
        """Cut the connection (what the kernel publishes until the next one is lost) and return
        a new connection to the same kernel, for the client's reconnect."""
        self.outlives_connections = True
        old, self._outbox = self._outbox, asyncio.Queue()
        old.put_nowait(None)  # the old connection's end
        return _Link(self)

    # -- the agent ----------------------------------------------------------------------------

    def _install(self, request: Message) -> None:
        found = re.search(r"module\.install\('([0-9a-f]+)'", request.content["code"])
        assert found is not None
        self._comm_id = found.group(1)
        hello = json.dumps({"agent_version": 1, "python": [3, 12, 0]})
        content = {
            "status": "ok",
            "user_expressions": {"hello": {"status": "ok", "data": {"text/plain": repr(hello)}}},
        }
        self._put("shell", "execute_reply", content, parent=request.header)

    def _put(
        self, channel: str, msg_type: str, content: dict[str, Any], parent: dict[str, Any]
    ) -> None:
        header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type}
        self._outbox.put_nowait(Message(channel, header, dict(parent), {}, content))

    def _reply(self, fields: dict[str, Any]) -> None:
        """Answer on the agent's comm; like a real kernel, the parent is the message in hand."""
        data = {**fields, "nparts": 0, "chunked": []}
        self._put("iopub", "comm_msg", {"comm_id": self._comm_id, "data": data}, self._parent)

    def colab_request(self, session: str, who: str) -> None:
        """Code in the kernel asks the frontend for something, as ``google.colab`` does: the
        parent header holds only the session of the message the kernel is handling."""
        header = {"msg_id": uuid.uuid4().hex, "msg_type": "colab_request"}
        metadata = {"colab_msg_id": 1, "colab_request_type": "request_auth"}
        content = {"request": {"who": who}}
        self._outbox.put_nowait(Message("iopub", header, {"session": session}, metadata, content))

    def _status(self, state: str) -> None:
        self._put("iopub", "status", {"execution_state": state}, self._parent)

    async def _handle_forever(self) -> None:
        while True:
            msg = await self._inbox.get()
            self._parent = msg.header
            self._status("busy")
            try:
                await self._handle(msg)
            finally:
                self._status("idle")

    async def _handle(self, msg: Message) -> None:
        data = msg.content["data"]
        if data["op"] == Op.RESUME:
            self.aborting = self.stubborn
            self._reply({"op": Op.RESUMED, "id": data["id"]})
        elif data["op"] == Op.CALL:
            await self._call(data)
        elif data["op"] == Op.FETCH:
            for call_id in data["ids"]:
                if self.lose_fetch_answers:
                    self.lose_fetch_answers -= 1
                    continue
                self._reply(
                    self.kept.get(
                        call_id, {"op": Op.RESULT, "id": call_id, "status": Status.UNKNOWN}
                    )
                )

    async def _call(self, data: dict[str, Any]) -> None:
        fn = str(data["fn"])
        self.received.append((fn, bool(data["fn_included"])))
        if self.aborting or self.stubborn:
            self._reply({"op": Op.RESULT, "id": data["id"], "status": Status.ABORTED})
            return
        if fn not in self.functions and not data["fn_included"]:
            self._reply({"op": Op.RESULT, "id": data["id"], "status": Status.NEED_FUNCTION})
            return
        self.functions.add(fn)
        call_id = data["id"]
        self.kept[call_id] = {"op": Op.RESULT, "id": call_id, "status": Status.NO_OUTCOME}
        self._running = asyncio.get_running_loop().create_future()
        self.started.put_nowait(fn)
        status = await self._running
        self.ran.append(fn)
        if status == Status.INTERRUPTED:
            self.aborting = True
        self.kept[call_id] = {"op": Op.RESULT, "id": call_id, "status": status, "seconds": 0.0}
        self._reply(self.kept[call_id])


class _Link(Transport):
    """Another connection to a ScriptedKernel, as a reconnection makes."""

    def __init__(self, kernel: ScriptedKernel) -> None:
        self.kernel = kernel

    async def send(self, msg: Message) -> None:
        await self.kernel.send(msg)

    async def receive(self) -> Message:
        return await self.kernel.receive()

    async def close(self) -> None:
        await self.kernel.close()


class Harness:
    """A real KernelClient on a ScriptedKernel, and the Interrupts a session would pass."""

    def __init__(self, kernel: ScriptedKernel, client: KernelClient, grace: float) -> None:
        self.kernel = kernel
        self.client = client
        self.replaced = asyncio.Event()
        self.progress: list[str] = []
        self.interrupts = Interrupts(
            interrupt=kernel.interrupt,
            replace_kernel=self._replace,
            progress=self.progress.append,
            grace=grace,
        )

    async def _replace(self) -> None:
        self.client.fail_all(KernelDied("replaced"))
        self.replaced.set()

    @property
    def calls(self) -> CallQueue:
        return self.client.calls

    def submit(self, fn: str) -> Call:
        return self.calls.submit(fn, fn, [b"function"], [b"arguments"])

    def result(self, call: Call, timeout: float | None = None) -> asyncio.Task[AgentReply]:
        coro = self.calls.result(call, timeout=timeout, interrupts=self.interrupts)
        return asyncio.get_running_loop().create_task(coro)


def run(test: Callable[[Harness], Awaitable[None]], *, grace: float = 5.0) -> None:
    async def main() -> None:
        kernel = ScriptedKernel()
        client = KernelClient(kernel, on_output=lambda name, text: None)
        client.start()
        await client.install_agent()
        try:
            await asyncio.wait_for(test(Harness(kernel, client, grace)), 30)
        finally:
            await client.close()

    asyncio.run(main())


def test_calls_run_in_order_and_only_the_running_one_is_timed() -> None:
    async def test(h: Harness) -> None:
        first = h.result(h.submit("first"))
        second = h.result(h.submit("second"), timeout=0.2)
        assert h.calls.in_flight == 2
        assert await h.kernel.started.get() == "first"
        await asyncio.sleep(0.5)  # the first call's work, longer than the second's timeout
        h.kernel.finish()
        assert (await first).fields["status"] == Status.OK
        assert await h.kernel.started.get() == "second"
        h.kernel.finish()
        assert (await second).fields["status"] == Status.OK
        assert h.kernel.ran == ["first", "second"]
        assert h.kernel.interrupts == 0
        assert h.calls.in_flight == 0

    run(test)


def test_a_timed_out_call_is_interrupted_and_the_calls_behind_it_run_once() -> None:
    async def test(h: Harness) -> None:
        slow_call = h.submit("slow")
        slow = h.result(slow_call, timeout=0.2)
        behind = [h.result(h.submit(name)) for name in ("b", "c")]
        assert await h.kernel.started.get() == "slow"
        with pytest.raises(RemoteTimeout, match=r"slow did not finish within 0\.2 s"):
            await slow
        for name in ("b", "c"):  # refused as aborted after the interrupt, then sent again
            assert await h.kernel.started.get() == name
            h.kernel.finish()
        assert [(await task).fields["status"] for task in behind] == [Status.OK, Status.OK]
        assert h.kernel.ran == ["slow", "b", "c"]  # each ran exactly once
        assert [fn for fn, _ in h.kernel.received] == ["slow", "b", "c", "b", "c"]
        assert h.kernel.interrupts == 1
        assert h.progress == ["interrupting the remote call"]
        # The interrupted call's result was acknowledged, so the kernel forgets it.
        slow_id = slow_call.attempt.future.result().fields["id"]
        while await h.kernel.acks.get() != slow_id:
            pass

    run(test)


def test_a_result_that_arrives_as_the_timeout_fires_is_kept() -> None:
    async def test(h: Harness) -> None:
        h.kernel.too_late = True
        reply = h.result(h.submit("quick enough"), timeout=0.2)
        await h.kernel.started.get()
        assert (await reply).fields["status"] == Status.OK
        assert h.kernel.interrupts == 1
        assert not h.kernel.aborting  # resumed after the interrupt
        after = h.result(h.submit("after"))
        assert await h.kernel.started.get() == "after"
        h.kernel.finish()
        assert (await after).fields["status"] == Status.OK

    run(test)


def test_a_kernel_that_ignores_the_interrupt_is_replaced() -> None:
    async def test(h: Harness) -> None:
        h.kernel.deaf = True
        stuck = h.result(h.submit("stuck"), timeout=0.1)
        await h.kernel.started.get()
        with pytest.raises(RemoteTimeout):
            await stuck
        assert h.replaced.is_set()
        assert isinstance(h.client.failure, KernelDied)

    run(test, grace=0.2)


def test_cancelling_a_queued_call_lets_the_calls_ahead_of_it_finish() -> None:
    async def test(h: Harness) -> None:
        ahead = h.result(h.submit("ahead"))
        doomed = h.result(h.submit("doomed"))
        assert await h.kernel.started.get() == "ahead"
        doomed.cancel()
        await asyncio.sleep(0.2)  # "ahead" works on a while after the cancellation
        assert h.kernel.interrupts == 0  # an interrupt now would stop "ahead"
        h.kernel.finish()
        assert (await ahead).fields["status"] == Status.OK
        assert await h.kernel.started.get() == "doomed"
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert h.kernel.interrupts == 1
        assert h.kernel.ran == ["ahead", "doomed"]

    run(test)


def test_a_function_the_kernel_forgot_is_sent_again() -> None:
    async def test(h: Harness) -> None:
        first = h.result(h.submit("f"))
        await h.kernel.started.get()
        h.kernel.finish()
        await first
        h.kernel.functions.clear()  # evicted from the agent's cache
        second = h.result(h.submit("f"))
        await h.kernel.started.get()
        h.kernel.finish()
        assert (await second).fields["status"] == Status.OK
        assert h.kernel.received == [("f", True), ("f", False), ("f", True)]
        assert h.kernel.ran == ["f", "f"]

    run(test)


def test_a_call_refused_every_time_is_given_up() -> None:
    async def test(h: Harness) -> None:
        h.kernel.stubborn = True
        with pytest.raises(ConnectionLost, match="refused could not be delivered"):
            await h.result(h.submit("refused"))
        assert len(h.kernel.received) == MAX_SENDS
        assert h.kernel.ran == []

    run(test)


def test_colab_requests_are_answered_only_while_one_of_our_calls_runs() -> None:
    """A request from another session, or from code left running after our call ended, is not
    answered; one made while our call runs is. The reader handles messages in order, so once a
    later request is answered, the earlier ones have been dropped."""

    async def test(h: Harness) -> None:
        asked: asyncio.Queue[str] = asyncio.Queue()

        async def answer(msg: Message) -> dict[str, Any]:
            asked.put_nowait(msg.content["request"]["who"])
            return {}

        h.client.on_colab_request = answer
        ours = h.client.session_id
        running = h.result(h.submit("first"))
        assert await h.kernel.started.get() == "first"
        h.kernel.colab_request("another-session", "a second client")
        h.kernel.colab_request(ours, "our call")
        assert await asked.get() == "our call"
        h.kernel.finish()
        await running
        h.kernel.colab_request(ours, "a thread our call left behind")
        again = h.result(h.submit("second"))
        assert await h.kernel.started.get() == "second"
        h.kernel.colab_request(ours, "our next call")
        assert await asked.get() == "our next call"
        h.kernel.finish()
        await again
        assert asked.empty()

    run(test)


# -- order across a dropped connection ----------------------------------------------------------


def dropped(h: Harness) -> asyncio.Queue[ConnectionLost]:
    """Drops the client notices, for the test to reconnect when it chooses."""
    noticed: asyncio.Queue[ConnectionLost] = asyncio.Queue()
    h.client.on_disconnect = noticed.put_nowait
    return noticed


def test_a_call_lost_in_transit_runs_before_calls_made_during_the_reconnection() -> None:
    async def test(h: Harness) -> None:
        noticed = dropped(h)
        h.kernel.lose_next_call = True
        first = h.result(h.submit("first"))
        await h.kernel.call_lost.wait()
        link = h.kernel.drop()
        await noticed.get()
        later = [h.result(h.submit(name)) for name in ("second", "third")]
        await h.client.reconnect(link)
        for name in ("first", "second", "third"):
            assert await h.kernel.started.get() == name
            h.kernel.finish()
        await asyncio.gather(first, *later)
        assert h.kernel.ran == ["first", "second", "third"]

    run(test)


def test_a_call_running_during_a_drop_is_fetched_and_holds_later_calls_back() -> None:
    async def test(h: Harness) -> None:
        noticed = dropped(h)
        first = h.result(h.submit("first"))
        assert await h.kernel.started.get() == "first"
        link = h.kernel.drop()
        await noticed.get()
        second = h.result(h.submit("second"))
        await h.client.reconnect(link)
        h.kernel.finish()  # its result is lost with the old connection; the fetch gets it
        assert (await first).fields["status"] == Status.OK
        assert await h.kernel.started.get() == "second"
        h.kernel.finish()
        await second
        assert h.kernel.ran == ["first", "second"]
        assert [fn for fn, _ in h.kernel.received] == ["first", "second"]  # none sent twice

    run(test)


def test_an_answer_to_the_reconnection_fetch_lost_on_the_way_is_asked_for_again() -> None:
    async def test(h: Harness) -> None:
        noticed = dropped(h)
        h.kernel.lose_next_call = True
        first = h.result(h.submit("first"))
        await h.kernel.call_lost.wait()
        link = h.kernel.drop()
        await noticed.get()
        h.kernel.lose_fetch_answers = 1
        await h.client.reconnect(link)
        assert await h.kernel.started.get() == "first"
        h.kernel.finish()
        await first
        assert h.kernel.ran == ["first"]

    run(test)
