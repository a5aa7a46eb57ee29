"""Terminals on the runtime: ``s.terminal()`` on every backend (the emulator's ``/colab/tty``, a
jupyter_server's ``/api/terminals``, a local pty), the emulator's ``/colab/tty`` itself, and
``colabremote shell`` driven through a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import connect

import colabremote as cr
from colabremote.exceptions import ConfigurationError, RemoteTimeout
from colabremote.testing import emulator_of
from colabremote.testing._emulator import ColabEmulator
from tests.conftest import wait_for_path

# Each answer is computed by the shell, so the echo of the typed line never matches it.
FORTY_TWO = r"(?<![(*])\b42\r?\n"


def test_a_command_runs_and_its_output_comes_back(session: cr.Session) -> None:
    with session.terminal() as t:
        t.send("echo $((6*7))\n")
        t.expect(FORTY_TWO, timeout=30)


def test_resize_reaches_the_remote_terminal(session: cr.Session) -> None:
    with session.terminal(cols=100, rows=30) as t:
        t.send("stty size\n")
        t.expect(r"30 100\r?\n", timeout=30)
        t.resize(123, 45)
        t.send("stty size\n")
        t.expect(r"45 123\r?\n", timeout=30)


def test_ctrl_c_stops_the_foreground_command(session: cr.Session, tmp_path: Path) -> None:
    started = tmp_path / "started"
    with session.terminal() as t:
        # One foreground job that says it started: a Ctrl-C after the file exists reaches it.
        t.send(f"sh -c 'touch {started}; exec sleep 100'\n")
        wait_for_path(started)
        t.send("\x03")
        t.send("echo after-$((1+1))\n")
        t.expect(r"after-2\r?\n", timeout=20)  # far less than the 100 s the sleep would take


def test_the_exit_status_is_the_remote_shells(session: cr.Session) -> None:
    t = session.terminal()
    t.send("exit 3\n")
    assert t.wait(timeout=30) == 3
    assert t.ended
    t.close()


def test_a_plain_exit_reports_the_last_commands_status(session: cr.Session) -> None:
    with session.terminal() as t:
        t.send("false\n")
        t.send("exit\n")
        assert t.wait(timeout=30) == 1
        assert "__colabremote" not in t.read(timeout=0)  # the marker never shows


def test_close_right_after_open_ends_the_shell_with_exit(session: cr.Session) -> None:
    """Readline may swallow the keys typed just after close's Ctrl-C (bash ran ``xit``): the
    shell must still end by ``exit``, which reports a status, not by the hang-up after the
    grace period, which reports none."""
    for _ in range(3):
        t = session.terminal()
        t.close()
        assert t.ended and t.exit_status is not None


def test_bad_sizes_are_refused_before_anything_is_sent(session: cr.Session) -> None:
    with pytest.raises(ConfigurationError, match="both cols= and rows="):
        session.terminal(cols=80)
    with session.terminal() as t:
        with pytest.raises(ConfigurationError, match="resize"):
            t.resize(0, 24)
        with pytest.raises(RemoteTimeout, match="nothing-like-this"):
            t.expect("nothing-like-this", timeout=0.5)


def test_the_async_terminal() -> None:
    async def main() -> int | None:
        async with cr.AsyncSession("local", progress=False) as s:
            t = await s.terminal(cols=70, rows=10)
            async with t:
                await t.send("stty size; echo $((6*7))\n")
                await t.expect(r"10 70\r?\n42\r?\n", timeout=30)
                await t.send("exit 5\n")
                return await t.wait(timeout=30)

    assert asyncio.run(main()) == 5


# -- the emulator's /colab/tty itself --------------------------------------------------------


@pytest.fixture(scope="module")
def emulated() -> Iterator[cr.Session]:
    with cr.Session("emulator", progress=False) as s:
        yield s


def _tty(s: cr.Session) -> tuple[str, str, ColabEmulator]:
    """The runtime's /colab/tty URL, a valid proxy token, and the emulator."""
    emulator = emulator_of(s)
    endpoint = s.runtime().endpoint
    runtime = emulator.runtime(endpoint)
    now = time.time()
    token = next(t for t, expires in runtime.proxy_tokens.items() if expires > now)
    return runtime.url.replace("http://", "ws://") + "/colab/tty", token, emulator


