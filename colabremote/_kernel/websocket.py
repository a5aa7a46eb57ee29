"""Messages to a kernel behind a Jupyter server: ``/api/kernels/{id}/channels`` over a WebSocket.

Speaks the v1 binary subprotocol when the server offers it, otherwise the legacy JSON protocol
(text frames, binary frames for messages with buffers), which is what Colab's proxy speaks.

The connection's headers carry credentials (the server's token, Colab's proxy token): a redirect
is refused rather than followed, so they never travel to another address, and websockets' own
DEBUG log of the handshake shows them redacted.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from .._http import server_reason
from ..exceptions import AuthenticationError, ConnectionLost, ServerError
from .messages import (
    V1_SUBPROTOCOL,
    Buffer,
    Message,
    decode_legacy,
    decode_v1,
    encode_legacy,
    encode_v1,
)
from .transport import Transport

try:  # websockets' C masking, which its own frames use
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build without the C extension
    from websockets.utils import apply_mask

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only
_OP_BINARY = 0x2
#: Headers whose values are credentials; so is any header whose name contains one of _SECRET_WORDS.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_SECRET_WORDS = ("token", "secret", "key", "auth", "session")
_REDACTED = "[redacted]"


def secret_values(headers: Mapping[str, str]) -> list[str]:
    """The credential values in ``headers`` (and the credential after an auth scheme), longest
    first, to be blanked out of anything logged."""
    found: set[str] = set()
    for name, value in headers.items():
        lowered = name.lower()
        if value and (lowered in _SECRET_HEADERS or any(w in lowered for w in _SECRET_WORDS)):
            found.add(value)
            scheme, _, credential = value.partition(" ")
            if credential and scheme.isalpha():
                found.add(credential.strip())
    return sorted((v for v in found if v), key=len, reverse=True)


if TYPE_CHECKING:
    _LoggerAdapter = logging.LoggerAdapter[logging.Logger]
else:  # subscriptable at run time only from Python 3.11
    _LoggerAdapter = logging.LoggerAdapter


class RedactingLogger(_LoggerAdapter):
    """A logger for websockets that blanks our credentials out of every message it logs.

    websockets logs each handshake header at DEBUG; this is passed as the connection's logger,
    so whatever level the user turns on, the token and Authorization values never reach a log.
    """

    def __init__(self, logger: logging.Logger, secret_texts: Iterable[str]) -> None:
        super().__init__(logger, {})
        self._secrets = tuple(secret_texts)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        text = str(msg) % args if args else str(msg)
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        self.logger.log(level, "%s", text, **kwargs)


class _ConnectWithoutRedirects(connect):
    """websockets' ``connect``, answering a redirect with an error instead of following it."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


async def open_websocket(
    url: str,
    *,
    headers: Mapping[str, str],
    what: str,
    subprotocols: Sequence[str] | None = None,
    open_timeout: float = 30.0,
    max_size: int | None = 2**20,
    write_limit: int = 2**15,
) -> ClientConnection:
    """A WebSocket to a Jupyter server or Colab's proxy (``what`` names it in errors): no
    redirect followed, credentials redacted from websockets' log, and a refused upgrade turned
    into ServerError (AuthenticationError for 401 and 403) with the server's own reason."""
    logger = RedactingLogger(logging.getLogger("websockets.client"), secret_values(headers))
    try:
        return await _ConnectWithoutRedirects(
            url,
            logger=logger,
            additional_headers=dict(headers),
            subprotocols=[websockets.Subprotocol(p) for p in subprotocols]
            if subprotocols
            else None,
            max_size=max_size,
            compression=None,  # tensors do not compress; deflate would only cost CPU
            open_timeout=open_timeout,
            ping_interval=30,
            ping_timeout=None,  # a long call may keep the server's side busy; never time out
            write_limit=write_limit,
        )
    except websockets.InvalidStatus as exc:
        status = exc.response.status_code
        if 300 <= status < 400:
            raise ServerError(
                f"the server answered {what} with a redirect (HTTP {status}); "
                "colabremote does not follow it, which would send the connection's "
                "credentials to another address. Use the server's final URL.",
                status=status,
            ) from None
        answer = exc.response
        reason = server_reason(
            status,
            answer.reason_phrase,
            answer.headers.get("Content-Type"),
            answer.body or b"",
            *secret_values(headers),
        )
        refused = f"the server refused {what} (HTTP {status})"
        if status in (401, 403):
            why = reason or "check the token"  # the token, unless the server says otherwise
            raise AuthenticationError(f"{refused}: {why}", status=status) from None
        raise ServerError(refused + (f": {reason}" if reason else ""), status=status) from None
    except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
        raise ConnectionLost(f"could not open {what}: {exc}") from None


