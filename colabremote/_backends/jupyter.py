"""Kernels on any Jupyter server: REST for the kernel's life, a WebSocket for its messages."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import posixpath
import secrets
import tempfile
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import httpx

from .._http import display_url, mapped_errors, refusal, server_reason
from .._kernel.transport import Transport
from .._kernel.websocket import WebSocketTransport, open_websocket, secret_values
from .._progress import Progress
from .._retry import retrying
from .._tls import verify_setting
from ..exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConnectionLost,
    KernelStartError,
    PathNotFound,
    ServerError,
)
from .base import Backend, KernelFiles, PortRoute
from .base import Progress as ProgressCallback

if TYPE_CHECKING:
    from .._workspace.terminal import Channel

#: Bytes per chunk of a chunked Contents API upload (base64 makes each request a third larger).
UPLOAD_CHUNK = 8 * 1024 * 1024
#: Kernel creation answers that say "try again" rather than "not like that".
_START_AGAIN = frozenset({502, 503, 504})
#: Tries at kernel creation and at the WebSocket upgrade before the open fails.
OPEN_ATTEMPTS = 4


def _check(response: httpx.Response, doing: str, secrets: list[str]) -> httpx.Response:
    """``response`` if it succeeded, else ServerError (AuthenticationError for 401 and 403),
    with the server's own reason when it gave one. "check the token" is only for a refusal
    that gives no other reason: Enterprise Gateway's 403 names KERNEL_USERNAME instead."""
    status = response.status_code
    if status < 400:
        return response
    reason = server_reason(
        status,
        response.reason_phrase,
        response.headers.get("content-type"),
        response.content,
        *secrets,
    )
    message = refusal(response, doing, detail=reason)
    if status in (401, 403):
        # jupyter_server asks a request whose token it did not accept for a browser's XSRF
        # cookie instead: that reason, too, means the token.
        advice = "" if reason and "_xsrf" not in reason else "; check the token"
        raise AuthenticationError(message + advice, status=status)
    raise ServerError(message, status=status)


def _clean_token(token: str | None) -> str | None:
    """The token without the surrounding white space a file or a paste adds; one with white
    space or control characters inside is refused (without showing it)."""
    if token is None:
        return None
    token = token.strip()
    if not token.isprintable() or any(c.isspace() for c in token):
        raise ConfigurationError(
            "token= has spaces or control characters inside it; pass the Jupyter server's token "
            "exactly as the server printed it"
        )
    return token


def _start_again(exc: BaseException) -> bool:
    """Whether a kernel start is worth another try: a 502/503/504, or no answer in time."""
    if isinstance(exc, ServerError):
        return exc.status in _START_AGAIN
    return isinstance(exc, ConnectionLost)


def _lost(message: str, status: int | None) -> ConnectionLost:
    return ConnectionLost(message)


