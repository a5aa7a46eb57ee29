"""``/colab/tty`` on a runtime's proxy: a shell on a real pseudo-terminal, as Colab serves it.

The proxy token comes in the ``X-Colab-Runtime-Proxy-Token`` header (Colab's VS Code extension)
or the ``colab-runtime-proxy-token`` query parameter (Google's CLI), checked as for every proxy
request. Frames are JSON text both ways: ``{"data": keys}`` and ``{"cols": N, "rows": M}`` in,
``{"data": output}`` out; anything else is ignored. The shell (``/bin/bash``, else ``/bin/sh``)
runs in the runtime's content root with the kernels' environment. Closing the socket kills every
process in the shell's session; the shell exiting closes the socket.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import tornado.websocket

from ..._workspace.terminal import PtyShell, check_size
from ...exceptions import ConfigurationError
from ._proxy import ProxyWebSocketHandler
from ._redact import LOG


class TtyHandler(ProxyWebSocketHandler):
    """One terminal: the socket's life is the shell's life."""

    shell: PtyShell | None = None

    async def open(self, *args: str, **kwargs: str) -> None:
        self.set_nodelay(True)
        try:
            self.shell = PtyShell(self.runtime.root_dir, self._environment())
        except OSError as exc:
            LOG.warning("could not start a terminal shell: %s", exc)
            self.close(1011, "could not start a shell")
            return
        self.proxy.sockets.add(self)
        self.shell.start(self._output)

    def _environment(self) -> dict[str, str]:
        """What the runtime's kernels see (the emulator's environment, the stand-in
        ``google.colab`` on PYTHONPATH), with a terminal type, as Colab's terminal has."""
        env = dict(os.environ)
        for name in ("JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE", "PYTEST_CURRENT_TEST"):
            env.pop(name, None)
        site = self.emulator._site_dir
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH", "")) if p)
        env["TERM"] = "xterm-256color"
        env["PWD"] = self.runtime.root_dir
        return env

    def _output(self, text: str | None) -> None:
        if text is None:
            if self.ws_connection is not None:
                self.close(1000, "the shell exited")
            return
        try:
            written = self.write_message(json.dumps({"data": text}))
        except tornado.websocket.WebSocketClosedError:
            return  # the socket is closing: the shell is being killed
        written.add_done_callback(_ignore_closed)

    async def on_message(self, message: str | bytes) -> None:
        if self.emulator.activity_counts_as_liveness:
            self.runtime.last_alive = self.emulator.clock.monotonic()
        shell = self.shell
        if shell is None:
            return
        try:
            frame: Any = json.loads(message)
        except ValueError:
            LOG.debug("terminal: a frame that is not JSON was dropped")
            return
        if not isinstance(frame, dict):
            return
        keys = frame.get("data")
        if isinstance(keys, str):
            shell.write(keys.encode())
        elif "cols" in frame or "rows" in frame:
            try:
                cols, rows = check_size(frame.get("cols"), frame.get("rows"))
            except ConfigurationError:
                LOG.debug("terminal: a size frame with bad dimensions was dropped")
                return
            shell.resize(cols, rows)

    def on_close(self) -> None:
        self.proxy.sockets.discard(self)
        shell, self.shell = self.shell, None
        if shell is not None:
            shell.kill()  # its own thread reaps it


def _ignore_closed(future: asyncio.Future[None]) -> None:
    """A write to a socket that closed meanwhile is no error: the shell is being killed."""
    if not future.cancelled():
        exc = future.exception()
        if exc is not None and not isinstance(exc, tornado.websocket.WebSocketClosedError):
            LOG.warning("terminal: writing output failed: %r", exc)
