"""The runtime proxy: one 127.0.0.1 port per runtime, in front of that runtime's jupyter_server.

It behaves as Colab's proxy does: the runtime proxy token comes in the
``X-Colab-Runtime-Proxy-Token`` header or the ``colab-runtime-proxy-token`` query parameter; a
missing or unknown token gets 401, an expired one 404 (as the live service), and so does every
request once the runtime is released. Repeated slashes in paths are collapsed. Kernel WebSockets
are relayed frame by frame (binary frames included) with TCP_NODELAY on both legs, and no
WebSocket subprotocol is ever selected (legacy Jupyter JSON protocol only). ``/colab/tty`` is a
terminal on the runtime (``_tty.py``), behind the same token checks.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import urllib.parse
from typing import TYPE_CHECKING, Any

import tornado.httpclient
import tornado.httpserver
import tornado.httputil
import tornado.netutil
import tornado.web
import tornado.websocket

from ._model import XSSI_PREFIX, Runtime
from ._redact import RedactedLogs, redact_headers, redact_query

if TYPE_CHECKING:
    from . import ColabEmulator

_TOKEN_HEADER = "X-Colab-Runtime-Proxy-Token"  # noqa: S105 - a header name
_TOKEN_PARAM = "colab-runtime-proxy-token"  # noqa: S105 - a parameter name
_HOP_BY_HOP = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "accept-encoding",
    }
)
_DROP_RESPONSE = frozenset(
    {"content-length", "transfer-encoding", "connection", "content-encoding", "server", "date"}
)
_SLASHES = re.compile(r"/{2,}")


def collapse(path: str) -> str:
    return _SLASHES.sub("/", path)


class _ProxyMixin:
    """Token checks, fault injection and request logging shared by both proxy handlers."""

    proxy: RuntimeProxy
    runtime: Runtime
    emulator: ColabEmulator

    def initialize(self, proxy: RuntimeProxy) -> None:
        self.proxy = proxy
        self.runtime = proxy.runtime
        self.emulator = proxy.emulator

    def check_proxy_token(self, handler: tornado.web.RequestHandler) -> int | None:
        """The status to refuse this request with, or None when it may pass."""
        rt = self.runtime
        if rt.released:
            return 404
        token = handler.request.headers.get(_TOKEN_HEADER) or handler.get_query_argument(
            _TOKEN_PARAM, None
        )
        if not token:
            return 401
        expires = rt.proxy_tokens.get(token)
        if expires is None:
            return 401
        clock = self.emulator.clock
        if clock.time() >= expires:
            return 404
        if self.emulator.activity_counts_as_liveness:
            rt.last_alive = clock.monotonic()
        return None

    def log_request(self, handler: tornado.web.RequestHandler, status: int) -> None:
        request = handler.request
        self.emulator._record(
            f"proxy:{self.runtime.endpoint}",
            request.method or "",
            collapse(request.path),
            redact_query(request.query_arguments),
            status,
            redact_headers(request.headers),
        )

    def upstream_url(
        self, handler: tornado.web.RequestHandler, scheme: str, path: str | None = None
    ) -> str:
        """The runtime's jupyter_server URL for this request, without the proxy token or any
        token the client sent: the Jupyter token goes in the Authorization header only, so it
        is in no URL that an error or a log line could show."""
        request = handler.request
        query = [
            (k, v.decode(errors="replace"))
            for k, values in request.query_arguments.items()
            if k not in (_TOKEN_PARAM, "token")
            for v in values
        ]
        base = self.runtime_jupyter().url.replace("http://", scheme + "://", 1)
        path = collapse(request.path) if path is None else path
        return f"{base}{path}?{urllib.parse.urlencode(query)}"

    def runtime_jupyter(self) -> Any:
        jupyter = self.proxy.jupyter
        assert jupyter is not None
        return jupyter


class ProxyHTTPHandler(_ProxyMixin, RedactedLogs, tornado.web.RequestHandler):
    """Plain HTTP through the proxy: the Jupyter REST API, plus ``/api/colab/resources``."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    def prepare(self) -> None:
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None:
            stream.set_nodelay(True)

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> asyncio.Future[None]:
        # Logged before the reply leaves: a client that has its answer finds the request logged.
        if not self._finished:
            self.log_request(self, self.get_status())
        return super().finish(chunk)

    def check_xsrf_cookie(self) -> None:
        return None

    async def _handle(self) -> None:
        path = collapse(self.request.path)
        hold = self.emulator.faults.take_hold(path)
        if hold is not None:
            await hold.wait()
        fault = self.emulator.faults.take_path(path)
        if fault is not None:
            self.set_status(fault)
            self.finish(json.dumps({"message": "injected fault"}))
            return
        refused = self.check_proxy_token(self)
        if refused is not None:
            self.set_status(refused)
            self.finish(json.dumps({"message": "runtime proxy token refused"}))
            return
        if path == "/api/colab/resources":
            self.set_header("Content-Type", "application/json")
            self.finish(XSSI_PREFIX + json.dumps(_resources(self.runtime)))
            return
        await self.proxy.ensure_jupyter()
        headers = tornado.httputil.HTTPHeaders()
        for name, value in self.request.headers.get_all():
            lower = name.lower()
            if lower in _HOP_BY_HOP or lower in ("authorization", _TOKEN_HEADER.lower()):
                continue
            headers.add(name, value)
        headers["Authorization"] = f"token {self.runtime_jupyter().token}"
        method = self.request.method or "GET"
        body = self.request.body if method in ("POST", "PUT", "PATCH", "DELETE") else None
        upstream_path, in_content = _contents_path(path)
        if in_content and method == "PATCH" and body:
            body = _rewrite_patch_body(body)
        if method in ("POST", "PUT", "PATCH") and body is None:
            body = b""
        response = await tornado.httpclient.AsyncHTTPClient().fetch(
            self.upstream_url(self, "http", upstream_path),
            method=method,
            headers=headers,
            body=body,
            raise_error=False,
            allow_nonstandard_methods=True,
            follow_redirects=False,
            request_timeout=300,
        )
        if response.code == 599:
            self.set_status(502)
            self.finish(json.dumps({"message": "runtime unreachable"}))
            return
        self.set_status(response.code, response.reason)
        self.clear_header("Content-Type")
        for name, value in response.headers.get_all():
            if name.lower() not in _DROP_RESPONSE:
                self.add_header(name, value)
        if response.code in (204, 304) or method == "HEAD":
            self.finish()
        elif in_content and response.body:
            self.finish(_prefix_content_paths(response.body))
        else:
            self.finish(response.body or b"")

    async def get(self, *args: str) -> None:
        await self._handle()

    async def head(self, *args: str) -> None:
        await self._handle()

    async def post(self, *args: str) -> None:
        await self._handle()

    async def put(self, *args: str) -> None:
        await self._handle()

    async def patch(self, *args: str) -> None:
        await self._handle()

    async def delete(self, *args: str) -> None:
        await self._handle()

    async def options(self, *args: str) -> None:
        await self._handle()


