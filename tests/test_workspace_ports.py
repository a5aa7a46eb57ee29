"""``s.forward(port)`` on real kernels: an HTTP server and a WebSocket echo started on the runtime
are reached from here through the forwarded URL (on the emulator through Colab's per-port proxy
and its token, refreshed; on local directly); a port nothing listens on is one typed error; a
Jupyter server without jupyter-server-proxy says so; and ``colabremote forward`` does the same
from a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets.exceptions
import websockets.sync.client

import colabremote as cr
from colabremote._colab.auth import EnvironmentToken
from colabremote.exceptions import ConfigurationError
from colabremote.testing import ColabEmulator, JupyterServer, emulator_of

from .conftest import BackendSpec

LARGE = 24 * 2**20  # a POST body much larger than any buffer on the way


def start_servers() -> tuple[int, int]:
    """Runs on the kernel: an HTTP server and a WebSocket echo on free ports, in threads."""
    import hashlib
    import http.server
    import threading

    from websockets.sync.server import ServerConnection, serve

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            seen = ",".join(
                n.lower() for n in self.headers if n.lower().startswith(("x-colab", "authoriz"))
            )
            self._reply(f"hello from the runtime {self.path} [{seen}]".encode())

        def do_POST(self) -> None:
            left = int(self.headers["Content-Length"])
            digest = hashlib.sha256()
            while left:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
            self._reply(digest.hexdigest().encode())

        def log_message(self, *args: object) -> None:
            return None

    http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()

    def echo(connection: ServerConnection) -> None:
        for message in connection:
            connection.send(message)

    ws_server = serve(echo, "127.0.0.1", 0)
    threading.Thread(target=ws_server.serve_forever, daemon=True).start()
    return http_server.server_address[1], ws_server.socket.getsockname()[1]


def free_port() -> int:
    """Runs on the kernel: a port nothing listens on there."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def body(size: int) -> Iterator[bytes]:
    """A streamed request body: ``size`` bytes in pieces, never held whole."""
    piece = bytes(range(256)) * 256
    sent = 0
    while sent < size:
        chunk = piece[: min(len(piece), size - sent)]
        sent += len(chunk)
        yield chunk


def expected_digest(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in body(size):
        digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(
    scope="module",
    params=[
        "local",
        pytest.param("jupyter", marks=pytest.mark.slow),
        pytest.param("emulator", marks=pytest.mark.slow),
    ],
)
def spec(request: pytest.FixtureRequest) -> BackendSpec:
    if request.param == "jupyter":  # jupyter-server-proxy is in the test extra
        server: JupyterServer = request.getfixturevalue("jupyter_server")
        return BackendSpec("jupyter", {"url": server.url, "token": server.token})
    return BackendSpec(request.param, {"gpu": "T4"} if request.param == "emulator" else {})


@pytest.fixture(scope="module")
def session(spec: BackendSpec) -> Iterator[cr.Session]:
    with spec.session() as s:
        yield s


@pytest.fixture(scope="module")
def ports(session: cr.Session) -> tuple[int, int]:
    return session.remote(start_servers)()


def test_http_get_and_a_large_streamed_post(session: cr.Session, ports: tuple[int, int]) -> None:
    http_port, _ = ports
    with session.forward(http_port) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert url.startswith("http://127.0.0.1:")
        got = client.get("/some/path?x=1")
        assert got.status_code == 200
        assert got.text.startswith("hello from the runtime /some/path?x=1")
        # The app sees no proxy token and no credentials of ours; jupyter-server-proxy passes
        # the server's own Authorization header on (the app runs on that server).
        seen = "[authorization]" if session.backend == "jupyter" else "[]"
        assert got.text.endswith(seen)
        posted = client.post("/upload", content=body(LARGE), headers={"Content-Length": str(LARGE)})
        assert posted.text == expected_digest(LARGE)
        assert client.get("/again").status_code == 200
    if session.backend == "local":
        assert url == f"http://127.0.0.1:{http_port}"  # the port is on this machine already
    else:
        # Closed: the listener is gone.
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=5)


