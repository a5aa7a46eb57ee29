"""The peer side by side: a raw ``execute_request("pass")`` round trip through datalayer's
``jupyter-kernel-client``, the kernel client Google's Colab CLI uses, to show next to our numbers.

The library's ``execute`` sends one ``execute_request`` over the kernel WebSocket and returns once
it has seen the ``idle`` status for it and its ``execute_reply``: what our own baselines wait for.
"""

from __future__ import annotations

import time
from typing import Any

WARMUP = 5
TIMEOUT = 30.0  # seconds per execute before the library raises TimeoutError


def available() -> str | None:
    """The installed ``jupyter-kernel-client`` version, or None when it cannot be imported."""
    try:
        import jupyter_kernel_client
    except ImportError:
        return None
    return str(jupyter_kernel_client.__version__)


def _client_class() -> Any:
    import jupyter_kernel_client

    # 1.x names it JupyterKernelClient; 0.9 (the Colab CLI's pin) names it KernelClient.
    cls = getattr(jupyter_kernel_client, "JupyterKernelClient", None)
    return cls if cls is not None else jupyter_kernel_client.KernelClient


def kernel_client_round_trips(
    server_url: str, token: str, kernel_id: str | None, count: int
) -> list[float]:
    """Seconds per ``execute("pass")`` round trip through ``jupyter-kernel-client``, after
    ``WARMUP`` unmeasured runs, timed with ``time.perf_counter`` around the library's own call.

    With ``kernel_id``, the library attaches to that existing kernel on ``server_url`` (it fetches
    the kernel's model, then opens its channels WebSocket) and leaves it running afterwards. With
    ``None``, it starts its own ``python3`` kernel on the same server and shuts it down afterwards.
    """
    client = _client_class()(server_url=server_url, token=token, kernel_id=kernel_id)
    if kernel_id is not None and not client.has_kernel:
        # The library would otherwise quietly start a new kernel in place of the missing one.
        raise LookupError(f"no kernel {kernel_id} on {server_url}")
    client.start()  # starts a kernel only when it has none, then opens the WebSocket
    try:

        def once() -> float:
            started = time.perf_counter()
            reply = client.execute("pass", store_history=False, timeout=TIMEOUT)
            elapsed = time.perf_counter() - started
            if reply["status"] != "ok":
                raise RuntimeError(f"execute('pass') through jupyter-kernel-client: {reply}")
            return elapsed

        for _ in range(WARMUP):
            once()
        return [once() for _ in range(count)]
    finally:
        client.stop()  # closes the WebSocket; shuts the kernel down only if it started it


__all__ = ["available", "kernel_client_round_trips"]
