"""Detached calls beyond the compliance suite: a client process killed while its call runs, a
WebSocket dropped during the call's output, a reclaimed runtime, closing with calls running, the
CLI, and what local kernels refuse. (Spawn, logs, result and cancel on every backend are in
test_compliance.py.)"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import colabremote as cr
from colabremote._cli import main
from colabremote._colab import control
from colabremote._colab.auth import EnvironmentToken
from colabremote._detached import calls as detached_calls
from colabremote._detached.files import files_for
from colabremote._detached.public import CallStatus
from colabremote._kernel.agent.detached import LOG_SEGMENT_BYTES, evict
from colabremote._retry import retrying
from colabremote.exceptions import (
    CallEvicted,
    CallFilesInvalid,
    CallNotFound,
    ConfigurationError,
    DetachedCallsWarning,
    KernelDied,
    RuntimeGone,
    SessionClosed,
)
from colabremote.testing import ColabEmulator, JupyterServer, drop_connection

from .conftest import wait_for_path

EXPECTED = "before 0\nbefore 1\nbefore 2\nafter 0\nafter 1\nafter 2\n"


def job(started: str, go: str) -> str:
    """Prints, says it started, waits for the test's word, prints again."""
    for i in range(3):
        print(f"before {i}", flush=True)
    with open(started, "w"):
        pass
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.02)
    for i in range(3):
        print(f"after {i}", flush=True)
    return "finished"


def double(x: int) -> int:
    return 2 * x


@pytest.fixture(scope="module")
def emu() -> Iterator[ColabEmulator]:
    with ColabEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def endpoint(emu: ColabEmulator) -> Iterator[str]:
    """A runtime that tests attach to with endpoint= (a new runtime starts a server of its own)."""
    with colab(emu, release=False) as session:
        found = session.runtime().endpoint
    yield found
    emu.release(found)


@pytest.fixture(scope="module")
def local() -> Iterator[cr.Session]:
    with cr.Session("local", progress=False) as session:
        yield session


def colab(emu: ColabEmulator, **options: Any) -> cr.Session:
    token = EnvironmentToken(emu.mint_access_token())
    return cr.Session("colab", base_url=emu.url, credentials=token, progress=False, **options)


# -- local kernels ---------------------------------------------------------------------------


def test_local_calls_cannot_be_attached_from_another_process() -> None:
    session = cr.Session("local", progress=False)  # refused before any kernel starts
    try:
        with pytest.raises(ConfigurationError, match="cannot be attached from another one"):
            session.call("local-1:c-0123456789abcdef")
        with pytest.raises(ConfigurationError, match="not a detached call id"):
            session.call("no-colon")
    finally:
        session.close()


@pytest.mark.slow
def test_an_evicted_call_says_so(local: cr.Session) -> None:
    call = cr.remote(double, session=local).spawn(21)
    assert call.result(timeout=60) == 42
    with pytest.raises(CallNotFound, match="no detached call"):
        local.call(f"local-{os.getpid()}:c-0000000000000000")
    home = files_for(local._core.backend).home
    assert home is not None
    assert call.id in evict(home, keep_calls=1)  # what the agent does when a call starts
    with pytest.raises(CallEvicted, match=call.id):
        local.call(call.id)
    with pytest.raises(CallEvicted):
        call.result()


def _fake_call(home: str, **files: bytes | dict[str, Any]) -> str:
    """A call's folder as a hostile kernel might write it: ``files`` over a plain done call."""
    folder = f"c-{secrets.token_hex(8)}"
    call_id = f"local-{os.getpid()}:{folder}"
    (Path(home) / folder).mkdir()
    written: dict[str, bytes | dict[str, Any]] = {
        "meta.json": {"id": call_id, "name": "fake", "pid": os.getpid(), "started": 1.0},
        "state.json": {"state": "done", "finished": 2.0},
        **files,
    }
    for name, content in written.items():
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        (Path(home) / folder / name).write_bytes(data)
    return call_id