def test_websocket_echo(session: cr.Session, ports: tuple[int, int]) -> None:
    _, ws_port = ports
    with (
        session.forward(ws_port) as url,
        websockets.sync.client.connect(url.replace("http", "ws", 1) + "/echo") as ws,
    ):
        ws.send("text frame")
        assert ws.recv(timeout=30) == "text frame"
        ws.send(b"\x00\x01binary" * 1000)
        assert ws.recv(timeout=30) == b"\x00\x01binary" * 1000


def test_closing_the_forward_closes_its_connections(
    session: cr.Session, ports: tuple[int, int]
) -> None:
    if session.backend == "local":
        pytest.skip("on local the URL is the port itself: there is no listener to close")
    _, ws_port = ports
    with contextlib.ExitStack() as stack:
        with session.forward(ws_port) as url:
            connect = websockets.sync.client.connect(url.replace("http", "ws", 1) + "/echo")
            ws = stack.enter_context(connect)
            ws.send("before")
            assert ws.recv(timeout=30) == "before"
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            ws.recv(timeout=30)


def test_a_port_nothing_listens_on_is_one_typed_error(session: cr.Session) -> None:
    port = session.remote(free_port)()
    expected = f"nothing listens on port {port} on the runtime"
    with pytest.raises(ConfigurationError, match=expected), session.forward(port):
        pytest.fail("the forward should not have started")


@pytest.mark.parametrize("bad", [0, -1, 70000, "6006", True, 1.5])
def test_a_bad_port_is_refused_before_anything_starts(session: cr.Session, bad: object) -> None:
    with pytest.raises(ConfigurationError, match="is not a TCP port"), session.forward(bad):  # type: ignore[arg-type]
        pytest.fail("the forward should not have started")


def test_the_async_form(spec: BackendSpec) -> None:
    async def main() -> str:
        async with cr.AsyncSession(spec.name, progress=False, **spec.options) as s:
            http_port, _ = await s.remote(start_servers).aio()
            async with (
                s.forward(http_port) as url,
                httpx.AsyncClient(base_url=url, timeout=60) as client,
            ):
                return (await client.get("/a")).text

    assert asyncio.run(main()).startswith("hello from the runtime /a")


@pytest.mark.slow
def test_emulator_port_tokens_are_refreshed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with cr.Session("emulator", gpu="T4", progress=False) as s:
        http_port, _ = s.remote(start_servers)()
        emu = emulator_of(s)
        (rt,) = emu.runtimes
        with s.forward(http_port) as url, httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/one").status_code == 200
            assert len(rt.port_tokens) == 1
            # Every token is expired now: the next request is refused by the proxy, the
            # forward gets a new token and asks again; the caller sees only the answer.
            emu.expire_proxy_tokens()
            assert client.get("/two").text.startswith("hello from the runtime /two")
            assert len(rt.port_tokens) == 2
            refused = [r for r in emu.requests if r.server.startswith("port:") and r.status == 404]
            assert len(refused) == 1
        # No port token shows in the emulator's log, or in any log line (DEBUG included).
        logged = repr(emu.requests) + caplog.text
        assert all(token not in logged for token in rt.port_tokens)


@pytest.mark.slow
def test_emulator_refreshes_before_expiry() -> None:
    with cr.Session("emulator", gpu="T4", progress=False) as s:
        http_port, _ = s.remote(start_servers)()
        emu = emulator_of(s)
        emu.proxy_token_ttl = 4.0  # refreshed when half of it is left
        (rt,) = emu.runtimes
        with s.forward(http_port) as url, httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/one").status_code == 200
            (first,) = rt.port_tokens.values()
            # Until the token is past half its life (the emulator's clock: wall time here).
            while emu.clock.time() < first[1] - 2.0:
                with httpx.Client(timeout=5) as probe:
                    probe.get(url + "/wait")
            assert client.get("/two").status_code == 200
        assert len(rt.port_tokens) >= 2
        statuses = {r.status for r in emu.requests if r.server.startswith("port:")}
        assert 404 not in statuses and 401 not in statuses  # refreshed before, not after


