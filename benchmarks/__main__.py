"""Run colabremote's benchmarks: ``python -m benchmarks [--quick] [--json PATH]``.

Everything runs on 127.0.0.1 and is started here. Each case is measured after a warm-up and
reported as medians and p95s, next to a baseline measured in the same run on the same kernel and
transport; the ratio is what the targets in docs/performance.md are about.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import numpy as np

import colabremote as cr
from colabremote._colab.auth import EnvironmentToken
from colabremote._kernel.websocket import WebSocketTransport
from colabremote.testing import ColabEmulator, JupyterServer

from . import peer
from .baselines import (
    EchoServer,
    relay_echo_seconds,
    websocket_execute_round_trips,
    zmq_execute_round_trips,
)
from .colab_baseline import raw_emulator_start

MB = 1024 * 1024


def noop() -> None:
    return None


def echo(x: Any) -> Any:
    return x


@dataclass
class Result:
    case: str
    transport: str
    unit: str
    median: float
    p95: float
    baseline: str
    baseline_median: float
    ratio: float
    extra: dict[str, Any] = field(default_factory=dict)


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def timed(fn: Callable[[], Any], count: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@contextmanager
def peak_rss() -> Iterator[dict[str, int]]:
    """Samples this process's RSS every 2 ms; yields a dict that gets ``peak`` at the end."""
    box = {"peak": rss_bytes()}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            box["peak"] = max(box["peak"], rss_bytes())
            stop.wait(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        stop.set()
        thread.join()
        box["peak"] = max(box["peak"], rss_bytes())


# -- cases -------------------------------------------------------------------------------------


def call_overhead(
    session: cr.Session,
    transport: str,
    raw: Callable[[int], list[float]],
    n: int,
    case: str = "call overhead (no-op call)",
    baseline: str = "raw execute_request('pass')",
) -> Result:
    f = session.remote(noop)
    ours = timed(f, n)
    base = raw(n)
    median, p95 = summary(ours)
    base_median, _ = summary(base)
    return Result(
        case,
        transport,
        "ms",
        median * 1e3,
        p95 * 1e3,
        baseline,
        base_median * 1e3,
        median / base_median,
    )


def payload_echo(
    session: cr.Session,
    transport: str,
    echo_server: EchoServer,
    size: int,
    repeats: int,
    relay: Callable[[bytes, int, int], list[float]] | None = None,
) -> Result:
    """An array echoed through a remote call, against a plain WebSocket echo of the same bytes;
    with ``relay``, also against the bare comm echo through the same server and kernel."""
    f = session.remote(echo)
    f(np.zeros(8, dtype=np.uint8))  # ship the function first
    chunk = 8 * MB
    before = rss_bytes()
    with peak_rss() as memory:
        data = np.random.default_rng(0).integers(0, 255, size=size, dtype=np.uint8)
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            out = f(data)
            samples.append(time.perf_counter() - started)
            assert out.nbytes == size and out[-1] == data[-1]
            del out
    peak_ratio = (memory["peak"] - before) / size
    del data
    payload = os.urandom(size)
    base = echo_server.echo_seconds(payload, repeats, chunk)
    median, p95 = summary(samples)
    base_median, _ = summary(base)
    ours_rate = size / median / MB
    base_rate = size / base_median / MB
    extra: dict[str, Any] = {"client_peak_rss_over_payload": round(peak_ratio, 2)}
    if relay is not None:
        relay_rate = size / summary(relay(payload, repeats, chunk))[0] / MB
        extra["server_relay_MBps"] = round(relay_rate, 1)
        extra["ratio_to_relay"] = round(ours_rate / relay_rate, 2)
        extra["relay_to_echo"] = round(relay_rate / base_rate, 2)
    del payload
    return Result(
        f"payload echo {size // MB} MB",
        transport,
        "MB/s",
        ours_rate,
        size / p95 / MB,
        "plain WebSocket echo between two processes",
        base_rate,
        ours_rate / base_rate,
        extra,
    )


def peer_round_trip(
    session: cr.Session, transport: str, server: JupyterServer, kernel_id: str, n: int
) -> Result | None:
    """Our no-op call against an execute through the Colab CLI's kernel client, on a kernel of
    the same server."""
    version = peer.available()
    if version is None:
        print("  (jupyter-kernel-client is not installed: pip install -e '.[bench]')")
        return None

    def theirs(count: int) -> list[float]:
        return peer.kernel_client_round_trips(server.url, server.token, kernel_id, count)

    return call_overhead(
        session,
        transport,
        theirs,
        n,
        case="peer: no-op call vs jupyter-kernel-client",
        baseline=f"jupyter-kernel-client {version} execute('pass')",
    )


def session_start(
    make: Callable[[], cr.Session],
    transport: str,
    raw: Callable[[], float],
    n: int,
    baseline: str = "start the kernel with jupyter_client and run one execute",
) -> Result:
    with make() as session:  # one untimed run of each: imports, first server start
        session.remote(noop)()
    raw()
    ours, base = [], []
    for _ in range(n):  # alternating, so both see the same machine
        started = time.perf_counter()
        with make() as session:
            session.remote(noop)()
            ours.append(time.perf_counter() - started)
        base.append(raw())
    median, p95 = summary(ours)
    base_median, _ = summary(base)
    return Result(
        "session start (open + first result)",
        transport,
        "s",
        median,
        p95,
        baseline,
        base_median,
        median / base_median,
    )


@contextmanager
def jupyter_client_kernel() -> Iterator[Any]:
    """A local kernel started the plain jupyter_client way, ready; yields its blocking client."""
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name="python3")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def raw_local_start() -> float:
    """Seconds to start a kernel with jupyter_client and run one execute (not the shutdown)."""
    started = time.perf_counter()
    with jupyter_client_kernel() as client:
        client.execute_interactive("pass", timeout=60)
        return time.perf_counter() - started


