"""The kernel WebSocket transport against a real jupyter_server: how it treats its socket, and
the credentials in its headers."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

import colabremote as cr
from colabremote._kernel.websocket import WebSocketTransport
from colabremote.exceptions import ServerError
from colabremote.testing import JupyterServer

PROXY_SECRET = "proxy-secret-4b1d2c"


def noop() -> None:
    return None


class RecordingSocket:
    """Passes socket options through to the real socket and remembers them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.options: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, name: int, value: int) -> None:
        self.options.append((level, name, value))
        self.sock.setsockopt(level, name, value)


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")
@pytest.mark.parametrize("quick_ack", [True, False])
def test_received_messages_are_acknowledged_at_once(
    jupyter_server: JupyterServer, quick_ack: bool
) -> None:
    """Quick-ACK is armed again after every message (a stock server's Nagle stall), or never."""
    with cr.Session(
        "jupyter", url=jupyter_server.url, token=jupyter_server.token, progress=False
    ) as session:
        client = session._core.client
        assert client is not None
        transport: Any = client.transport
        recorder = RecordingSocket(transport._socket)
        transport._socket = recorder
        transport.quick_ack = quick_ack
        session.remote(noop)()
        session.exec("pass")  # returns after its reply and its idle status have arrived
        acks = [o for o in recorder.options if o[1] == socket.TCP_QUICKACK]
        if quick_ack:
            # The call's result, then the execute's busy, input, reply and idle, at the least.
            assert len(acks) >= 5
            assert all(o == (socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1) for o in acks)
        else:
            assert acks == []


def test_a_redirect_is_refused_and_the_headers_never_reach_the_other_address() -> None:
    """A 302 to another listener fails the connect clearly; the second listener sees nothing."""

    async def main() -> tuple[ServerError, list[bytes]]:
        seen: list[bytes] = []

        async def elsewhere(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(await reader.read(65536))
            writer.close()

        async def redirecting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            target = f"ws://127.0.0.1:{other_port}/api/kernels/k/channels"
            writer.write(
                f"HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n".encode()
            )
            await writer.drain()
            writer.close()

        other = await asyncio.start_server(elsewhere, "127.0.0.1", 0)
        other_port = other.sockets[0].getsockname()[1]
        first = await asyncio.start_server(redirecting, "127.0.0.1", 0)
        port = first.sockets[0].getsockname()[1]
        async with first, other:
            with pytest.raises(ServerError) as info:
                await WebSocketTransport.open(
                    f"ws://127.0.0.1:{port}/api/kernels/k/channels",
                    headers={"X-Colab-Runtime-Proxy-Token": PROXY_SECRET},
                    open_timeout=10,
                )
        return info.value, seen

    error, seen = asyncio.run(main())
    assert error.status == 302
    assert "redirect" in str(error)
    assert PROXY_SECRET not in str(error)
    assert seen == []


def test_websockets_debug_log_never_shows_the_credentials(
    jupyter_server: JupyterServer, caplog: pytest.LogCaptureFixture
) -> None:
    """websockets logs every handshake header at DEBUG: ours come out redacted."""
    caplog.set_level(logging.DEBUG, logger="websockets")
    with cr.Session(
        "jupyter",
        url=jupyter_server.url,
        token=jupyter_server.token,
        headers={"X-Colab-Runtime-Proxy-Token": PROXY_SECRET},
        progress=False,
    ) as session:
        session.exec("pass")
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("websockets")]
    assert any("Authorization: [redacted]" in line for line in logged)
    assert any("X-Colab-Runtime-Proxy-Token: [redacted]" in line for line in logged)
    text = "\n".join(logged) + caplog.text
    assert jupyter_server.token not in text
    assert PROXY_SECRET not in text