class JupyterBackend(Backend):
    """A kernel on a Jupyter server at ``url`` (``token`` is the server's token)."""

    name = "jupyter"
    #: Where kernels start, relative to the server's root (None: the server's choice).
    kernel_path: str | None = None

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        kernel_name: str = "python3",
        kernel_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        # A URL copied from Jupyter's start-up banner carries the token as ?token=...: it moves
        # into the Authorization header, so the URL kept (shown in info, logs, errors) has none.
        parts = urlsplit(url)
        url_token = parse_qs(parts.query).get("token", [None])[0]
        shown = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"url={shown!r} is not a Jupyter server address; use one like "
                "'http://127.0.0.1:8888' (with its base path, if any)"
            )
        token = _clean_token(token or url_token)
        self.url = shown.rstrip("/")
        self.kernel_name = kernel_name
        self.kernel_id = kernel_id
        self._owns_kernel = kernel_id is None
        self._headers = dict(headers or {})
        if token:
            self._headers["Authorization"] = f"token {token}"
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=self._headers,
            timeout=httpx.Timeout(30.0),
            verify=verify_setting(),
        )
        self._ws_session = uuid.uuid4().hex  # the same id on reconnect lets the server replay
        self._proxied_ports: set[int] = set()  # ports jupyter-server-proxy answered for
        #: The server's root as the kernel sees it, by the kernel's working directory (None:
        #: the kernel does not see the server's files).
        self._roots: dict[str, str | None] = {}
        self._deferred = False  # defer_kernel(): no kernel until restart() asks for one

    async def port_route(self, port: int, *, fresh: bool = False) -> PortRoute:
        """jupyter-server-proxy's ``/proxy/{port}``, checked once per port: a server without it
        answers 404 there."""
        del fresh
        if port not in self._proxied_ports:
            doing = f"checking for jupyter-server-proxy (/proxy/{port})"
            with mapped_errors(doing, where=display_url(self.url), error=_lost):
                response = await self._http.get(f"/proxy/{port}")
            if response.status_code == 404:
                raise ConfigurationError(
                    f"the Jupyter server at {display_url(self.url)} cannot forward ports: it "
                    f"answered 404 for /proxy/{port}. Install jupyter-server-proxy where the "
                    "server runs (pip install jupyter-server-proxy) and restart the server"
                )
            self._proxied_ports.add(port)
        return PortRoute(f"{self.url}/proxy/{port}", self._headers)

    def _kernel_path(self, suffix: str = "") -> str:
        assert self.kernel_id is not None
        return f"/api/kernels/{quote(self.kernel_id, safe='')}{suffix}"

    async def _request(self, method: str, path: str, doing: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request, with httpx's errors translated here and nowhere else."""
        with mapped_errors(doing, where=display_url(self.url), error=_lost):
            response = await self._http.request(method, path, **kwargs)
        return _check(response, doing, secret_values(self._headers))

    async def _get(self, path: str, doing: str) -> httpx.Response:
        return await retrying(lambda: self._request("GET", path, doing), what=doing)

    async def _wait_settled(self) -> dict[str, Any]:
        """The kernel's model once the server is not in the middle of restarting it."""
        for _ in range(600):
            model: dict[str, Any] = (
                await self._get(self._kernel_path(), "looking up the kernel")
            ).json()
            if model.get("execution_state") not in ("restarting", "autorestarting", "starting"):
                return model
            await asyncio.sleep(0.1)
        return model

    async def start(self, progress: ProgressCallback) -> None:
        await self._start_kernel(progress)

    def defer_kernel(self) -> None:
        self._deferred = True

    async def _start_kernel(self, progress: ProgressCallback) -> None:
        """Attach to ``kernel_id`` or start a kernel on the server (later, when deferred)."""
        if self._deferred and self.kernel_id is None:
            return
        if self.kernel_id is not None:
            progress(f"attaching to kernel {self.kernel_id} on {self.url}")
            await self._get(self._kernel_path(), "looking up the kernel")
            return
        body = {"name": self.kernel_name}
        if self.kernel_path is not None:
            body["path"] = self.kernel_path  # the kernel's working directory, server-relative
        tries = 0

        async def create() -> str:
            nonlocal tries
            tries += 1
            if tries > 1 and before is not None:
                # The failed POST may have started a kernel after all: adopt it, never a second.
                started = await self._new_idle_kernel(before)
                if started is not None:
                    return started
            response = await self._request("POST", "/api/kernels", "starting a kernel", json=body)
            return str(response.json()["id"])

        try:
            before = await self._kernel_ids()
            progress(f"starting a kernel on {self.url}")
            self.kernel_id = await retrying(
                create, what="starting a kernel", attempts=OPEN_ATTEMPTS, retry_if=_start_again
            )
        except AuthenticationError:
            raise
        except ServerError as exc:
            if exc.status in _START_AGAIN:
                raise KernelStartError(
                    f"the server could not start a kernel, {tries} attempts ({exc}); it is "
                    "overloaded or restarting: try again later"
                ) from None
            raise KernelStartError(await self._why_not_started(exc)) from None
        except ConnectionLost as exc:
            attempts = f" ({tries} attempts to start a kernel)" if tries > 1 else ""
            raise KernelStartError(f"{exc}{attempts}") from None

    async def _why_not_started(self, exc: ServerError) -> str:
        """The message for a kernel start the server refused: a ``kernel_name`` the server does
        not have, with the names it has, else the server's own reason."""
        failed = f"the server could not start a {self.kernel_name!r} kernel ({exc})"
        try:
            response = await self._request("GET", "/api/kernelspecs", "listing the kernelspecs")
            specs: Any = response.json().get("kernelspecs")
        except (ServerError, ConnectionLost, ValueError, AttributeError):
            return f"{failed}; check kernel_name against the server's /api/kernelspecs"
        if not isinstance(specs, dict) or self.kernel_name in specs:
            return failed
        names = ", ".join(repr(name) for name in sorted(specs)) or "none"
        return (
            f"the server has no {self.kernel_name!r} kernel: its /api/kernelspecs lists {names}; "
            f"pass one of those as kernel_name= ({exc})"
        )

    async def _kernel_ids(self) -> set[str] | None:
        """The ids of the kernels running on the server now (``None``: it would not say).

        Enterprise Gateway refuses to list kernels (403) by default: a refusal is the token's
        fault only if the server refuses to list kernelspecs too."""
        try:
            response = await self._get("/api/kernels", "listing the server's kernels")
        except AuthenticationError:
            await self._get("/api/kernelspecs", "listing the server's kernelspecs")
            return None
        except ServerError:
            return None
        listing: Any = response.json()
        return {str(k["id"]) for k in listing if isinstance(k, dict) and "id" in k}

    async def _new_idle_kernel(self, before: set[str]) -> str | None:
        """A kernel of ours that a POST without an answer started: one of ``kernel_name`` that
        was not there ``before`` and that nothing is connected to yet."""
        response = await self._get("/api/kernels", "listing the server's kernels")
        listing: Any = response.json()
        for model in listing:
            if (
                isinstance(model, dict)
                and str(model.get("id")) not in before
                and model.get("name") == self.kernel_name
                and not model.get("connections")
            ):
                return str(model["id"])
        return None

    def new_client(self) -> None:
        # jupyter_server keeps a closed connection's messages for its session id and replays
        # them to the next connection with that id: right for a reconnection, wrong for a new
        # client after a kernel restart (it would hear the old kernel's shutdown_reply).
        self._ws_session = uuid.uuid4().hex

    async def connect(self) -> Transport:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = parts.path + self._kernel_path("/channels")
        query = f"session_id={self._ws_session}"
        url = urlunsplit((scheme, parts.netloc, path, query, ""))

        async def upgrade() -> Transport:
            # The upgrade starts nothing on the server, so it is always safe to try again.
            return await WebSocketTransport.open(url, headers=self._headers, use_v1=self.use_v1)

        return await retrying(
            upgrade, what="opening the kernel WebSocket", attempts=OPEN_ATTEMPTS, deadline=60.0
        )

    async def open_terminal(self) -> Channel:
        """A terminal of the server's (jupyter_server_terminals): created with
        ``POST /api/terminals``, spoken to on ``/terminals/websocket/{name}``, deleted at the
        end."""
        from .._workspace.terminal import TerminadoChannel

        try:
            response = await self._request("POST", "/api/terminals", "starting a terminal")
        except ServerError as exc:
            if exc.status != 404:
                raise
            raise ServerError(
                f"the Jupyter server at {display_url(self.url)} offers no terminals (no "
                "/api/terminals): install jupyter-server-terminals there, and do not start it "
                "with terminals disabled",
                status=404,
            ) from None
        name = str(response.json()["name"])
        path = f"/api/terminals/{quote(name, safe='')}"

        async def delete() -> None:
            with contextlib.suppress(ServerError, ConnectionLost):
                await self._request("DELETE", path, "deleting the terminal")

        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        ws_path = f"{parts.path}/terminals/websocket/{quote(name, safe='')}"
        url = urlunsplit((scheme, parts.netloc, ws_path, "", ""))
        try:
            ws = await open_websocket(url, headers=self._headers, what="the terminal WebSocket")
        except BaseException:
            await delete()
            raise
        return TerminadoChannel(ws, delete)

    async def interrupt(self) -> None:
        await self._request("POST", self._kernel_path("/interrupt"), "interrupting the kernel")

    async def restart(self, progress: ProgressCallback) -> None:
        if self._deferred and self.kernel_id is None:
            self._deferred = False  # the first call of a session that deferred its kernel
            await self._start_kernel(progress)
            return
        progress("starting a fresh kernel")
        try:
            state = await self._wait_settled()
        except ServerError as exc:
            if exc.status != 404:
                raise
            self.kernel_id = None
            self._owns_kernel = True
            await self._start_kernel(progress)
            return
        if state.get("execution_state") in ("dead", "busy"):
            # The server may have begun an automatic restart meanwhile: wait it out and retry.
            async def once() -> httpx.Response:
                return await self._request(
                    "POST", self._kernel_path("/restart"), "restarting the kernel", timeout=120
                )

            await retrying(once, what="restarting the kernel")
            await self._wait_settled()

    async def is_alive(self) -> bool:
        if self.kernel_id is None:
            return False
        try:
            response = await self._http.get(self._kernel_path())
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.json().get("execution_state") != "dead"

    def keep_kernel(self) -> bool:
        self._owns_kernel = False
        return True

    async def close(self) -> None:
        try:
            if self._owns_kernel and self.kernel_id is not None:
                with contextlib.suppress(httpx.HTTPError, ConnectionLost):
                    await self._http.delete(self._kernel_path())
        finally:
            await self._http.aclose()

    # -- files (the Contents API) ------------------------------------------------------------

    @staticmethod
    def _contents_path(remote: str) -> str:
        """The Contents API URL path of a file on the server (relative to the server's root;
        a leading ``/`` means the same). ``.`` and ``..`` segments are refused: a URL path that
        climbs out of ``/api/contents/`` would reach another API with the server's token."""
        parts = [part for part in remote.split("/") if part]
        bad = [p for p in parts if p in (".", "..") or "\\" in p or not p.isprintable()]
        if bad or not parts:
            raise ConfigurationError(
                f"{remote!r} is not a file path on the server: use a plain path such as "
                "'data/train.csv' or '/content/data/train.csv', without '.' or '..' parts, "
                "backslashes or control characters"
            )
        return "/api/contents/" + "/".join(quote(part, safe="") for part in parts)

    async def kernel_file_path(self, remote: str, kernel: KernelFiles) -> str | None:
        """The server's root is not named by its API, and the kernel's working directory need
        not be it: an empty probe file is put beside ``remote`` through the Contents API, and
        the kernel looks for it under its working directory and that folder's parents (and
        removes it). None when the kernel does not see it (it runs on another machine than the
        server's files, or the folder is not there)."""
        path = self._contents_path(remote)  # checked before anything is sent
        relative = path[len("/api/contents/") :]
        if kernel.cwd in self._roots:
            root = self._roots[kernel.cwd]
        else:
            # Not a hidden name: Jupyter servers refuse to create those by default.
            probe = posixpath.join(
                posixpath.dirname(relative), f"colabremote-probe-{secrets.token_hex(8)}"
            )
            body = {"type": "file", "format": "text", "content": ""}
            try:
                await self._request("PUT", f"/api/contents/{probe}", "placing a probe", json=body)
            except (ServerError, ConnectionLost):
                return None  # a folder that is not there: upload() says so in its own words
            found = None
            try:
                found = await kernel.take(_unquoted(probe))  # the kernel removes what it finds
            finally:
                if found is None:  # a server's DELETE may move the file to the trash instead
                    with contextlib.suppress(ServerError, ConnectionLost):
                        await self._request("DELETE", f"/api/contents/{probe}", "removing a probe")
            root = self._roots[kernel.cwd] = found
        return None if root is None else posixpath.join(root, _unquoted(relative))

    async def upload(self, local: str, remote: str, *, show_progress: bool) -> None:
        """PUT a file through the Contents API: in chunks when the server takes them (files
        larger than one chunk), else in one request."""
        size = os.path.getsize(local)
        path = self._contents_path(remote)
        progress = Progress(f"uploading {os.path.basename(local)}", size, enabled=show_progress)
        with open(local, "rb") as f:
            if size > UPLOAD_CHUNK:
                first = f.read(UPLOAD_CHUNK)
                chunked = await self._put_chunk(path, first, 1)
                if chunked:
                    progress.advance(len(first))
                    number = 2
                    while True:
                        data = f.read(UPLOAD_CHUNK)
                        last = f.tell() >= size
                        await self._put_chunk(path, data, -1 if last else number, required=True)
                        progress.advance(len(data))
                        number += 1
                        if last:
                            break
                    progress.done()
                    return
                f.seek(0)
            data = f.read()
        body = {"type": "file", "format": "base64", "content": base64.b64encode(data).decode()}
        await self._request("PUT", path, f"uploading to {remote}", json=body, timeout=600)
        progress.advance(size)
        progress.done()

    async def _put_chunk(
        self, path: str, data: bytes, number: int, *, required: bool = False
    ) -> bool:
        body = {
            "type": "file",
            "format": "base64",
            "chunk": number,
            "content": base64.b64encode(data).decode(),
        }
        try:
            await self._request("PUT", path, "uploading a chunk", json=body, timeout=600)
        except ServerError as exc:
            if required or exc.status not in (400, 415, 422, 500, 501):
                raise
            return False  # no chunked uploads here: the caller sends the file in one request
        return True

    async def download(self, remote: str, local: str, *, show_progress: bool) -> None:
        """GET a file through the Contents API and write it atomically."""
        path = self._contents_path(remote)
        progress = Progress(f"downloading {os.path.basename(remote)}", 0, enabled=show_progress)
        try:
            response = await self._request(
                "GET",
                path,
                f"downloading {remote}",
                params={"content": "1", "format": "base64", "type": "file"},
                timeout=600,
            )
        except ServerError as exc:
            if exc.status == 404:
                raise PathNotFound(f"{remote} does not exist on the server") from None
            raise
        model: Any = response.json()
        if model.get("type") != "file":
            raise ConfigurationError(f"{remote!r} on the server is a {model.get('type')}")
        data = base64.b64decode(model.get("content") or "")
        progress.total = len(data)
        target_dir = os.path.dirname(os.path.abspath(local))
        os.makedirs(target_dir, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target_dir, prefix=".colabremote-")
        try:
            with os.fdopen(handle, "wb") as f:
                f.write(data)
            os.replace(temporary, local)  # never a half-written file at the target
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        progress.advance(len(data))
        progress.done()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "url": self.url, "kernel_id": self.kernel_id}


def _unquoted(path: str) -> str:
    """A Contents API URL path (each part quoted) as the plain relative path it names."""
    return "/".join(unquote(part) for part in path.split("/"))
