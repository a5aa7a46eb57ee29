"""The kernel WebSocket transport against a real jupyter_server: how it treats its socket."""

from __future__ import annotations

import socket
from typing import Any

import pytest

import colabremote as cr
from colabremote.testing import JupyterServer


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
