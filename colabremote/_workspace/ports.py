"""A port on the runtime reached from here: ``with s.forward(6006) as url``.

A listener on 127.0.0.1 takes each connection, rewrites its request head for the route the
backend gives (the runtime proxy's URL for that port and the headers it needs, such as Colab's
per-port proxy token), and then relays bytes both ways. Bodies stream (nothing is buffered
whole) and a WebSocket upgrade is just a connection that keeps going after ``101``. Each
connection carries one request (``Connection: close`` upstream), so every request gets the
route's current token, refreshed before it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from .._backends.base import PortRoute
from .._tls import verify_setting
from ..exceptions import ColabRemoteError, ConfigurationError
from . import Caller, by_value

log = logging.getLogger("colabremote.ports")

#: The longest request or response head the relay reads before giving up on a connection.
MAX_HEAD = 64 * 1024
#: How many bytes one read moves across.
CHUNK = 64 * 1024
#: Request headers never relayed: connection-level ones (rewritten here) and proxy credentials
#: a local client might send (the route adds the proxy's own).
_DROP = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "x-colab-runtime-proxy-token",
        "x-colab-client-agent",
    }
)
#: Answers from the proxy that mean "refresh the token and ask again" (Colab's proxy says 404
#: for an expired token, 401 for an unknown one).
_STALE = (401, 404)

RouteSource = Callable[[bool], Awaitable[PortRoute]]
"""Gives the route to the port; ``True`` asks for a fresh token (the last one was refused)."""


def check_port(name: str, value: object, *, zero_ok: bool = False) -> int:
    """``value`` as a TCP port number, or a ConfigurationError naming ``name``."""
    low = 0 if zero_ok else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        hint = " (0: any free port)" if zero_ok else ""
        raise ConfigurationError(
            f"{name}={value!r} is not a TCP port; pass a number from {low} to 65535{hint}, "
            "such as 6006"
        )
    return value


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The head of an HTTP message (through the blank line), or None at a clean end of stream.

    Raises ValueError when the head is longer than MAX_HEAD or the stream ends inside it.
    """
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ValueError("the connection ended inside an HTTP head") from None
    except asyncio.LimitOverrunError:
        raise ValueError(f"an HTTP head longer than {MAX_HEAD} bytes") from None


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The first line and the header fields of an HTTP head."""
    lines = head.decode("latin-1").split("\r\n")
    fields: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError("a malformed HTTP header line")
        fields.append((name, value.strip()))
    return lines[0], fields


def build_head(first: str, fields: list[tuple[str, str]]) -> bytes:
    return ("\r\n".join([first, *(f"{n}: {v}" for n, v in fields)]) + "\r\n\r\n").encode("latin-1")


def status_of(head: bytes) -> int:
    """The status code of a response head (0 when it has none)."""
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until the end of the stream, then half-close ``writer``."""
    while chunk := await reader.read(CHUNK):
        writer.write(chunk)
        await writer.drain()
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()


def upstream_head(
    route: PortRoute, first: str, fields: list[tuple[str, str]], upgrade: bool
) -> bytes:
    """The request head as the route's proxy gets it: its host, its path prefix and headers,
    and one request per connection (unless it is a WebSocket upgrade)."""
    split = urlsplit(route.url)
    method, target, version = first.split(" ")
    names = {n.lower() for n in route.headers}
    out = [("Host", split.netloc)]
    out += [(n, v) for n, v in fields if n.lower() not in _DROP and n.lower() not in names]
    out += list(route.headers.items())
    out.append(("Connection", "Upgrade" if upgrade else "close"))
    return build_head(f"{method} {split.path.rstrip('/')}{target} {version}", out)


def closing(answer: bytes) -> bytes:
    """A response head that tells the client the connection ends with this response, so that
    it never sends a second request on a connection about to close."""
    first, fields = parse_head(answer)
    kept = [(n, v) for n, v in fields if n.lower() not in ("connection", "keep-alive")]
    return build_head(first, [*kept, ("Connection", "close")])


