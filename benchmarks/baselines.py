"""The yardsticks each benchmark is divided by, measured in the same run on the same kernel.

- A raw ``execute_request("pass")`` round trip (until both the reply and the idle status), over
  ZeroMQ with jupyter_client, or over the kernel WebSocket with the plain ``websockets`` client.
- A plain WebSocket echo of the same bytes between two local processes: the wire's ceiling.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import socket
import struct
import time
import uuid
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import serve

WARMUP = 5
#: The longest one baseline step (an execute) may take before the run fails instead of hanging.
STEP_TIMEOUT = 60.0


def _transfer_timeout(payload: bytes) -> float:
    """A bound for echoing ``payload`` once: generous (5 MB/s), but a hang still ends."""
    return 60.0 + len(payload) / (5 * 1024 * 1024)


def zmq_execute_round_trips(connection_file: str, count: int) -> list[float]:
    """Seconds per raw execute round trip over ZeroMQ: plain sockets and jupyter_client's
    message signing, nothing else, so the baseline is as lean as a client can be."""
    import zmq
    from jupyter_client.session import Session

    with open(connection_file) as f:
        info = json.load(f)
    session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
    context = zmq.Context()
    shell = context.socket(zmq.DEALER)
    iopub = context.socket(zmq.SUB)
    iopub.setsockopt(zmq.SUBSCRIBE, b"")
    address = f"{info['transport']}://{info['ip']}"
    shell.connect(f"{address}:{info['shell_port']}")
    iopub.connect(f"{address}:{info['iopub_port']}")
    poller = zmq.Poller()
    poller.register(shell, zmq.POLLIN)
    poller.register(iopub, zmq.POLLIN)

    def once() -> float:
        started = time.perf_counter()
        msg = session.send(
            shell,
            "execute_request",
            {
                "code": "pass",
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        assert msg is not None  # send() returns the message it sent
        msg_id = msg["header"]["msg_id"]
        reply_seen = idle_seen = False
        while not (reply_seen and idle_seen):
            ready = poller.poll(int(STEP_TIMEOUT * 1000))
            if not ready:
                raise TimeoutError(f"no answer to the baseline's execute in {STEP_TIMEOUT} s")
            for sock, _ in ready:
                _, frames = session.feed_identities(sock.recv_multipart())
                got = session.deserialize(frames)
                if got["parent_header"].get("msg_id") != msg_id:
                    continue
                if sock is shell:
                    reply_seen = True
                elif got["msg_type"] == "status" and got["content"]["execution_state"] == "idle":
                    idle_seen = True
        return time.perf_counter() - started

    try:
        time.sleep(0.5)  # let the iopub subscription reach the kernel
        for _ in range(WARMUP):
            once()
        return [once() for _ in range(count)]
    finally:
        shell.close(0)
        iopub.close(0)
        context.term()


def _header(msg_type: str, session: str) -> dict[str, str]:
    return {
        "msg_id": uuid.uuid4().hex,
        "msg_type": msg_type,
        "username": "bench",
        "session": session,
        "date": "2026-01-01T00:00:00Z",
        "version": "5.3",
    }


def _execute_request(session: str, code: str = "pass") -> tuple[str, str]:
    header = _header("execute_request", session)
    message = {
        "header": header,
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }
    return header["msg_id"], json.dumps(message)


async def execute_on(ws: ClientConnection, session: str, code: str) -> None:
    """One ``execute_request`` over a kernel WebSocket (legacy protocol), until both its reply
    and its idle status are in."""
    msg_id, text = _execute_request(session, code)
    await ws.send(text)
    reply_seen = idle_seen = False
    while not (reply_seen and idle_seen):
        frame = await ws.recv()
        if isinstance(frame, bytes):
            continue
        msg: dict[str, Any] = json.loads(frame)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "execute_reply":
            if msg["content"].get("status") != "ok":
                raise RuntimeError(f"the baseline's execute failed: {msg['content']}")
            reply_seen = True
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            idle_seen = True


async def _ws_round_trips(url: str, headers: dict[str, str], count: int) -> list[float]:
    session = uuid.uuid4().hex
    async with connect(url, additional_headers=headers, max_size=None, compression=None) as ws:
        sock = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(WARMUP + count):
            started = time.perf_counter()
            await asyncio.wait_for(execute_on(ws, session, "pass"), STEP_TIMEOUT)
            times.append(time.perf_counter() - started)
        return times[WARMUP:]


def websocket_execute_round_trips(url: str, headers: dict[str, str], count: int) -> list[float]:
    """Seconds per raw execute round trip over a kernel WebSocket (legacy JSON protocol)."""
    return asyncio.run(_ws_round_trips(url, headers, count))


# -- what a Jupyter server can relay -----------------------------------------------------------

_ECHO_COMM = """
from comm import create_comm as _create
_bench_echo = _create(target_name="bench_echo", comm_id={comm_id!r}, data={{}})
_bench_echo.on_msg(lambda msg: _bench_echo.send(data={{}}, buffers=msg["buffers"]))
"""


def _comm_msg(session: str, comm_id: str, chunk: memoryview) -> bytes:
    """A legacy-protocol binary frame: a comm message carrying one buffer."""
    message = {
        "header": _header("comm_msg", session),
        "parent_header": {},
        "metadata": {},
        "content": {"comm_id": comm_id, "data": {}},
        "channel": "shell",
    }
    head = json.dumps(message).encode()
    return struct.pack("!3I", 2, 12, 12 + len(head)) + head + chunk


async def _relay_echo(
    url: str, headers: dict[str, str], payload: bytes, repeats: int, chunk: int
) -> list[float]:
    session, comm_id = uuid.uuid4().hex, uuid.uuid4().hex
    async with connect(url, additional_headers=headers, max_size=None, compression=None) as ws:
        ws.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.wait_for(
            execute_on(ws, session, _ECHO_COMM.format(comm_id=comm_id)), STEP_TIMEOUT
        )
        view = memoryview(payload)

        async def send() -> None:
            for offset in range(0, len(view), chunk):
                await ws.send(_comm_msg(session, comm_id, view[offset : offset + chunk]))

        async def receive() -> None:
            received = 0
            while received < len(view):
                frame = await ws.recv()
                if not isinstance(frame, bytes):
                    continue  # status messages
                (count,) = struct.unpack_from("!I", frame, 0)
                if count == 2:  # the echoed comm message and its one buffer
                    received += len(frame) - struct.unpack_from("!I", frame, 8)[0]

        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            # Both at once, or large echoes deadlock; bounded, so a lost message cannot hang.
            await asyncio.wait_for(asyncio.gather(send(), receive()), _transfer_timeout(payload))
            times.append(time.perf_counter() - started)
        return times


def relay_echo_seconds(
    url: str, headers: dict[str, str], payload: bytes, repeats: int, chunk: int
) -> list[float]:
    """Seconds to echo ``payload`` through a Jupyter server and its kernel with nothing else:
    comm messages of ``chunk`` bytes that a three-line comm handler sends straight back. No
    pickling, no reassembly: what the server in the middle lets any client reach."""
    return asyncio.run(_relay_echo(url, headers, payload, repeats, chunk))


# -- the wire's ceiling ------------------------------------------------------------------------


def _echo_server(port_queue: Any) -> None:
    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, max_size=None, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            port_queue.put(port)
            await asyncio.Future()

    asyncio.run(main())


class EchoServer:
    """A plain WebSocket echo server in another process."""

    def __enter__(self) -> EchoServer:
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        self.process = context.Process(target=_echo_server, args=(queue,), daemon=True)
        self.process.start()
        self.url = f"ws://127.0.0.1:{queue.get(timeout=60)}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.join(10)

    def echo_seconds(self, payload: bytes, repeats: int, chunk: int) -> list[float]:
        """Seconds to send ``payload`` and receive it back, in messages of ``chunk`` bytes (the
        same message size colabremote uses, so both sides pay the same framing)."""

        async def run() -> list[float]:
            async with connect(self.url, max_size=None, compression=None) as ws:
                view = memoryview(payload)

                async def send() -> None:
                    for offset in range(0, len(view), chunk):
                        await ws.send(view[offset : offset + chunk])

                async def receive() -> None:
                    received = 0
                    while received < len(view):
                        received += len(await ws.recv())

                times = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    # Sending and receiving at once: a client that sent everything first would
                    # stall once the unread echoes filled the buffers (about 128 MB).
                    await asyncio.wait_for(
                        asyncio.gather(send(), receive()), _transfer_timeout(payload)
                    )
                    times.append(time.perf_counter() - started)
                return times

        return asyncio.run(run())


__all__ = [
    "EchoServer",
    "execute_on",
    "relay_echo_seconds",
    "websocket_execute_round_trips",
    "websockets",
    "zmq_execute_round_trips",
]
