"""Faults a test puts on a session from outside: the emulator behind it, a dropped connection.

Both reach into a session's private parts, each through one private function at the bottom of
this module, so that a change of those internals is mended in one place.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._api import AsyncSession, Session
from .._kernel.websocket import WebSocketTransport
from ._emulator import ColabEmulator
from ._emulator.backend import EmulatorBackend


def emulator_of(session: Session | AsyncSession) -> ColabEmulator:
    """The :class:`ColabEmulator` a ``backend="emulator"`` session started for itself.

    With it a test can inject faults into, or look at the requests of, the session's own
    emulator. It exists from the moment the session is made, and serves once it is open.
    """
    backend = _backend(session)
    if not isinstance(backend, EmulatorBackend):
        raise TypeError(
            f"a {session.backend!r} session has no emulator of its own: emulator_of needs a "
            'Session(backend="emulator")'
        )
    return backend.emulator


def drop_connection(session: Session | AsyncSession, *, timeout: float = 10.0) -> None:
    """Cut the session's kernel WebSocket as a network failure would, and return once it is cut.

    The TCP connection is aborted without a close frame; the session notices, reconnects, and
    calls in flight still finish, exactly once. Works for sessions whose kernel is behind a
    WebSocket: the ``jupyter``, ``colab`` and ``emulator`` backends.
    """
    connection, loop = _kernel_connection(session)

    async def abort() -> None:
        connection.abort()

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:  # called on the session's own loop, e.g. from an output callback
        connection.abort()
    else:
        asyncio.run_coroutine_threadsafe(abort(), loop).result(timeout)


def _backend(session: Session | AsyncSession) -> Any:
    """The session's backend object (session internals)."""
    return session._core.backend


def _kernel_connection(
    session: Session | AsyncSession,
) -> tuple[asyncio.Transport, asyncio.AbstractEventLoop]:
    """The socket transport under the session's kernel WebSocket, and the loop it lives on
    (session and transport internals)."""
    client = session._core.client
    if client is None:
        raise RuntimeError("the session has no kernel connection yet: open it or make a call")
    transport = client.transport
    if not isinstance(transport, WebSocketTransport):
        raise TypeError(
            f"a {session.backend!r} session has no kernel WebSocket: drop_connection works for "
            "the jupyter, colab and emulator backends"
        )
    return transport._ws.transport, session._loop.loop