def test_a_hostile_kernels_call_files_are_checked_before_use(local: cr.Session) -> None:
    home = files_for(local._core.backend).home
    assert home is not None
    big = _fake_call(home, **{"meta.json": json.dumps({"pad": "x" * (2 << 20)}).encode()})
    odd_files: dict[str, bytes | dict[str, Any]] = {
        "state.json": {"state": "failed", "finished": 1e300, "error": ["not", "text"]},
        "log.000000": b"y" * (LOG_SEGMENT_BYTES + 1),
    }
    odd = _fake_call(home, **odd_files)
    loud = _fake_call(home, **{"state.json": {"state": "failed", "error": "E: \x1b[2Jx\ny"}})
    bad = _fake_call(home, **{"result.json": {"status": "ok", "parts": [5, -1]}})
    (Path(home) / bad.rsplit(":", 1)[1] / "result.bin").write_bytes(b"abcd")
    liar = _fake_call(home, **{"meta.json": {"id": f"local-{os.getpid()}:c-{'0' * 16}"}})
    (Path(home) / "not-a-call").mkdir()
    try:
        with pytest.raises(CallFilesInvalid, match="more than the 1048576 bytes"):
            local.call(big)
        status = local.call(odd).status()
        assert (status.state, status.finished, status.error) == ("failed", None, None)
        assert local.call(loud).status().error == "E:  [2Jx y"  # nothing for a terminal to obey
        with pytest.raises(CallFilesInvalid, match=r"log\.000000"):
            local.call(odd).logs()
        with pytest.raises(CallFilesInvalid, match="do not add up"):
            local.call(bad).result()
        listed = [status.id for status in local.calls()]
        assert odd in listed and bad in listed
        assert big not in listed and liar not in listed and len(listed) == len(set(listed))
    finally:
        for call_id in (big, odd, loud, bad, liar, "x:not-a-call"):
            shutil.rmtree(Path(home) / call_id.rsplit(":", 1)[1])


@pytest.mark.slow
def test_a_servers_oversized_call_file_is_refused_unread(jupyter_server: JupyterServer) -> None:
    home = Path(jupyter_server.root_dir) / "colabremote-calls"
    home.mkdir(exist_ok=True)
    folder = f"c-{secrets.token_hex(8)}"
    call_id = f"{'0' * 8}-0000-0000-0000-{'0' * 12}:{folder}"
    big = _fake_call(str(home), **{"meta.json": json.dumps({"pad": "x" * (2 << 20)}).encode()})
    (home / big.rsplit(":", 1)[1]).rename(home / folder)
    options: dict[str, Any] = {"url": jupyter_server.url, "token": jupyter_server.token}
    try:
        with cr.Session("jupyter", progress=False, **options) as session:
            with pytest.raises(CallFilesInvalid, match="more than the 1048576 bytes"):
                session.call(call_id)
            assert call_id not in [status.id for status in session.calls()]
    finally:
        shutil.rmtree(home / folder)


def doubles_when_told(value: Any, started: str, go: str) -> int:
    with open(started, "w"):
        pass
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.02)
    return 2 * int(value)


@pytest.mark.slow
def test_a_ref_given_to_a_spawned_call_lives_until_the_call_ends(
    local: cr.Session, tmp_path: Path
) -> None:
    """Until the kernel has taken it: a call the kernel turns back (it was aborting) is sent
    again, and must find the value still kept."""
    started, go = tmp_path / "started", tmp_path / "go"
    ref = local.put(21)
    alive = weakref.ref(ref)
    call = cr.remote(doubles_when_told, session=local).spawn(ref, str(started), str(go))
    del ref
    gc.collect()
    wait_for_path(started)
    assert alive() is not None
    go.touch()
    assert call.result(timeout=60) == 42


