"""Serving a tornado application from a thread of its own, on 127.0.0.1.

The emulator's state lives on this thread's event loop; other threads (a test, a session's loop)
reach it through :meth:`ServerThread.call` and :meth:`ServerThread.on_loop`, which wait for the
answer.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import tornado.httpserver
import tornado.netutil
import tornado.web

T = TypeVar("T")


class ServerThread:
    """One HTTP server on a free 127.0.0.1 port, with its own thread and event loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.url = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: tornado.httpserver.HTTPServer | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(
        self,
        make_app: Callable[[], tornado.web.Application],
        on_started: Callable[[asyncio.AbstractEventLoop], None],
    ) -> None:
        """Bind a free port, build the app, hand the new loop to ``on_started``, and wait."""
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
        self.port = sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            try:
                self._server = tornado.httpserver.HTTPServer(make_app())
                self._server.add_sockets(sockets)
                on_started(loop)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = self.loop = None
            raise failure[0]

    def stop(self, before: Callable[[], Awaitable[None]], timeout: float = 60) -> None:
        """Run ``before()`` on the loop, stop serving, then end the loop and its thread."""
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            try:
                await before()
            finally:
                if self._server is not None:
                    self._server.stop()
                    await self._server.close_all_connections()

        try:
            self.call(shutdown(), timeout=timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            self.loop = self._thread = self._server = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the loop from another thread and wait for its result."""
        if self.loop is None:
            coro.close()
            raise RuntimeError("the emulator is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the loop (where all state changes happen) and return its result.

        Called on the loop's own thread, or before the server starts, it just runs ``fn()``.
        """
        if self.loop is None or self._thread is threading.current_thread():
            return fn()

        async def run() -> T:
            return fn()

        return self.call(run())