def _error_reply(status: int, reason: str, body: str) -> bytes:
    data = (body + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


class Relay:
    """A listener on 127.0.0.1 whose connections each run :meth:`_handle`; stopping it ends
    them all. The forward here and the emulator's per-port proxies are both one."""

    #: Names the listener in log lines.
    what = "relay"

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = ""
        self._server: asyncio.Server | None = None
        #: Open connections: each one's task and the streams it has open (the client's, and
        #: the one upstream), aborted when the listener stops.
        self._connections: dict[asyncio.Task[None], list[asyncio.StreamWriter]] = {}

    async def _listen(self, local_port: int) -> str:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", local_port, limit=MAX_HEAD
        )
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self.url

    def _holds(self, upstream: asyncio.StreamWriter) -> None:
        """The current connection also has ``upstream`` open: abort it with the connection."""
        task = asyncio.current_task()
        if task in self._connections:
            self._connections[task].append(upstream)

    async def stop(self) -> None:
        """Stop listening and end every open connection."""
        if self._server is not None:
            self._server.close()
        for writers in list(self._connections.values()):
            for open_writer in writers:
                open_writer.transport.abort()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = [writer]
        try:
            await self._handle(reader, writer)
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            log.debug(
                "%s of port %d: a connection ended: %s", self.what, self.port, type(exc).__name__
            )
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class Forwarder(Relay):
    """The local listener of one forward; relays to the route ``source`` gives."""

    what = "forward"

    def __init__(self, port: int, source: RouteSource) -> None:
        super().__init__(port)
        self._source = source

    async def start(self, local_port: int) -> str:
        """Listen on 127.0.0.1 (only) and return the local URL."""
        try:
            return await self._listen(local_port)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot listen on 127.0.0.1:{local_port} ({exc.strerror or exc}); pass another "
                "local_port=, or 0 for any free port"
            ) from None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        if head is None:
            return
        first, fields = parse_head(head)
        parts = first.split(" ")
        if len(parts) != 3 or not parts[1].startswith("/"):
            writer.write(_error_reply(400, "Bad Request", "colabremote: a malformed request"))
            await writer.drain()
            return
        method, target, version = parts
        upgrade = any(n.lower() == "upgrade" for n, _ in fields)
        length = next((v for n, v in fields if n.lower() == "content-length"), "0")
        chunked = any(n.lower() == "transfer-encoding" for n, _ in fields)
        # Only a request without a body can be sent again after the proxy refused its token.
        again = not chunked and length.strip() in ("", "0")
        fresh = False
        while True:
            try:
                route = await self._source(fresh)
            except ColabRemoteError as exc:  # no token for the port: the runtime is gone, ...
                log.warning("forward of port %d: %s", self.port, exc)
                route = None
            up = None if route is None else await self._open(route)
            if route is None or up is None:
                reason = f"colabremote: cannot reach the proxy of port {self.port}"
                writer.write(_error_reply(502, "Bad Gateway", reason))
                await writer.drain()
                return
            up_reader, up_writer = up
            self._holds(up_writer)
            up_writer.write(upstream_head(route, f"{method} {target} {version}", fields, upgrade))
            sending = asyncio.ensure_future(pipe(reader, up_writer)) if not again else None
            try:
                answer = await read_head(up_reader)
                if answer is None:
                    raise ValueError("the proxy closed the connection without an answer")
                if again and not fresh and status_of(answer) in _STALE and not route.direct:
                    fresh = True  # the token was refused: one more try with a new one
                    continue
                if again:
                    sending = asyncio.ensure_future(pipe(reader, up_writer))
                writer.write(answer if upgrade else closing(answer))
                await pipe(up_reader, writer)
                return
            finally:
                if sending is not None:
                    sending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, OSError):
                        await sending
                up_writer.close()

    async def _open(
        self, route: PortRoute
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        split = urlsplit(route.url)
        secure = split.scheme == "https"
        host = split.hostname or "127.0.0.1"
        port = split.port or (443 if secure else 80)
        shared = verify_setting()
        context: ssl.SSLContext | bool | None = None
        if secure:
            context = shared if isinstance(shared, ssl.SSLContext) else ssl.create_default_context()
        try:
            return await asyncio.open_connection(host, port, ssl=context, limit=MAX_HEAD)
        except OSError as exc:
            log.warning("forward of port %d: cannot reach %s: %s", self.port, host, exc)
            return None


def _listening_on_kernel(port: int) -> bool:
    """Runs in the kernel: whether something accepts TCP connections on 127.0.0.1:``port``."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return True
    except OSError:
        return False


_LISTENING = by_value(_listening_on_kernel, "colabremote-ports")


async def check_listening(session: Caller, port: int) -> None:
    """Raise a ConfigurationError naming ``port`` when nothing listens on it on the runtime."""
    if not await session.call(_LISTENING, (port,), timeout=60, name="forward"):
        raise ConfigurationError(
            f"nothing listens on port {port} on the runtime; start the server there first "
            f"(for example `tensorboard --logdir runs --port {port}` in a remote call or "
            "s.shell), then forward the port"
        )


class Forwarding(Protocol):
    """What a forward needs from a session: run a function on the kernel, and its backend."""

    backend: Any

    async def call(
        self, fn: Callable[..., Any], args: Sequence[Any], *, timeout: float | None, name: str
    ) -> Any: ...


async def start_forward(session: Forwarding, port: int, local_port: int) -> Forwarder | str:
    """Check that something listens on ``port`` on the runtime, then start a listener for it
    (or, where the port is on this machine, return its URL: nothing to relay)."""
    await check_listening(session, port)

    async def source(fresh: bool) -> PortRoute:
        # Asked for each connection: the session may have a new backend since (a new kernel).
        route: PortRoute = await session.backend.port_route(port, fresh=fresh)
        return route

    route = await source(False)
    if route.direct:
        if local_port not in (0, port):
            raise ConfigurationError(
                f"port {port} is on this machine already (the kernel runs here), so it cannot "
                f"be forwarded to local_port={local_port}; leave local_port out"
            )
        return route.url
    forwarder = Forwarder(port, source)
    await forwarder.start(local_port)
    return forwarder
