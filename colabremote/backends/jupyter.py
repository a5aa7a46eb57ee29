"""Kernels on any Jupyter server: REST for the kernel's life, a WebSocket for its messages."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from ..exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConnectionLost,
    KernelStartError,
    ServerError,
)
from ..kernel.transport import Transport
from ..kernel.websocket import WebSocketTransport
from ..retry import retrying
from .base import Backend, Progress


def _check(response: httpx.Response, doing: str) -> httpx.Response:
    if response.status_code in (401, 403):
        raise AuthenticationError(
            f"{doing}: the server answered HTTP {response.status_code}; check the token",
            status=response.status_code,
        )
    if response.status_code >= 400:
        raise ServerError(
            f"{doing}: the server answered HTTP {response.status_code}",
            status=response.status_code,
        )
    return response


class JupyterBackend(Backend):
    """A kernel on a Jupyter server at ``url`` (``token`` is the server's token)."""

    name = "jupyter"

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        kernel_name: str = "python3",
        kernel_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"url={url!r} is not a Jupyter server address; use one like "
                "'http://127.0.0.1:8888' (with its base path, if any)"
            )
        self.url = url.rstrip("/")
        self.kernel_name = kernel_name
        self.kernel_id = kernel_id
        self._owns_kernel = kernel_id is None
        self._headers = dict(headers or {})
        if token:
            self._headers["Authorization"] = f"token {token}"
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=httpx.Timeout(30.0)
        )
        self._ws_session = uuid.uuid4().hex  # the same id on reconnect lets the server replay

    def _kernel_path(self, suffix: str = "") -> str:
        assert self.kernel_id is not None
        return f"/api/kernels/{quote(self.kernel_id, safe='')}{suffix}"

    async def _request(self, method: str, path: str, doing: str, **kwargs: Any) -> httpx.Response:
        """One HTTP request, with httpx's errors translated here and nowhere else."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ConnectionLost(f"{doing}: {self.url} did not answer in time ({exc})") from None
        except httpx.TransportError as exc:
            raise ConnectionLost(f"{doing}: cannot reach {self.url} ({exc})") from None
        return _check(response, doing)

    async def _get(self, path: str, doing: str) -> httpx.Response:
        return await retrying(lambda: self._request("GET", path, doing))

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

    async def start(self, progress: Progress) -> None:
        if self.kernel_id is not None:
            progress(f"attaching to kernel {self.kernel_id} on {self.url}")
            await self._get(self._kernel_path(), "looking up the kernel")
            return
        progress(f"starting a kernel on {self.url}")
        try:
            response = await self._request(
                "POST", "/api/kernels", "starting a kernel", json={"name": self.kernel_name}
            )
        except ServerError as exc:
            if isinstance(exc, AuthenticationError):
                raise
            raise KernelStartError(
                f"the server could not start a {self.kernel_name!r} kernel ({exc}); check "
                "kernel_name against the server's /api/kernelspecs"
            ) from None
        except ConnectionLost as exc:
            raise KernelStartError(str(exc)) from None
        self.kernel_id = str(response.json()["id"])

    async def connect(self) -> Transport:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = parts.path + self._kernel_path("/channels")
        query = f"session_id={self._ws_session}"
        url = urlunsplit((scheme, parts.netloc, path, query, ""))
        return await WebSocketTransport.open(url, headers=self._headers, use_v1=self.use_v1)

    async def interrupt(self) -> None:
        await self._request("POST", self._kernel_path("/interrupt"), "interrupting the kernel")

    async def restart(self, progress: Progress) -> None:
        progress("starting a fresh kernel")
        try:
            state = await self._wait_settled()
        except ServerError as exc:
            if exc.status != 404:
                raise
            self.kernel_id = None
            self._owns_kernel = True
            await self.start(progress)
            return
        if state.get("execution_state") in ("dead", "busy"):
            # The server may have begun an automatic restart meanwhile: wait it out and retry.
            async def once() -> httpx.Response:
                return await self._request(
                    "POST", self._kernel_path("/restart"), "restarting the kernel", timeout=120
                )

            await retrying(once)
            await self._wait_settled()

    async def is_alive(self) -> bool:
        if self.kernel_id is None:
            return False
        try:
            response = await self._http.get(self._kernel_path())
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.json().get("execution_state") != "dead"

    async def close(self) -> None:
        try:
            if self._owns_kernel and self.kernel_id is not None:
                with contextlib.suppress(httpx.HTTPError, ConnectionLost):
                    await self._http.delete(self._kernel_path())
        finally:
            await self._http.aclose()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "url": self.url, "kernel_id": self.kernel_id}