def map_throughput(session: cr.Session, transport: str, items: int) -> Result:
    g = session.remote(echo)
    list(g.map(range(200)))  # warm-up
    started = time.perf_counter()
    out = list(g.map(range(items)))
    elapsed = time.perf_counter() - started
    assert out == list(range(items))
    rate = items / elapsed
    return Result(
        f"map throughput ({items:,} no-op items)",
        transport,
        "items/s",
        rate,
        rate,
        "target: 3,000 items/s",
        3000.0,
        rate / 3000.0,
    )


def megabytes_with_rss(n: int, every: int) -> Iterator[tuple[int, bytes]]:
    """On the kernel: ``n`` values of 1 MiB, each with the kernel's resident memory every
    ``every`` values (0 in between)."""
    import os

    page = os.sysconf("SC_PAGE_SIZE")
    block = bytes(1024 * 1024)
    for i in range(n):
        rss = 0
        if i % every == 0:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * page
        yield rss, block


def one_megabyte() -> bytes:
    return bytes(1024 * 1024)


def generator_stream(session: cr.Session, transport: str, total_mb: int) -> Result:
    """A generator yields ``total_mb`` values of 1 MiB to a consumer slower than it; against
    the same bytes returned by one call per MiB. The kernel's memory growth over the stream
    says whether back-pressure held the producer (it should stay within a few steps' worth)."""
    calls = session.remote(one_megabyte)
    count = min(total_mb, 200)
    started = time.perf_counter()
    for _ in range(count):
        calls()
    baseline = count / (time.perf_counter() - started)
    stream = session.remote(megabytes_with_rss)
    first = peak = 0
    started = time.perf_counter()
    for rss, block in stream(total_mb, 64):
        assert len(block) == MB
        if rss:
            first = first or rss
            peak = max(peak, rss)
        time.sleep(0.0005)  # the consumer's own work, slower than producing the value
    rate = total_mb / (time.perf_counter() - started)
    return Result(
        f"generator stream ({total_mb:,} MiB, slow consumer)",
        transport,
        "MiB/s",
        rate,
        rate,
        "1 MiB results, one call each",
        baseline,
        rate / baseline,
        {"kernel_rss_growth_mb": round((peak - first) / MB, 1)},
    )


# -- driver ------------------------------------------------------------------------------------


@contextmanager
def spare_kernel(base_url: str, headers: dict[str, str]) -> Iterator[str]:
    """Another kernel on the same server, for the raw baselines.

    On our session's own kernel, every message a baseline makes the kernel send on iopub would
    also go to our session's connection: the server would do the work twice and the baseline
    would look slower than it is.
    """
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        response = http.post("/api/kernels", json={"name": "python3"})
        response.raise_for_status()
        kernel_id = str(response.json()["id"])
        try:
            yield kernel_id
        finally:
            http.delete(f"/api/kernels/{kernel_id}")