def masked_frame(pieces: Sequence[Buffer], mask: bytes) -> list[bytes]:
    """One final binary WebSocket frame (RFC 6455 5.2) holding ``pieces`` back to back, masked.

    Each piece is masked on its own, with the key turned to where the piece starts, so every
    byte is copied once (by the masking) and the pieces are never joined first.
    """
    length = sum(memoryview(p).nbytes for p in pieces)
    if length < 126:
        header = struct.pack("!BB", 0x80 | _OP_BINARY, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | _OP_BINARY, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | _OP_BINARY, 0x80 | 127, length)
    out = [header + mask]
    offset = 0
    for piece in pieces:
        size = memoryview(piece).nbytes
        if size:  # never an empty write: websockets reads b"" as "half-close the socket"
            turn = offset % 4
            out.append(apply_mask(memoryview(piece).cast("B"), mask[turn:] + mask[:turn]))
            offset += size
    return out


class WebSocketTransport(Transport):
    """One kernel WebSocket. Build it with :meth:`open`."""

    #: Stock jupyter_server drops inbound messages over 10 MiB (tornado's default).
    max_message_bytes = 8 * 1024 * 1024
    #: Acknowledge every message at once (Linux): see :meth:`_ack_now`. The benchmarks turn it
    #: off to show what a platform without ``TCP_QUICKACK`` gets from a stock server.
    quick_ack = True

    def __init__(self, connection: ClientConnection) -> None:
        self._ws = connection
        self.v1 = connection.subprotocol == V1_SUBPROTOCOL
        self._socket: socket.socket | None = connection.transport.get_extra_info("socket")

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        headers: Mapping[str, str],
        use_v1: bool = True,
        open_timeout: float = 30.0,
    ) -> WebSocketTransport:
        connection = await open_websocket(
            url,
            headers=headers,
            what="the kernel WebSocket",
            subprotocols=[V1_SUBPROTOCOL] if use_v1 else None,
            open_timeout=open_timeout,
            max_size=None,  # results arrive in chunks well under any limit we would pick
            write_limit=4 * 1024 * 1024,
        )
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(connection)

    async def send(self, msg: Message) -> None:
        frame = encode_v1(msg) if self.v1 else encode_legacy(msg)
        try:
            if isinstance(frame, str):
                await self._ws.send(frame)
            elif len(frame) == 1:
                await self._ws.send(frame[0])
            else:
                await self._send_gathered(frame)
        except websockets.ConnectionClosed as exc:
            raise ConnectionLost(f"the kernel WebSocket closed: {exc}") from None

    async def _send_gathered(self, pieces: Sequence[Buffer]) -> None:
        """Send a message with buffers as one frame, not as fragments.

        A fragmented message costs a Jupyter server two more copies of every byte (tornado
        gathers the fragments, then copies them out again), and joining the pieces here would
        cost one more; masking each piece straight into the frame copies each byte once.
        ``send_context`` is how websockets' own ``send`` writes frames: it checks the connection
        is open, then flushes with flow control. It is not public API, hence the ``<18`` pin
        and the framing tests against websockets' own parser.
        """
        data = masked_frame(pieces, secrets.token_bytes(4))
        async with self._ws.send_context():
            self._ws.protocol.writes.extend(data)

    async def receive(self) -> Message:
        try:
            frame = await self._ws.recv()
        except websockets.ConnectionClosed as exc:
            raise ConnectionLost(f"the kernel WebSocket closed: {exc}") from None
        self._ack_now()
        if self.v1 and isinstance(frame, bytes):
            return decode_v1(frame)
        return decode_legacy(frame)

    def _ack_now(self) -> None:
        """Acknowledge what the server sends at once instead of after the ~40 ms delayed ACK.

        A server that leaves Nagle's algorithm on (a stock jupyter_server) holds each small
        write until the previous one is acknowledged; with delayed ACKs that costs ~44 ms a
        round trip. Linux resets the quick-ACK mode by itself, so it is set again each time.
        """
        if self.quick_ack and _QUICKACK is not None and self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    async def close(self) -> None:
        await self._ws.close()
