"""The fault suite: what goes wrong in real use, made to happen on purpose, and what colabremote
does about it. Faults come from the emulator's switches and fire on events (a progress line, a
step of the open), never after a sleep.

Kernel-side faults (lost results, dead kernels) live in their own tests; see docs/reliability.md
for the guarantees checked here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import colabremote as cr
from colabremote._colab.auth import ClientConfig, EnvironmentToken, GoogleOAuth
from colabremote._colab.auth.client_config import keep_client_file
from colabremote._colab.endpoints import ColabEndpoints
from colabremote._colab.tokens import TokenStore
from colabremote.exceptions import (
    KernelStartError,
    RuntimeNotReleasedWarning,
    SessionForked,
)
from colabremote.testing import ColabEmulator

# Each fault runs a whole emulator session (seconds each): the default run has them.
pytestmark = pytest.mark.slow


def double(x: int) -> int:
    return 2 * x


def raises_keyboard_interrupt() -> None:
    raise KeyboardInterrupt("raised by the function itself")


@pytest.fixture(scope="module")
def emu() -> Iterator[ColabEmulator]:
    with ColabEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def local() -> Iterator[cr.Session]:
    with cr.Session("local", progress=False) as session:
        yield session


def colab(
    emu: ColabEmulator, *, on_progress: Callable[[str], None] | None = None, **options: Any
) -> cr.Session:
    token = EnvironmentToken(emu.mint_access_token())
    return cr.Session(
        "colab",
        base_url=emu.url,
        credentials=token,
        progress=on_progress or False,
        **options,
    )


def when(prefix: str, action: Callable[[], None]) -> Callable[[str], None]:
    """A progress callback that does ``action`` once, when a line starting with ``prefix`` is
    shown: the event a fault is tied to."""
    done = False

    def progress(line: str) -> None:
        nonlocal done
        if not done and line.startswith(prefix):
            done = True
            action()

    return progress


def kernel_posts(emu: ColabEmulator, endpoint: str) -> list[int]:
    """The statuses of the kernel-creation requests that reached a runtime's proxy."""
    return [
        r.status
        for r in emu.requests
        if r.server == f"proxy:{endpoint}" and r.method == "POST" and r.path == "/api/kernels"
    ]


# -- a failed sign-in must not leak a billed runtime -----------------------------------------


def test_a_runtime_that_cannot_be_released_is_reported(emu: ColabEmulator) -> None:
    session = colab(emu).open()
    endpoint = session.runtime().endpoint
    emu.revoke_access_tokens()  # the environment's token stops working; it cannot be refreshed
    try:
        with pytest.warns(RuntimeNotReleasedWarning) as caught:
            session.close()
        assert len(caught) == 1
        message = str(caught[0].message)
        assert endpoint in message
        assert f"colabremote runtimes release {endpoint}" in message
        assert endpoint in emu.assigned_endpoints()  # what the warning says is true
    finally:
        emu.release(endpoint)


def test_a_stopped_environment_token_releases_with_the_stored_sign_in(
    emu: ColabEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    config.mkdir(mode=0o700)
    monkeypatch.setenv("COLABREMOTE_CONFIG_DIR", str(config))
    monkeypatch.setenv("COLABREMOTE_TOKEN_STORE", "file")
    emu.write_client_secrets(tmp_path / "client.json")  # kept for the emulator's own origin,
    keep_client_file(tmp_path / "client.json", config, ColabEndpoints.at(emu.url).origin)
    asyncio.run(sign_in_and_store(emu))  # as `colabremote --base-url ... login` does
    monkeypatch.setenv("COLABREMOTE_ACCESS_TOKEN", emu.mint_access_token())
    session = cr.Session("colab", base_url=emu.url, progress=False).open()  # the env's token
    endpoint = session.runtime().endpoint
    emu.revoke_access_tokens()  # the env's token stops working; the stored sign-in refreshes
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeNotReleasedWarning)
        session.close()
    assert endpoint not in emu.assigned_endpoints()


async def sign_in_and_store(emu: ColabEmulator) -> None:
    """Sign in to the emulator (it approves at once) and store the result, as a login does."""
    ends = ColabEndpoints.at(emu.url)
    oauth = GoogleOAuth.for_endpoints(
        ends,
        ClientConfig.from_mapping(emu.client_config(), source="the emulator"),
        store=TokenStore(origin=ends.origin),  # the emulator's own record, apart from Google's
    )

    def browser(url: str) -> None:
        httpx.get(url, follow_redirects=True, timeout=30)

    try:
        await oauth.login(open_browser=browser, announce=lambda _text: None)
    finally:
        await oauth.aclose()


def test_a_released_runtime_needs_no_warning(emu: ColabEmulator) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeNotReleasedWarning)
        with colab(emu) as session:
            endpoint = session.runtime().endpoint
            emu.release(endpoint)  # released elsewhere: nothing is left to release
    assert endpoint not in emu.assigned_endpoints()


# -- transient failures at open --------------------------------------------------------------


