"""The yardstick for "session start through the emulator": the Colab protocol done by hand with
plain httpx and websockets (assign, start a kernel through the proxy, one execute, release).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from typing import Any

import httpx
from websockets.asyncio.client import connect

from colabremote.testing import ColabEmulator

from .baselines import execute_on

_XSSI = b")]}'\n"
_PROXY_TOKEN = "X-Colab-Runtime-Proxy-Token"


def _json(response: httpx.Response) -> Any:
    """The JSON body of a control-plane answer, without Colab's anti-XSSI prefix."""
    response.raise_for_status()
    body = response.content
    return json.loads(body[len(_XSSI) :] if body.startswith(_XSSI) else body)


async def _xsrf_post(
    http: httpx.AsyncClient, url: str, params: dict[str, str], headers: dict[str, str]
) -> httpx.Response:
    """Colab's GET-then-POST: the GET hands out the XSRF token the POST must carry."""
    token = _json(await http.get(url, params=params, headers=headers))["token"]
    return await http.post(url, params=params, headers={**headers, "X-Goog-Colab-Token": token})


async def _start(base_url: str, access_token: str) -> float:
    control_headers = {
        "Authorization": f"Bearer {access_token}",
        "Accept": "application/json",
        "X-Colab-Client-Agent": "vscode",
    }
    nbh = str(uuid.uuid4()).replace("-", "_").ljust(44, ".")
    async with httpx.AsyncClient(timeout=60) as http:
        started = time.perf_counter()
        query = {"nbh": nbh, "authuser": "0"}  # a CPU runtime: no variant, no accelerator
        assign_url = f"{base_url}/tun/m/assign"
        assignment = _json(await _xsrf_post(http, assign_url, query, control_headers))
        endpoint = assignment["endpoint"]
        proxy = assignment["runtimeProxyInfo"]
        try:
            proxy_url = proxy["url"].rstrip("/")
            proxy_headers = {_PROXY_TOKEN: proxy["token"], "X-Colab-Client-Agent": "vscode"}
            # Plain Jupyter REST through the proxy: no OAuth token, no XSSI prefix.
            response = await http.post(
                f"{proxy_url}/api/kernels",
                json={"name": "python3"},
                headers=proxy_headers,
            )
            response.raise_for_status()
            kernel_id = response.json()["id"]
            session = uuid.uuid4().hex
            ws_url = proxy_url.replace("http", "ws", 1)
            ws_url += f"/api/kernels/{kernel_id}/channels?session_id={session}"
            async with connect(
                ws_url, additional_headers=proxy_headers, max_size=None, compression=None
            ) as ws:
                ws.transport.get_extra_info("socket").setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
                )
                await execute_on(ws, session, "pass")
                elapsed = time.perf_counter() - started
        finally:
            # Not timed: give the runtime back (its jupyter_server, and so the kernel, stops).
            unassign_url = f"{base_url}/tun/m/unassign/{endpoint}"
            released = await _xsrf_post(http, unassign_url, {"authuser": "0"}, control_headers)
            released.raise_for_status()
    return elapsed


def raw_emulator_start(emu: ColabEmulator, access_token: str) -> float:
    """Seconds from the first assign request to the reply and idle status of one
    ``execute_request("pass")`` on a fresh runtime's kernel; the runtime is released after."""
    return asyncio.run(_start(emu.url, access_token))


__all__ = ["raw_emulator_start"]