class ProxyWebSocketHandler(_ProxyMixin, RedactedLogs, tornado.websocket.WebSocketHandler):
    """``/api/kernels/{id}/channels``: relays frames to the real kernel WebSocket and back."""

    upstream: tornado.websocket.WebSocketClientConnection | None = None
    _reader: asyncio.Task[None] | None = None

    async def get(self, *args: str, **kwargs: str) -> None:
        path = collapse(self.request.path)
        hold = self.emulator.faults.take_hold(path)
        if hold is not None:
            await hold.wait()
        fault = self.emulator.faults.take_path(path)
        refused = fault if fault is not None else self.check_proxy_token(self)
        if refused is not None:
            self.set_status(refused)
            self.log_request(self, refused)
            self.finish(json.dumps({"message": "runtime proxy token refused"}))
            return
        self.log_request(self, 101)
        await super().get(*args, **kwargs)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return None  # Colab speaks the legacy protocol only.

    def check_origin(self, origin: str) -> bool:
        return True

    async def open(self, *args: str, **kwargs: str) -> None:
        self.set_nodelay(True)
        proxy = self.proxy
        try:
            await proxy.ensure_jupyter()
            request = tornado.httpclient.HTTPRequest(
                self.upstream_url(self, "ws"),
                headers={"Authorization": f"token {self.runtime_jupyter().token}"},
                request_timeout=60,
            )
            self.upstream = await tornado.websocket.websocket_connect(
                request, max_message_size=2**31 - 1
            )
        except Exception:  # noqa: BLE001 - any failure to reach the kernel is a 1011 close
            self.close(1011, "runtime unreachable")
            return
        stream = getattr(getattr(self.upstream, "protocol", None), "stream", None)
        if stream is not None:
            stream.set_nodelay(True)
        proxy.sockets.add(self)
        self._reader = asyncio.ensure_future(self._relay_from_kernel())

    async def _relay_from_kernel(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        while True:
            message = await upstream.read_message()
            if message is None:
                if self.ws_connection is not None:
                    self.close(1011, "kernel connection closed")
                return
            try:
                await self.write_message(message, binary=isinstance(message, bytes))
            except tornado.websocket.WebSocketClosedError:
                return

    async def on_message(self, message: str | bytes) -> None:
        if self.emulator.activity_counts_as_liveness:
            self.runtime.last_alive = self.emulator.clock.monotonic()
        if self.emulator.faults.take_swallow(message):
            return  # caught in transit: the kernel never gets it
        if self.upstream is not None:
            try:
                await self.upstream.write_message(message, binary=isinstance(message, bytes))
            except tornado.websocket.WebSocketClosedError:
                self.close(1011, "kernel connection closed")

    def on_close(self) -> None:
        self.proxy.sockets.discard(self)
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    def drop(self, abrupt: bool) -> None:
        """End this connection: without a close frame (a network drop) or with code 1012."""
        if abrupt and self.ws_connection is not None:
            stream = getattr(self.ws_connection, "stream", None)
            if stream is not None:
                stream.close()
                self.on_close()
                return
        self.close(1012, "dropped by the emulator")


_CONTENTS = "/api/contents"


def _contents_path(path: str) -> tuple[str, bool]:
    """Map a contents API path onto the runtime's jupyter_server, whose root is ``/content``.

    Colab's Jupyter root is ``/``, so clients name ``content/x`` (or, as VS Code does,
    ``%2Fcontent%2Fx``). Returns the upstream path and whether it was inside ``/content``.
    """
    if path != _CONTENTS and not path.startswith(_CONTENTS + "/"):
        return path, False
    rest = urllib.parse.unquote(path[len(_CONTENTS) :]).strip("/")
    if rest != "content" and not rest.startswith("content/"):
        return f"{_CONTENTS}/{urllib.parse.quote(rest)}", False
    inner = rest[len("content") :].strip("/")
    return f"{_CONTENTS}/{urllib.parse.quote(inner)}", True


def _rewrite_patch_body(body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        new = data["path"].strip("/")
        if new == "content" or new.startswith("content/"):
            data["path"] = new[len("content") :].strip("/")
        return json.dumps(data).encode()
    return body


def _prefix_content_paths(body: bytes) -> bytes:
    """Put ``content/`` back in front of the ``path`` fields of a contents API answer."""
    try:
        data = json.loads(body)
    except ValueError:
        return body

    def fix(model: Any) -> None:
        if isinstance(model, dict):
            if isinstance(model.get("path"), str):
                model["path"] = "/".join(p for p in ("content", model["path"]) if p)
            if model.get("type") == "directory" and isinstance(model.get("content"), list):
                for child in model["content"]:
                    fix(child)

    fix(data)
    return json.dumps(data).encode()


def _resources(runtime: Runtime) -> dict[str, Any]:
    gpus: list[dict[str, Any]] = []
    if runtime.variant == "GPU":
        gpus.append(
            {
                "name": f"Emulated {runtime.accelerator}",
                "memoryUsedBytes": 0,
                "memoryTotalBytes": 16 * 2**30,
                "gpuUtilization": 0.0,
                "memoryUtilization": 0.0,
                "everUsed": False,
            }
        )
    total = (52 if runtime.high_mem else 13) * 2**30
    return {
        "memory": {"totalBytes": total, "freeBytes": total - 2**30},
        "disks": [
            {"filesystem": {"label": "kernel", "totalBytes": 100 * 2**30, "usedBytes": 2**30}}
        ],
        "gpus": gpus,
    }


class RuntimeProxy:
    """The proxy server of one runtime, and its lazily started jupyter_server."""

    def __init__(self, runtime: Runtime, emulator: ColabEmulator) -> None:
        self.runtime = runtime
        self.emulator = emulator
        self.sockets: set[ProxyWebSocketHandler] = set()
        self.jupyter: Any = None
        self._starting: asyncio.Future[Any] | None = None
        from ._tty import TtyHandler  # it builds on ProxyWebSocketHandler

        kwargs: dict[str, Any] = {"proxy": self}
        app = tornado.web.Application(
            [
                (r"/+api/+kernels/+([^/]+)/+channels/*", ProxyWebSocketHandler, kwargs),
                (r"/+colab/+tty/*", TtyHandler, kwargs),
                (r"/.*", ProxyHTTPHandler, kwargs),
            ],
            websocket_max_message_size=2**31 - 1,
        )
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
        self.port: int = sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = tornado.httpserver.HTTPServer(
            app, max_body_size=2**31 - 1, max_buffer_size=2**31 - 1
        )
        self.server.add_sockets(sockets)

    async def ensure_jupyter(self) -> None:
        if self.jupyter is not None:
            return
        if self._starting is None:
            loop = asyncio.get_running_loop()
            self._starting = loop.run_in_executor(None, self.emulator._start_jupyter, self.runtime)
        self.jupyter = await asyncio.shield(self._starting)

    def drop_websockets(self, abrupt: bool) -> int:
        sockets = list(self.sockets)
        for handler in sockets:
            handler.drop(abrupt)
        self.sockets.clear()
        return len(sockets)

    async def retire(self) -> Any:
        """The runtime is gone: close its kernel sockets and hand back its jupyter_server.

        The proxy keeps listening and answers 404 to everything, as Colab's does for a runtime
        that no longer exists.
        """
        self.drop_websockets(abrupt=False)
        if self._starting is not None and self.jupyter is None:
            try:
                self.jupyter = await self._starting
            except Exception:  # noqa: BLE001 - it never started; nothing to stop
                self.jupyter = None
        return self.jupyter

    async def close(self) -> None:
        """Stop listening (when the emulator stops)."""
        self.server.stop()
        await self.server.close_all_connections()