async def _run_42(url: str, headers: dict[str, str] | None = None) -> str:
    """Type ``echo $((6*7))`` into the raw socket and read frames until 42 comes back."""
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"cols": 90, "rows": 20}))
        await ws.send(json.dumps({"data": "echo $((6*7))\n"}))
        seen = ""
        while not re.search(FORTY_TWO, seen):
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert set(frame) == {"data"}
            seen += frame["data"]
        await ws.send(json.dumps({"data": "exit\n"}))
        return seen


@pytest.mark.slow
def test_colab_tty_takes_the_token_in_the_header(emulated: cr.Session) -> None:
    url, token, emulator = _tty(emulated)
    emulator.clear_requests()
    asyncio.run(_run_42(url, {"X-Colab-Runtime-Proxy-Token": token}))
    logged = [r for r in emulator.requests if r.path == "/colab/tty"]
    assert logged and all(token not in repr(r) for r in logged)


@pytest.mark.slow
def test_colab_tty_takes_the_token_in_the_query(emulated: cr.Session) -> None:
    url, token, emulator = _tty(emulated)
    emulator.clear_requests()
    asyncio.run(_run_42(f"{url}?colab-runtime-proxy-token={token}"))
    logged = [r for r in emulator.requests if r.path == "/colab/tty"]
    assert logged and all(token not in repr(r) for r in logged)


@pytest.mark.slow
def test_colab_tty_refuses_a_wrong_or_missing_token(emulated: cr.Session) -> None:
    url, _token, _emulator = _tty(emulated)
    for headers in ({"X-Colab-Runtime-Proxy-Token": "emu-rt-wrong"}, None):
        with pytest.raises(websockets.InvalidStatus) as refused:
            asyncio.run(_run_42(url, headers))
        assert refused.value.response.status_code == 401


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie nobody reaped counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_closing_the_socket_kills_the_shell_and_its_jobs(
    emulated: cr.Session, tmp_path: Path
) -> None:
    url, token, _emulator = _tty(emulated)
    pids = tmp_path / "pids"

    async def start_and_hang_up() -> None:
        headers = {"X-Colab-Runtime-Proxy-Token": token}
        async with connect(url, additional_headers=headers) as ws:
            # A foreground job, and a background one that bash puts in a process group of its own.
            line = f"sleep 1000 & echo $$ $! > {pids}.tmp; mv {pids}.tmp {pids}; sleep 1000\n"
            await ws.send(json.dumps({"data": line}))
            await asyncio.to_thread(wait_for_path, pids)
        # Leaving the block closes the socket: no exit typed, no Ctrl-C.

    asyncio.run(start_and_hang_up())
    shell, background = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 30
    while not (_gone(shell) and _gone(background)):
        assert time.monotonic() < deadline, "the shell or its job outlived the socket"
        time.sleep(0.05)
    foreground = [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and _session_of(int(p)) == shell and not _gone(int(p))
    ]
    assert foreground == []


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


# -- colabremote shell ------------------------------------------------------------------------