def channels_url(base_url: str, kernel_id: str) -> str:
    ws_base = base_url.replace("http://", "ws://", 1)
    return f"{ws_base}/api/kernels/{kernel_id}/channels?session_id=bench"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions, no 1 GB payloads (for CI)"
    )
    parser.add_argument("--json", default="benchmarks/results/latest.json", help="JSON output")
    args = parser.parse_args(argv)

    calls = 100 if args.quick else 500
    many = 2000 if args.quick else 10000
    starts = 3 if args.quick else 5
    gigabyte = [] if args.quick else [1024 * MB]
    streamed = 512 if args.quick else 10 * 1024  # MiB through one generator
    results: list[Result] = []

    def report(result: Result | None) -> None:
        if result is None:
            return
        results.append(result)
        extra = json.dumps(result.extra) if result.extra else ""
        print(
            f"{result.case:<42} {result.transport:<18} {result.median:>10.2f} {result.unit:<8}"
            f" p95 {result.p95:>9.2f}  baseline {result.baseline_median:>9.2f}"
            f"  ratio {result.ratio:>5.2f}  {extra}",
            flush=True,
        )

    print(
        f"colabremote {cr.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    with EchoServer() as echo_server:
        # A kernel on this machine, over ZeroMQ.
        with (
            cr.Session("local", progress=False) as session,
            jupyter_client_kernel() as spare,
        ):
            session.info()

            def zmq_raw(n: int) -> list[float]:
                return zmq_execute_round_trips(spare.connection_file, n)

            report(call_overhead(session, "local (ZMQ)", zmq_raw, calls))
            report(map_throughput(session, "local (ZMQ)", many))
            report(generator_stream(session, "local (ZMQ)", streamed))

        def local_session() -> cr.Session:
            return cr.Session("local", progress=False)

        report(session_start(local_session, "local (ZMQ)", raw_local_start, starts))

        # Jupyter servers, over the kernel WebSocket.
        for nodelay, label in ((True, "jupyter (nodelay)"), (False, "jupyter (stock)")):
            with (
                JupyterServer(nodelay=nodelay) as server,
                cr.Session(
                    "jupyter", url=server.url, token=server.token, progress=False
                ) as session,
                spare_kernel(server.url, {"Authorization": f"token {server.token}"}) as spare,
            ):
                url = channels_url(server.url, spare)
                headers = {"Authorization": f"token {server.token}"}

                def ws_raw(
                    n: int, url: str = url, headers: dict[str, str] = headers
                ) -> list[float]:
                    return websocket_execute_round_trips(url, headers, n)

                def relay(
                    payload: bytes,
                    repeats: int,
                    chunk: int,
                    url: str = url,
                    headers: dict[str, str] = headers,
                ) -> list[float]:
                    return relay_echo_seconds(url, headers, payload, repeats, chunk)

                report(call_overhead(session, label, ws_raw, calls if nodelay else 30))
                if not nodelay:
                    # What a client gets from a stock server where TCP_QUICKACK does not exist
                    # (macOS, Windows): the Nagle stall on every round trip.
                    WebSocketTransport.quick_ack = False
                    try:
                        report(call_overhead(session, "jupyter (stock, no quick-ACK)", ws_raw, 30))
                    finally:
                        WebSocketTransport.quick_ack = True
                report(peer_round_trip(session, label, server, spare, calls if nodelay else 30))
                sizes = [1 * MB, 10 * MB, 100 * MB] if nodelay else [100 * MB]
                for size in sizes + gigabyte:
                    repeats = 3 if size >= 100 * MB else 5
                    report(payload_echo(session, label, echo_server, size, repeats, relay))
                if nodelay:
                    report(map_throughput(session, label, many))

        # The Colab emulator: the whole Colab path (control plane, runtime proxy, the legacy
        # WebSocket protocol), against the same protocol steps done by hand.
        with ColabEmulator() as emulator:

            def colab_session() -> cr.Session:
                token = EnvironmentToken(emulator.mint_access_token())
                return cr.Session("colab", base_url=emulator.url, credentials=token, progress=False)

            with colab_session() as session, ExitStack() as stack:
                session.info()
                backend: Any = session._core.backend
                proxy = backend._proxy
                headers = {"X-Colab-Runtime-Proxy-Token": proxy.token}
                # Deleted before the session releases the runtime (the stack closes first).
                spare = stack.enter_context(spare_kernel(proxy.url, headers))
                url = channels_url(proxy.url, spare)

                def emu_raw(n: int) -> list[float]:
                    return websocket_execute_round_trips(url, headers, n)

                def emu_relay(payload: bytes, repeats: int, chunk: int) -> list[float]:
                    return relay_echo_seconds(url, headers, payload, repeats, chunk)

                report(call_overhead(session, "emulator (proxy)", emu_raw, calls))
                report(map_throughput(session, "emulator (proxy)", many))
                report(
                    payload_echo(session, "emulator (proxy)", echo_server, 100 * MB, 3, emu_relay)
                )

            def raw_colab_start() -> float:
                return raw_emulator_start(emulator, emulator.mint_access_token())

            report(
                session_start(
                    colab_session,
                    "emulator (proxy)",
                    raw_colab_start,
                    starts,
                    "assign, kernel and one execute by hand (httpx + websockets)",
                )
            )

    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
        json.dump({**machine, "results": [asdict(r) for r in results]}, f, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
