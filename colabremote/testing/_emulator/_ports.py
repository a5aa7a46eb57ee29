"""Per-port proxies: a runtime's other ports, reached as Colab's own client reaches them.

Colab's client asks ``/v1/runtime-proxy-token?endpoint=E&port=N`` and gets a token and URL for
that one port (on Colab an origin of its own, ``https://N-<endpoint>...``, as ``8080-`` is the
Jupyter port's). The emulator answers with a loopback listener per (runtime, port), made on the
first ask. It takes the token as the runtime proxy does (the ``X-Colab-Runtime-Proxy-Token``
header or the ``colab-runtime-proxy-token`` query parameter) and only a token issued for that
port; 401 for a missing or unknown one, 404 once it expired or the runtime is gone. Then it
relays the connection to 127.0.0.1:N on the runtime's machine, with the token taken out of what
the app sees, byte for byte (so streamed bodies and WebSocket frames pass both ways), or answers
502 when nothing listens there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from typing import TYPE_CHECKING

import tornado.httputil

from ..._workspace.ports import MAX_HEAD, Relay, build_head, parse_head, pipe, read_head
from ._model import Runtime
from ._redact import redact_headers, redact_query

if TYPE_CHECKING:
    from . import ColabEmulator

log = logging.getLogger("colabremote.emulator")

_TOKEN_HEADER = "x-colab-runtime-proxy-token"  # noqa: S105 - a header name
_TOKEN_PARAM = "colab-runtime-proxy-token"  # noqa: S105 - a parameter name
#: What the proxy reads and the app never sees.
_PROXY_HEADERS = frozenset({_TOKEN_HEADER, "x-colab-client-agent"})


def _reply(status: int, reason: str, message: str) -> bytes:
    body = (message + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class PortProxy(Relay):
    """The proxy of port ``port`` of one runtime: a listener on 127.0.0.1 of its own."""

    what = "port proxy"

    def __init__(self, runtime: Runtime, emulator: ColabEmulator, port: int) -> None:
        super().__init__(port)
        self.runtime = runtime
        self.emulator = emulator

    async def start(self) -> None:
        await self._listen(0)

    def _refusal(self, token: str | None) -> int | None:
        rt = self.runtime
        if rt.released:
            return 404
        held = rt.port_tokens.get(token or "")
        if held is None or held[0] != self.port:
            return 401
        if self.emulator.clock.time() >= held[1]:
            return 404
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        if head is None:
            return
        first, fields = parse_head(head)
        method, _, rest = first.partition(" ")
        target, _, version = rest.partition(" ")
        split = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qsl(split.query, keep_blank_values=True)
        token = next((v for n, v in fields if n.lower() == _TOKEN_HEADER), None) or next(
            (v for n, v in query if n == _TOKEN_PARAM), None
        )
        status = self._refusal(token)
        if status is None:
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, limit=MAX_HEAD
                )
            except OSError:
                status = 502
        self._log(method, split.path, query, fields, 101 if status is None else status)
        if status is not None:
            writer.write(self._refused(status))
            await writer.drain()
            return
        self._holds(up_writer)
        if self.emulator.activity_counts_as_liveness:
            self.runtime.last_alive = self.emulator.clock.monotonic()
        kept = [(n, v) for n, v in query if n != _TOKEN_PARAM]
        path = split.path + (f"?{urllib.parse.urlencode(kept)}" if kept else "")
        out = [(n, v) for n, v in fields if n.lower() not in _PROXY_HEADERS]
        up_writer.write(build_head(f"{method} {path} {version}", out))
        sending = asyncio.ensure_future(pipe(reader, up_writer))
        try:
            await pipe(up_reader, writer)
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sending
            up_writer.close()

    def _refused(self, status: int) -> bytes:
        where = f"port {self.port} of runtime {self.runtime.endpoint}"
        if status == 502:
            return _reply(502, "Bad Gateway", f"nothing listens on {where}")
        if status == 404:
            return _reply(404, "Not Found", f"the proxy token of {where} expired, or it is gone")
        return _reply(401, "Unauthorized", f"no valid proxy token for {where}")

    def _log(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        fields: list[tuple[str, str]],
        status: int,
    ) -> None:
        """Log the request (secrets redacted) before it is answered; 101: it was relayed."""
        arguments: dict[str, list[bytes]] = {}
        for name, value in query:
            arguments.setdefault(name, []).append(value.encode())
        headers = tornado.httputil.HTTPHeaders()
        for name, value in fields:
            headers.add(name, value)
        self.emulator._record(
            f"port:{self.runtime.endpoint}:{self.port}",
            method,
            path,
            redact_query(arguments),
            status,
            redact_headers(headers),
        )