def _take_terminal() -> None:
    """In the child, after setsid: its stdin (the test's pty) becomes its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.fixture(scope="module")
def emu() -> Iterator[ColabEmulator]:
    with ColabEmulator() as emulator:
        yield emulator


def _read_until(fd: int, marker: bytes, seen: bytearray, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{marker!r} did not appear; the terminal showed {bytes(seen)[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            assert chunk, f"the terminal closed before {marker!r}: {bytes(seen)[-500:]!r}"
            seen.extend(chunk)


@pytest.mark.slow
def test_colabremote_shell_is_an_interactive_terminal(emu: ColabEmulator, tmp_path: Path) -> None:
    from colabremote._colab.auth import EnvironmentToken

    token = emu.mint_access_token()
    held = cr.Session(
        "colab",
        base_url=emu.url,
        credentials=EnvironmentToken(token),
        release=False,
        progress=False,
    )
    with held:
        endpoint = held.runtime().endpoint
    env = dict(
        os.environ,
        COLABREMOTE_ACCESS_TOKEN=token,
        COLABREMOTE_CONFIG_DIR=str(tmp_path / "config"),
        COLABREMOTE_TOKEN_STORE="file",
    )
    master, follower = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    before = termios.tcgetattr(follower)
    process = subprocess.Popen(
        [sys.executable, "-m", "colabremote", "--base-url", emu.url, "shell", endpoint],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        start_new_session=True,
        preexec_fn=_take_terminal,  # its own terminal, so a resize sends it SIGWINCH
    )
    try:
        seen = bytearray()
        # Raw mode: Enter arrives as "\r", and the remote terminal turns it into a newline.
        os.write(master, b"echo $((6*7)); stty size\r")
        _read_until(master, b"42\r\n33 111\r\n", seen)
        started = tmp_path / "started"
        os.write(master, f"sh -c 'touch {started}; exec sleep 100'\r".encode())
        wait_for_path(started)
        os.write(master, b"\x03")  # Ctrl-C as a key: passed through, it stops the remote sleep
        os.write(master, b"echo after-$((1+1))\r")
        _read_until(master, b"after-2\r\n", seen)
        # A resize here reaches the remote program as SIGWINCH, with the new size.
        resized = tmp_path / "waiting"
        waiter = f"trap 'stty size; exit' WINCH; touch {resized}; while :; do sleep 0.05; done"
        os.write(master, f'sh -c "{waiter}"\r'.encode())
        wait_for_path(resized)
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 44, 122, 0, 0))
        _read_until(master, b"44 122\r\n", seen)
        os.write(master, b"exit 3\r")
        assert process.wait(timeout=60) == 3
        assert b"__colabremote" not in seen
        assert termios.tcgetattr(follower) == before  # raw mode undone
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
        os.close(follower)
        emu.release(endpoint)


@pytest.mark.slow
def test_colabremote_shell_says_which_runtimes_there_are(
    emu: ColabEmulator, tmp_path: Path
) -> None:
    from colabremote._colab.auth import EnvironmentToken

    token = emu.mint_access_token(email="shell-choice@example.com")
    env = dict(
        os.environ,
        COLABREMOTE_ACCESS_TOKEN=token,
        COLABREMOTE_CONFIG_DIR=str(tmp_path / "config"),
        COLABREMOTE_TOKEN_STORE="file",
    )
    command = [sys.executable, "-m", "colabremote", "--base-url", emu.url, "shell"]

    def shell(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, env=env, timeout=120
        )

    none = shell()
    assert none.returncode == 1 and "no Colab runtime is assigned" in none.stderr
    endpoints = []
    for gpu in ("T4", "L4"):
        s = cr.Session(
            "colab",
            base_url=emu.url,
            credentials=EnvironmentToken(token),
            gpu=gpu,
            release=False,
            progress=False,
        )
        with s:
            endpoints.append(s.runtime().endpoint)
    try:
        several = shell()
        assert several.returncode == 1
        assert all(e in several.stderr for e in endpoints)
        assert "colabremote shell ENDPOINT" in several.stderr
        unknown = shell("m-s-nothing-here")
        assert unknown.returncode == 1 and "'m-s-nothing-here'" in unknown.stderr
        assert token not in several.stderr + unknown.stderr
    finally:
        for endpoint in endpoints:
            emu.release(endpoint)