def test_a_503_on_kernel_creation_is_retried(emu: ColabEmulator) -> None:
    fault = when("starting a kernel", lambda: emu.faults.fail_next("/api/kernels", 503))
    with colab(emu, on_progress=fault) as session:
        assert session.remote(double)(21) == 42
        endpoint = session.runtime().endpoint
        assert kernel_posts(emu, endpoint) == [503, 201]  # one kernel, no second one


def test_kernel_creation_says_what_failed_when_retries_run_out(emu: ColabEmulator) -> None:
    before = emu.assigned_endpoints()
    fault = when("starting a kernel", lambda: emu.faults.fail_next("/api/kernels", 503, times=20))
    try:
        with pytest.raises(KernelStartError, match="503") as raised:
            colab(emu, on_progress=fault).open()
        assert "kernel_name" not in str(raised.value)  # the name was fine; the server was busy
        assert emu.assigned_endpoints() == before  # the runtime was released
    finally:
        emu.faults.clear()


def test_a_503_on_the_websocket_upgrade_is_retried(emu: ColabEmulator) -> None:
    # After the kernel POST, the next request under /api/kernels/ is the WebSocket upgrade.
    fault = when("starting a kernel", lambda: emu.faults.fail_next("/api/kernels/*", 503))
    with colab(emu, on_progress=fault) as session:
        assert session.remote(double)(2) == 4
        endpoint = session.runtime().endpoint
        upgrades = [
            r.status
            for r in emu.requests
            if r.server == f"proxy:{endpoint}" and r.path.endswith("/channels")
        ]
        assert upgrades[0] == 503 and len(upgrades) >= 2


def test_a_500_on_the_assign_post_is_reconciled(emu: ColabEmulator) -> None:
    before = emu.assigned_endpoints()
    emu.faults.fail_next_assign(status=500)
    with colab(emu) as session:
        assert session.remote(double)(3) == 6
        assert len(emu.assigned_endpoints() - before) == 1  # one runtime, not two
    assert emu.assigned_endpoints() == before


def test_the_assign_timeout_is_an_option(
    emu: ColabEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emu.faults.assign_delay = 3.0  # Colab commits the VM, then answers late
    try:
        with (
            caplog.at_level(logging.INFO, logger="colabremote.retry"),
            colab(emu, assign_timeout=0.5) as session,
        ):
            assert session.remote(double)(4) == 8
    finally:
        emu.faults.assign_delay = 0.0
    # The POST was given up after 0.5 s and the same-nbh GET found the runtime.
    assert any("assigning a Colab runtime" in r.getMessage() for r in caplog.records)


# -- storms ----------------------------------------------------------------------------------


def test_a_short_proxy_token_lifetime_does_not_cause_a_refresh_storm(emu: ColabEmulator) -> None:
    emu.proxy_token_ttl = 60.0  # shorter than the 5-minute refresh margin
    try:
        with colab(emu) as session:
            f = session.remote(double)
            assert [f(i) for i in range(3)] == [0, 2, 4]
            refreshes = [r for r in emu.requests if r.path == "/tun/m/assignments"]
    finally:
        emu.proxy_token_ttl = 3600.0
    # The old margin scheduled a refresh every 0.1 s for the whole open and the calls.
    assert len(refreshes) <= 1


# -- a session in a forked child -------------------------------------------------------------


def test_a_forked_child_gets_a_clear_error_and_the_parent_keeps_working(
    local: cr.Session,
) -> None:
    f = local.remote(double)
    assert f(1) == 2
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: report what happened through the pipe, then leave at once
        code = 1
        signal.alarm(60)  # a hang kills the child, and the test fails instead of hanging
        try:
            outcomes = []
            for attempt in (lambda: f(2), lambda: local.exec("1"), local.info):
                try:
                    attempt()
                    outcomes.append("ran")
                except SessionForked as exc:
                    outcomes.append("forked" if "make a new session" in str(exc) else "wrong")
            local.close()  # the parent's session: nothing to do here
            os.write(write, ",".join(outcomes).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read().decode()
    assert os.waitstatus_to_exitcode(status) == 0
    assert report == "forked,forked,forked"
    assert f(3) == 6  # the parent's session is untouched
    local.exec("x = 1")


# -- files -----------------------------------------------------------------------------------


def test_download_into_an_existing_directory(local: cr.Session, tmp_path: Path) -> None:
    source = tmp_path / "remote" / "weights.bin"
    source.parent.mkdir()
    source.write_bytes(b"\x00\x01weights")
    target = tmp_path / "here"
    target.mkdir()
    local.download(str(source), target, progress=False)
    assert (target / "weights.bin").read_bytes() == b"\x00\x01weights"
    assert sorted(p.name for p in target.iterdir()) == ["weights.bin"]  # no temporary left


# -- what the kernel reports -----------------------------------------------------------------


def test_keyboard_interrupt_raised_by_user_code_is_reported_as_itself(local: cr.Session) -> None:
    f = local.remote(raises_keyboard_interrupt)
    with pytest.raises(KeyboardInterrupt, match="raised by the function itself") as raised:
        f()
    assert "Remote traceback" in str(raised.value.__cause__)
    assert local.remote(double)(5) == 10  # nothing was interrupted: the next call runs