@pytest.mark.slow
def test_a_cancel_that_loses_the_race_with_the_end_stops_nothing_else(
    local: cr.Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended = cr.remote(double, session=local).spawn(1)
    assert ended.result(timeout=60) == 2
    started, go = tmp_path / "started", tmp_path / "go"
    later = cr.remote(doubles_when_told, session=local).submit(5, str(started), str(go))
    wait_for_path(started)
    # cancel() reads the state just before the call ends: "running".
    real = detached_calls.DetachedCall.status
    stale = [CallStatus(ended.id, "double", "running")]

    async def status(self: detached_calls.DetachedCall, *, check_kernel: bool = True) -> Any:
        return stale.pop() if stale else await real(self, check_kernel=check_kernel)

    monkeypatch.setattr(detached_calls.DetachedCall, "status", status)
    assert ended.cancel().state == "done"
    go.touch()
    assert later.result(timeout=60) == 10  # not interrupted


@pytest.mark.slow
def test_closing_a_local_session_removes_its_calls_and_lets_it_go() -> None:
    session = cr.Session("local", progress=False)
    call = session.remote(double).spawn(21)
    assert call.result(timeout=60) == 42
    home = files_for(session._core.backend).home
    assert home is not None and os.path.isdir(home)
    session.close()
    assert not os.path.exists(home)
    with pytest.raises(SessionClosed, match="attach from an open session"):
        call.result()
    backend = weakref.ref(session._core.backend)
    del session, call
    gc.collect()
    assert backend() is None  # nothing of colabremote's keeps a closed session's backend


def shouts(word: str) -> str:
    print(word, flush=True)
    return word.upper()


@pytest.mark.slow
def test_the_async_forms() -> None:
    async def main() -> None:
        async with cr.AsyncSession("local", progress=False) as session:
            call = await session.remote(shouts).spawn_aio("hello")
            assert "".join([piece async for piece in call.follow()]) == "hello\n"
            assert await call.result(timeout=60) == "HELLO"
            again = await session.call(call.id)
            assert (await again.status()).state == "done"
            assert await again.logs() == "hello\n"
            assert call.id in [status.id for status in await session.calls()]
            assert (await again.cancel()).state == "done"  # it had ended: nothing to cancel

    asyncio.run(main())


# -- runtimes that outlive the client ----------------------------------------------------------

SPAWNER = textwrap.dedent(
    """
    import os, sys, time
    import colabremote as cr

    def job(started, go):
        for i in range(3):
            print(f"before {i}", flush=True)
        with open(started, "w"):
            pass
        deadline = time.monotonic() + 60
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.02)
        for i in range(3):
            print(f"after {i}", flush=True)
        return "finished"

    base_url, id_file, started, go = sys.argv[1:5]
    session = cr.Session("colab", base_url=base_url, progress=False)
    call = session.remote(job).spawn(started, go)
    with open(id_file + ".part", "w") as f:
        f.write(call.id)
    os.replace(id_file + ".part", id_file)
    time.sleep(3600)  # the test kills this process here
    """
)


@pytest.mark.slow
def test_a_killed_client_leaves_its_call_running(emu: ColabEmulator, tmp_path: Path) -> None:
    """SIGKILL the spawning process mid-call; a new client gets the whole output once and the
    result once; once Colab reclaims the runtime, attaching raises RuntimeGone naming the call."""
    script = tmp_path / "spawner.py"
    script.write_text(SPAWNER)
    id_file, started, go = tmp_path / "id", tmp_path / "started", tmp_path / "go"
    env = dict(os.environ, COLABREMOTE_ACCESS_TOKEN=emu.mint_access_token())
    process = subprocess.Popen(
        [sys.executable, str(script), emu.url, str(id_file), str(started), str(go)], env=env
    )
    try:
        wait_for_path(id_file)
        wait_for_path(started)
    finally:
        process.kill()
    assert process.wait(timeout=30) == -signal.SIGKILL
    call_id = id_file.read_text()
    endpoint = call_id.rsplit(":", 1)[0]
    assert endpoint in emu.assigned_endpoints()
    go.touch()
    with colab(emu, endpoint=endpoint) as session:
        call = session.call(call_id)
        assert "".join(call.logs(follow=True)) == EXPECTED
        assert call.result(timeout=60) == "finished"
        assert [s.state for s in session.calls() if s.id == call_id] == ["done"]
    emu.release(endpoint, reason="idle")
    reclaimed = colab(emu, endpoint=endpoint)
    try:
        with pytest.raises(RuntimeGone, match=call_id):
            reclaimed.call(call_id)
    finally:
        reclaimed.close()


@pytest.mark.slow
def test_a_dropped_websocket_during_the_output_loses_nothing(
    emu: ColabEmulator, endpoint: str, tmp_path: Path
) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    with colab(emu, endpoint=endpoint) as session:
        call = session.remote(job).spawn(str(started), str(go))
        wait_for_path(started)
        drop_connection(session)
        go.touch()
        assert "".join(call.logs(follow=True)) == EXPECTED
        assert call.result(timeout=60) == "finished"
        assert session.remote(double)(4) == 8  # reconnected, after the call's end


@pytest.mark.slow
def test_closing_keeps_the_kernel_of_a_running_call(
    jupyter_server: JupyterServer, tmp_path: Path
) -> None:
    """On a Jupyter server: close() warns, naming the call, and leaves its kernel; another
    session on the server follows the call to its end."""
    started, go = tmp_path / "started", tmp_path / "go"
    options: dict[str, Any] = {"url": jupyter_server.url, "token": jupyter_server.token}
    session = cr.Session("jupyter", progress=False, **options)
    call = session.remote(job).spawn(str(started), str(go))
    wait_for_path(started)
    with pytest.warns(DetachedCallsWarning, match=call.id) as warned:
        session.close()
    warning = warned[0].message
    assert isinstance(warning, DetachedCallsWarning) and warning.call_ids == (call.id,)
    kernel = f"{jupyter_server.url}/api/kernels/{call.id.rsplit(':', 1)[0]}"
    auth = {"Authorization": f"token {jupyter_server.token}"}
    try:
        assert httpx.get(kernel, headers=auth, timeout=30).status_code == 200
        # Any session on the server attaches, and starts no kernel for it.
        attached = cr.Session("jupyter", progress=False, **options)
        try:
            again = attached.call(call.id)
            assert again.status().state == "running"
            go.touch()
            assert again.result(timeout=60) == "finished"
            assert again.logs() == EXPECTED
        finally:
            attached.close()
    finally:
        httpx.delete(kernel, headers=auth, timeout=30)


def dies(started: str) -> None:
    """Says it started, then kills its kernel (as the OOM killer would)."""
    with open(started, "w"):
        pass
    os.kill(os.getpid(), signal.SIGKILL)  # its first heartbeat was written before it started


@pytest.mark.slow
def test_a_call_whose_kernel_died_is_lost(
    emu: ColabEmulator, endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server restarts a dead kernel under the same id, so only the call's heartbeat, which
    stopped, tells that the call is lost."""
    monkeypatch.setattr(detached_calls, "HEARTBEAT_SECONDS", 0.1)
    monkeypatch.setattr(detached_calls, "HEARTBEAT_STALE_SECONDS", 1.0)
    monkeypatch.setattr(detached_calls, "KERNEL_CHECK_SECONDS", 0.1)
    started = tmp_path / "started"
    with colab(emu, endpoint=endpoint) as session:
        call = session.remote(dies).spawn(str(started))
        wait_for_path(started)
        # Another session, which did not see the kernel die: only the heartbeat tells it.
        with colab(emu, endpoint=endpoint) as other:
            again = other.call(call.id)
            with pytest.raises(KernelDied, match="ended before the call did"):
                again.result(timeout=30)
            assert again.status().state == "lost"


@pytest.mark.slow
def test_a_call_seen_dying_with_its_kernel_keeps_nothing_running(
    emu: ColabEmulator, endpoint: str, tmp_path: Path
) -> None:
    """The spawning session saw the kernel die under the call: the call is lost at once (not
    after its heartbeat has stood still for minutes), and close() keeps no kernel for it."""
    started = tmp_path / "started"
    session = colab(emu, endpoint=endpoint)
    try:
        call = session.remote(dies).spawn(str(started))
        wait_for_path(started)
        with pytest.raises(KernelDied, match="ended before the call did"):
            call.result(timeout=30)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DetachedCallsWarning)
            session.close()


# -- the command line --------------------------------------------------------------------------


def test_cli_refuses_ids_it_cannot_reach_before_any_request(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLABREMOTE_BASE_URL", "http://127.0.0.1:9")  # a request would fail
    kernel = "0123abcd-0000-4000-8000-0123456789ab"
    for argv, said in [
        (["logs", "no-colon"], "not a detached call id"),
        (["cancel", "m-s-1:../c-0123456789abcdef"], "not a detached call id"),
        (["logs", f"local-12:c-{'0' * 16}"], "ran on a local kernel"),
        (["cancel", f"{kernel}:c-{'0' * 16}"], f"Jupyter server kernel {kernel}"),
    ]:
        assert main(argv) == 1
        assert said in capsys.readouterr().err


@pytest.mark.slow
def test_cli_lists_shows_cancels_and_keeps_alive(
    emu: ColabEmulator,
    endpoint: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLABREMOTE_ACCESS_TOKEN", emu.mint_access_token())
    monkeypatch.setenv("COLABREMOTE_BASE_URL", emu.url)
    started, go = tmp_path / "started", tmp_path / "go"
    with colab(emu, endpoint=endpoint) as session:
        finished = session.remote(double).spawn(5)
        assert finished.result(timeout=60) == 10
        running = session.remote(job).spawn(str(started), str(go))
        wait_for_path(started)
        with pytest.warns(DetachedCallsWarning):
            session.close()
    capsys.readouterr()
    assert main(["calls", endpoint]) == 0
    listing = capsys.readouterr().out
    assert f"{finished.id}  double  done" in listing
    assert f"{running.id}  job  running" in listing
    assert main(["logs", running.id]) == 0
    assert capsys.readouterr().out == "before 0\nbefore 1\nbefore 2\n"
    assert main(["cancel", running.id]) == 0
    assert capsys.readouterr().out == f"{running.id}: cancelled\n"
    assert main(["logs", "--follow", running.id]) == 1  # it ended cancelled
    assert "cancelled" in capsys.readouterr().err
    assert main(["keep-alive", "m-s-nothing"]) == 1
    assert "no Colab runtime 'm-s-nothing'" in capsys.readouterr().err
    # keep-alive runs until Ctrl-C: a process of its own, interrupted once it has pinged.
    before = emu.keepalive_count(endpoint)
    command = [sys.executable, "-m", "colabremote", "keep-alive", endpoint, "--interval", "0.05"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            assert f"keeping runtime {endpoint} alive" in process.stdout.readline()
            deadline = time.monotonic() + 30
            while emu.keepalive_count(endpoint) < before + 3:
                assert time.monotonic() < deadline, "no keep-alive pings arrived"
                time.sleep(0.02)
        finally:
            process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0


@pytest.mark.slow
def test_keep_alive_pings_on_past_a_failed_ping(
    emu: ColabEmulator,
    endpoint: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLABREMOTE_ACCESS_TOKEN", emu.mint_access_token())
    monkeypatch.setenv("COLABREMOTE_BASE_URL", emu.url)
    monkeypatch.setattr(control, "retrying", functools.partial(retrying, attempts=1))
    emu.faults.fail_next(f"/tun/m/{endpoint}/keep-alive/", status=503)
    before = emu.keepalive_count(endpoint)
    pinged = threading.Event()

    def stop_once_pinged() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not pinged.is_set():
            if emu.keepalive_count(endpoint) >= before + 2:
                pinged.set()
            time.sleep(0.01)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)  # Ctrl-C

    threading.Thread(target=stop_once_pinged, daemon=True).start()
    assert main(["keep-alive", endpoint, "--interval", "0.01"]) == 0
    assert pinged.is_set()
    assert "a ping failed" in capsys.readouterr().err


@pytest.mark.slow
def test_keep_alive_in_the_background_until_stopped(
    emu: ColabEmulator,
    endpoint: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLABREMOTE_ACCESS_TOKEN", emu.mint_access_token())
    monkeypatch.setenv("COLABREMOTE_BASE_URL", emu.url)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    before = emu.keepalive_count(endpoint)
    assert main(["keep-alive", endpoint, "--background", "--interval", "0.05"]) == 0
    said = capsys.readouterr().out
    assert f"keeping runtime {endpoint} alive in the background" in said
    pid = int(re.search(r"\(pid (\d+),", said).group(1))  # type: ignore[union-attr]
    try:
        deadline = time.monotonic() + 30
        while emu.keepalive_count(endpoint) < before + 3:  # it pings on its own
            assert time.monotonic() < deadline, "no keep-alive pings arrived"
            time.sleep(0.02)
        assert main(["keep-alive", endpoint, "--background"]) == 0
        assert f"already runs in the background (pid {pid})" in capsys.readouterr().out
    finally:
        assert main(["keep-alive", endpoint, "--stop"]) == 0
    assert f"stopped the background keep-alive of {endpoint} (pid {pid})" in (
        capsys.readouterr().out
    )
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert main(["keep-alive", endpoint, "--stop"]) == 1
    assert "no keep-alive of" in capsys.readouterr().err
    assert main(["keep-alive", "../etc", "--stop"]) == 1  # never a path outside its folder
    assert "is not a runtime endpoint" in capsys.readouterr().err
