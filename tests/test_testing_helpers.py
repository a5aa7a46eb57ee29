"""colabremote.testing's helpers: the emulator's manual clock, tick() and assigned_endpoints(),
the session faults emulator_of() and drop_connection(), and JupyterServer's token handling."""

from __future__ import annotations

import glob
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import colabremote as cr
from colabremote.exceptions import KernelDied
from colabremote.testing import (
    ColabEmulator,
    JupyterServer,
    ManualClock,
    drop_connection,
    emulator_of,
)

XSSI = ")]}'\n"
LOOPBACK = "http://127.0.0.1:49999"


def unxssi(response: httpx.Response) -> Any:
    assert response.text.startswith(XSSI), response.text[:40]
    return json.loads(response.text[len(XSSI) :])


def new_nbh() -> str:
    return str(uuid.uuid4()).replace("-", "_").ljust(44, ".")


def double(x: int) -> int:
    return 2 * x


def slow_double(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return 2 * x


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_800_000_000.0)


@pytest.fixture
def emu(clock: ManualClock) -> Iterator[ColabEmulator]:
    with ColabEmulator(clock=clock, max_assignments=10) as emulator:
        yield emulator


@pytest.fixture
def http(emu: ColabEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=60) as client:
        yield client


@pytest.fixture
def auth(emu: ColabEmulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {emu.mint_access_token()}"}


def assign(http: httpx.Client, auth: dict[str, str]) -> str:
    """Assign a CPU runtime through /tun/m (GET for the XSRF token, then POST); its endpoint."""
    query = {"nbh": new_nbh(), "authuser": "0"}
    xsrf = unxssi(http.get("/tun/m/assign", params=query, headers=auth))["token"]
    posted = http.post("/tun/m/assign", params=query, headers={**auth, "X-Goog-Colab-Token": xsrf})
    assert posted.status_code == 200, posted.text
    endpoint: str = unxssi(posted)["endpoint"]
    return endpoint


# --- the manual clock -------------------------------------------------------------------------


def test_manual_clock_moves_only_when_advanced() -> None:
    clock = ManualClock(start=1000.0)
    assert (clock.time(), clock.monotonic()) == (1000.0, 0.0)
    clock.advance(2.5)
    assert (clock.time(), clock.monotonic()) == (1002.5, 2.5)
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)
    assert clock.time() == 1002.5
    assert "2.5" in repr(clock)


def test_the_default_clock_is_the_real_one() -> None:
    emulator = ColabEmulator()
    assert abs(emulator.clock.time() - time.time()) < 60
    assert abs(emulator.clock.monotonic() - time.monotonic()) < 60