@pytest.mark.slow
def test_the_emulator_proxy_checks_the_port_token_and_answers_502() -> None:
    with cr.Session("emulator", gpu="T4", progress=False) as s:
        http_port, _ = s.remote(start_servers)()
        closed = s.remote(free_port)()
        (rt,) = emulator_of(s).runtimes
        backend = s._core.backend
        route = s._loop.run(backend.port_route(http_port))
        other = s._loop.run(backend.port_route(closed))
        name = "X-Colab-Runtime-Proxy-Token"
        assert httpx.get(route.url + "/x").status_code == 401  # no token
        wrong = {name: other.headers[name]}  # another port's token
        assert httpx.get(route.url + "/x", headers=wrong).status_code == 401
        assert httpx.get(route.url + "/x", headers=dict(route.headers)).status_code == 200
        query = httpx.get(
            route.url + "/x", params={"colab-runtime-proxy-token": route.headers[name]}
        )
        assert query.text.startswith("hello from the runtime /x [")  # its token taken out
        assert "colab-runtime-proxy-token" not in query.text
        gone = httpx.get(other.url + "/", headers=dict(other.headers))
        assert gone.status_code == 502
        assert f"nothing listens on port {closed} of runtime {rt.endpoint}" in gone.text


@pytest.mark.slow
def test_jupyter_without_server_proxy_says_so() -> None:
    without = ("--ServerApp.jpserver_extensions=jupyter_server_proxy=False",)
    with (
        JupyterServer(extra_args=without) as server,
        cr.Session("jupyter", url=server.url, token=server.token, progress=False) as s,
    ):
        http_port, _ = s.remote(start_servers)()
        expected = "Install jupyter-server-proxy where the server runs"
        with pytest.raises(ConfigurationError, match=expected), s.forward(http_port):
            pytest.fail("the forward should not have started")


@pytest.mark.slow
def test_cli_forward_against_an_emulator(tmp_path: Path) -> None:
    with ColabEmulator() as emu:
        token = emu.mint_access_token(ttl=3600)
        credentials = EnvironmentToken(token)
        with cr.Session("colab", base_url=emu.url, credentials=credentials, progress=False) as s:
            http_port, _ = s.remote(start_servers)()
            (rt,) = emu.runtimes
            env = dict(os.environ, COLABREMOTE_ACCESS_TOKEN=token, COLABREMOTE_BASE_URL=emu.url)
            env["COLABREMOTE_CONFIG_DIR"] = str(tmp_path)
            with subprocess.Popen(
                [sys.executable, "-m", "colabremote", "forward", str(http_port)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            ) as proc:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                assert line, proc.stderr.read() if proc.stderr else ""
                url = line.split()[0]
                assert f"port {http_port} of runtime {rt.endpoint}" in line
                got = httpx.get(url + "/cli", timeout=60)
                assert got.text.startswith("hello from the runtime /cli")
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=60) == 0
            assert rt in emu.runtimes  # not released by the command


@pytest.mark.slow
def test_a_runtime_taken_away_answers_502_through_the_forward() -> None:
    with cr.Session("emulator", gpu="T4", progress=False) as s:
        http_port, _ = s.remote(start_servers)()
        emu = emulator_of(s)
        (rt,) = emu.runtimes
        emu.proxy_token_ttl = 2.0
        with s.forward(http_port) as url, httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/one").status_code == 200
            (first,) = rt.port_tokens.values()
            # Past half the token's life, the next request asks Colab for a new token.
            while emu.clock.time() < first[1] - 1.0:
                with httpx.Client(timeout=5) as probe:
                    probe.get(url + "/wait")
            emu.release(rt.endpoint)
            gone = client.get("/two")
            assert gone.status_code == 502
            assert f"cannot reach the proxy of port {http_port}" in gone.text
