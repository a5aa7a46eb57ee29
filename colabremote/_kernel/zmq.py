"""Messages to a kernel on this machine, over its ZeroMQ sockets (through jupyter_client)."""

from __future__ import annotations

from collections import deque
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.asynchronous.client import AsyncKernelClient

from ..exceptions import ConnectionLost
from .messages import Message
from .transport import Transport

_CHANNELS = ("shell", "iopub", "stdin", "control")


class ZMQTransport(Transport):
    """Reads the shell, iopub, stdin and control sockets of a jupyter_client kernel client.

    Buffers arrive as zero-copy views of ZeroMQ frames, and go out without copies.
    """

    max_message_bytes = 256 * 1024 * 1024

    def __init__(self, client: AsyncKernelClient) -> None:
        self._client = client
        self._session = client.session
        self._sockets: dict[str, zmq.asyncio.Socket] = {}
        self._names: dict[Any, str] = {}
        self._poller = zmq.asyncio.Poller()
        self._ready: deque[Message] = deque()
        self._closed = False
        for name in _CHANNELS:
            channel = getattr(client, f"{name}_channel")
            socket = channel.socket
            self._sockets[name] = socket
            self._names[socket] = name
            self._poller.register(socket, zmq.POLLIN)

    async def send(self, msg: Message) -> None:
        if self._closed:
            raise ConnectionLost("the kernel connection is closed")
        wire = {
            "header": msg.header,
            "msg_id": msg.header["msg_id"],
            "msg_type": msg.header["msg_type"],
            "parent_header": msg.parent_header,
            "metadata": msg.metadata,
            "content": msg.content,
        }
        self._session.send(self._sockets[msg.channel], wire, buffers=msg.buffers or None)

    async def receive(self) -> Message:
        while not self._ready:
            if self._closed:
                raise ConnectionLost("the kernel connection is closed")
            events = await self._poller.poll()
            for socket, _ in events:
                name = self._names[socket]
                while True:
                    try:
                        frames = await socket.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._ready.append(self._decode(name, frames))
        return self._ready.popleft()

    def _decode(self, channel: str, frames: list[zmq.Frame]) -> Message:
        _, parts = self._session.feed_identities(frames, copy=False)
        msg = self._session.deserialize(parts, content=True, copy=False)
        buffers = [memoryview(b.buffer if isinstance(b, zmq.Frame) else b) for b in msg["buffers"]]
        return Message(
            channel,
            msg["header"],
            msg["parent_header"],
            msg["metadata"],
            msg["content"],
            buffers,
        )

    async def close(self) -> None:
        self._closed = True
        self._client.stop_channels()