def test_access_tokens_expire_on_the_clock(
    emu: ColabEmulator, clock: ManualClock, http: httpx.Client
) -> None:
    token = emu.mint_access_token(ttl=10)
    info = http.get("/tokeninfo", params={"access_token": token})
    assert info.status_code == 200 and info.json()["expires_in"] == "10"
    clock.advance(4)
    assert http.get("/tokeninfo", params={"access_token": token}).json()["expires_in"] == "6"
    assert http.get("/v1/user-info", headers={"Authorization": f"Bearer {token}"}).is_success
    clock.advance(6)
    assert http.get("/tokeninfo", params={"access_token": token}).status_code == 400
    refused = http.get("/v1/user-info", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401


def test_authorization_codes_and_xsrf_tokens_expire_on_the_clock(
    emu: ColabEmulator, clock: ManualClock, http: httpx.Client, auth: dict[str, str]
) -> None:
    params = {
        "client_id": emu.client_id,
        "redirect_uri": LOOPBACK,
        "response_type": "code",
        "scope": "email profile",
    }
    location = http.get("/o/oauth2/v2/auth", params=params).headers["location"]
    code = httpx.URL(location).params["code"]
    clock.advance(601)  # codes live ten minutes
    exchanged = http.post(
        "/token",
        data={
            "code": code,
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            "redirect_uri": LOOPBACK,
            "grant_type": "authorization_code",
        },
    )
    assert exchanged.status_code == 400 and exchanged.json()["error"] == "invalid_grant"
    query = {"nbh": new_nbh(), "authuser": "0"}
    xsrf = unxssi(http.get("/tun/m/assign", params=query, headers=auth))["token"]
    clock.advance(3601)  # XSRF tokens live an hour
    fresh = emu.mint_access_token()  # the fixture's token has expired by now
    stale = {"Authorization": f"Bearer {fresh}", "X-Goog-Colab-Token": xsrf}
    assert http.post("/tun/m/assign", params=query, headers=stale).status_code == 403


def test_proxy_tokens_expire_on_the_clock(
    emu: ColabEmulator, clock: ManualClock, http: httpx.Client, auth: dict[str, str]
) -> None:
    emu.proxy_token_ttl = 30
    endpoint = assign(http, auth)
    minted = unxssi(
        http.get("/v1/runtime-proxy-token", params={"endpoint": endpoint}, headers=auth)
    )
    assert minted["tokenTtl"] == "30s"
    url = minted["url"] + "/api/colab/resources"
    header = {"X-Colab-Runtime-Proxy-Token": minted["token"]}
    clock.advance(29)
    assert httpx.get(url, headers=header).status_code == 200
    clock.advance(1)
    assert httpx.get(url, headers=header).status_code == 404  # expired, as Colab answers


# --- tick() and assigned_endpoints() ----------------------------------------------------------


def test_tick_releases_what_went_idle(
    emu: ColabEmulator, clock: ManualClock, http: httpx.Client, auth: dict[str, str]
) -> None:
    emu.idle_timeout = 60
    kept, idle = assign(http, auth), assign(http, auth)
    assert emu.assigned_endpoints() == {kept, idle}
    clock.advance(40)
    tunnel = {**auth, "X-Colab-Tunnel": "Google"}
    ping = http.get(f"/tun/m/{kept}/keep-alive/", params={"authuser": "0"}, headers=tunnel)
    assert ping.status_code == 200
    emu.tick()
    assert emu.assigned_endpoints() == {kept, idle}
    clock.advance(21)  # 61 s since the idle one was assigned, 21 s since the ping
    emu.tick()
    assert emu.assigned_endpoints() == {kept}
    assert emu.runtime(idle).released and emu.runtime(idle).release_reason == "idle"
    assert not emu.runtime(kept).released


def test_operations_complete_when_the_clock_passes_their_delay(
    emu: ColabEmulator, clock: ManualClock, http: httpx.Client, auth: dict[str, str]
) -> None:
    emu.create_runtime_delay = 5
    body = {"runtimeSpec": {"variant": "VARIANT_CPU"}}
    op = http.post("/v1beta/runtimes", json=body, headers=auth).json()
    assert op["done"] is False
    name = op["name"]
    emu.tick()
    # WaitOperation blocks in real time, bounded by its timeout; the clock has not moved.
    waited = http.get(f"/v1/{name}:wait", params={"timeout": "0.2s"}, headers=auth).json()
    assert waited["done"] is False
    clock.advance(5)
    emu.tick()
    done = http.get(f"/v1/{name}", headers=auth).json()
    assert done["done"] is True and "error" not in done
    endpoint = done["response"]["connectionInfo"]["endpoint"]
    assert endpoint in emu.assigned_endpoints()
    expires = done["response"]["connectionInfo"]["expireTime"]
    assert expires.startswith(time.strftime("%Y-%m-%d", time.gmtime(clock.time() + 3600)))


# --- emulator_of() and drop_connection() ------------------------------------------------------


def channel_connects(emulator: ColabEmulator) -> int:
    """Kernel WebSocket connections the emulator's runtime proxies accepted."""
    return len([r for r in emulator.requests if r.path.endswith("/channels") and r.status == 101])


@pytest.mark.slow
def test_emulator_of_and_drop_connection_on_an_emulator_session() -> None:
    with cr.Session("emulator", progress=False) as session:
        emulator = emulator_of(session)
        assert isinstance(emulator, ColabEmulator)
        assert session.remote(double)(1) == 2
        assert emulator.assigned_endpoints() == {session.runtime().endpoint}
        connects = channel_connects(emulator)
        in_flight = session.remote(slow_double).submit(3, 1.0)
        drop_connection(session)
        assert in_flight.result(timeout=120) == 6  # survives, exactly once
        assert session.remote(double)(4) == 8
        assert channel_connects(emulator) > connects  # the session reconnected
    assert emulator.assigned_endpoints() == set()


def test_drop_connection_on_a_jupyter_session(jupyter_server: JupyterServer) -> None:
    with cr.Session(
        "jupyter", url=jupyter_server.url, token=jupyter_server.token, progress=False
    ) as session:
        f = session.remote(slow_double)
        in_flight = f.submit(5, 1.0)
        drop_connection(session)
        assert in_flight.result(timeout=120) == 10
        assert f(6, 0) == 12


def test_helpers_refuse_sessions_they_do_not_fit() -> None:
    unopened = cr.Session("local", progress=False)
    try:
        with pytest.raises(TypeError, match="emulator_of needs"):
            emulator_of(unopened)
        with pytest.raises(RuntimeError, match="no kernel connection yet"):
            drop_connection(unopened)
    finally:
        unopened.close()
    with cr.Session("local", progress=False) as local:
        local.exec("pass")
        with pytest.raises(TypeError, match="no kernel WebSocket"):
            drop_connection(local)


# --- JupyterServer ----------------------------------------------------------------------------


@pytest.mark.slow
def test_jupyter_server_token_is_not_on_its_command_line() -> None:
    """Every local user can read /proc/<pid>/cmdline: the token reaches the server in a file of
    mode 0600 instead, gone once the server has read it (and not in its environment, which its
    kernels inherit)."""
    with JupyterServer() as server:
        assert server.pid is not None
        with open(f"/proc/{server.pid}/cmdline", "rb") as f:
            cmdline = f.read().decode(errors="replace")
        assert "jupyter_server" in cmdline and server.token not in cmdline
        with open(f"/proc/{server.pid}/environ", "rb") as f:
            assert server.token not in f.read().decode(errors="replace")
        pattern = os.path.join(tempfile.gettempdir(), "colabremote-jupyter-token-*", "*")
        for path in glob.glob(pattern):  # other servers' files may come and go meanwhile
            try:
                with open(path) as f:
                    assert server.token not in f.read()
            except FileNotFoundError:
                continue
        status = httpx.get(f"{server.url}/api/status", headers={"Authorization": "token nope"})
        assert status.status_code == 403
        authorized = {"Authorization": f"token {server.token}"}
        assert httpx.get(f"{server.url}/api/status", headers=authorized).is_success
        assert server.token not in repr(server) and server.token not in server.log_text()
    assert server.pid is None


@pytest.mark.slow
def test_jupyter_server_moves_to_another_port_when_its_port_is_taken() -> None:
    """Another process may bind the chosen free port before the server does (many servers start
    at once in a test run): the server starts on another port instead of failing."""
    import socket

    server = JupyterServer()
    taken = server.port
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        with server:
            assert server.port != taken
            assert server.url == f"http://127.0.0.1:{server.port}"
            auth = {"Authorization": f"token {server.token}"}
            assert httpx.get(f"{server.url}/api/status", headers=auth).is_success


def _die() -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_server_that_cannot_stop_its_restarted_kernel_is_stopped_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a kernel died under an emulator session, the runtime's jupyter_server raises in its
    own stop (jupyter_client cannot shut down the kernel it restarted: its ``ready`` future is
    never set) and never exits. stop() sees that in the server's log instead of waiting out its
    timeout, which is set here beyond the test's own: without the check, this test times out."""
    monkeypatch.setattr(JupyterServer, "stop_timeout", 3600.0)
    session = cr.Session("emulator", progress=False)
    try:
        assert session.remote(abs)(-1) == 1
        with pytest.raises(KernelDied):
            session.remote(_die)()
    finally:
        session.close()
    assert session.closed
