"""The Colab backend end to end against the emulator: assign, call, keep-alive, proxy token
expiry, dropped sockets, refusals and release."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import colabremote as cr
from colabremote._colab.auth import EnvironmentToken
from colabremote.exceptions import (
    AccountBlocked,
    NotEntitled,
    QuotaExceeded,
    RuntimeGone,
    RuntimeNotReleasedWarning,
    TooManyRuntimes,
)
from colabremote.testing import ColabEmulator, emulator_of

from .conftest import wait_for_path

# Whole emulator sessions, seconds each; test_emulator.py keeps fast emulator tests.
pytestmark = pytest.mark.slow


def double(x: int) -> int:
    print("doubling on the runtime", flush=True)
    return 2 * x


def slow_double(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return 2 * x


@pytest.fixture(scope="module")
def emu() -> Iterator[ColabEmulator]:
    with ColabEmulator() as emulator:
        yield emulator


def colab(emu: ColabEmulator, **options: Any) -> cr.Session:
    token = EnvironmentToken(emu.mint_access_token())
    return cr.Session("colab", base_url=emu.url, credentials=token, progress=False, **options)


def live(emu: ColabEmulator) -> set[str]:
    return {rt.endpoint for rt in emu.runtimes if not getattr(rt, "released", False)}


def test_assign_call_and_release(emu: ColabEmulator) -> None:
    before = live(emu)
    with colab(emu, gpu="T4") as session:
        assert session.remote(double)(21) == 42
        details = session.info().details
        assert details["accelerator"] == "T4" and details["variant"] == "GPU"
        endpoint = details["endpoint"]
        assert endpoint in live(emu)
        assert "token" not in repr(details).lower().replace("proxy_token_expires", "")
    assert live(emu) == before  # released at close


def test_keep_alive_while_a_call_runs(emu: ColabEmulator) -> None:
    with colab(emu, keep_alive_seconds=1) as session:  # the shortest interval allowed
        endpoint = session.info().details["endpoint"]
        assert session.remote(slow_double)(2, 3.5) == 4  # kernel traffic is not enough
        assert emu.keepalive_count(endpoint) >= 3
        keepalives = [r for r in emu.requests if "keep-alive" in r.path]
        assert all(r.headers.get("X-Colab-Tunnel") == "Google" for r in keepalives)
        logged = len(emu.requests)
        emu.clear_requests()
        assert len(emu.requests) <= 1 < logged  # at most one ping since the clearing


def test_proxy_token_expiry_mid_session(emu: ColabEmulator) -> None:
    with colab(emu) as session:
        f = session.remote(double)
        assert f(1) == 2
        emu.expire_proxy_tokens()
        emu.drop_websockets()  # the reconnection meets the expired token: 404, refresh, retry
        assert f(2) == 4
        session.exec("print('still here')")


def announced_double(x: int, started: str, seconds: float) -> int:
    Path(started).touch()
    time.sleep(seconds)
    return 2 * x


def test_dropped_websocket_loses_no_result(emu: ColabEmulator, tmp_path: Path) -> None:
    with colab(emu) as session:
        f = session.remote(announced_double)
        future = f.submit(5, str(tmp_path / "started"), 1.0)
        wait_for_path(tmp_path / "started")  # the call runs on the kernel now
        assert emu.drop_websockets() >= 1
        assert future.result(timeout=60) == 10


def kernel_deletes(emu: ColabEmulator, endpoint: str) -> int:
    return sum(
        1
        for r in emu.requests
        if r.server == f"proxy:{endpoint}" and r.method == "DELETE" and "/api/kernels/" in r.path
    )


def test_releasing_does_not_delete_the_kernel_first(emu: ColabEmulator) -> None:
    with colab(emu) as session:
        endpoint = session.runtime().endpoint
        assert session.remote(double)(1) == 2
    assert endpoint not in live(emu)
    assert kernel_deletes(emu, endpoint) == 0  # unassigning ends it: one round trip saved


def test_attached_runtime_is_left_running(emu: ColabEmulator) -> None:
    with colab(emu, release=False) as first:
        endpoint = first.info().details["endpoint"]
    assert endpoint in live(emu)
    assert kernel_deletes(emu, endpoint) == 1  # the runtime stays: our kernel is shut down
    with colab(emu, endpoint=endpoint) as attached:
        assert attached.remote(double)(4) == 8
        assert attached.info().details["release_on_close"] is False
    assert endpoint in live(emu)
    assert kernel_deletes(emu, endpoint) == 2
    emu.release(endpoint)


def test_attaching_to_an_unknown_runtime(emu: ColabEmulator) -> None:
    with pytest.raises(RuntimeGone, match="colabremote runtimes"):
        colab(emu, endpoint="m-s-no-such-runtime").open()


@pytest.mark.parametrize(
    ("fault", "error", "hint"),
    [
        ({"status": 412}, TooManyRuntimes, "release"),
        ({"status": 400}, NotEntitled, ""),
        ({"outcome": 2}, QuotaExceeded, "usage limits"),
        ({"outcome": 5}, AccountBlocked, "blocked"),
    ],
)
def test_assign_refusals_are_typed(
    emu: ColabEmulator, fault: dict[str, int], error: type[Exception], hint: str
) -> None:
    before = live(emu)
    emu.faults.fail_next_assign(**fault)
    session = colab(emu, gpu="A100")
    with pytest.raises(error) as info:
        session.open()
    assert hint in str(info.value).lower()
    assert session.closed
    assert live(emu) == before  # nothing leaked


def test_emulator_backend_signs_in_for_real() -> None:
    with cr.Session("emulator", progress=False) as session:
        assert session.remote(double)(5) == 10
        emulator = emulator_of(session)
        paths = [r.path for r in emulator.requests]
        assert "/o/oauth2/v2/auth" in paths and "/token" in paths


def test_revoked_access_token_is_dropped_and_refreshed() -> None:
    """A 401 drops the cached access token; the retry refreshes it instead of resending it."""
    with cr.Session("emulator", progress=False) as session:
        f = session.remote(double)
        assert f(1) == 2
        emulator = emulator_of(session)
        emulator.revoke_access_tokens()
        emulator.expire_proxy_tokens()
        emulator.drop_websockets()  # reconnecting needs a new proxy token: a control-plane call
        assert f(2) == 4
        colab = [r for r in emulator.requests if r.server == "colab"]
        assert any(r.status == 401 for r in colab)  # the revoked token was refused once
        refreshes = [r for r in colab if r.path == "/token" and r.method == "POST"]
        assert len(refreshes) >= 2  # the sign-in's code exchange, then a refresh


class MintingCredentials:
    """Credentials that can drop their token: a fresh one is minted after ``invalidate``."""

    source = "test"

    def __init__(self, emu: ColabEmulator) -> None:
        self.emu = emu
        self.current = emu.mint_access_token()
        self.invalidated = 0

    async def token(self) -> str:
        return self.current

    def invalidate(self) -> None:
        self.invalidated += 1
        self.current = self.emu.mint_access_token()

    async def aclose(self) -> None:
        return None


def test_credentials_given_to_a_session_are_invalidated_after_a_401(emu: ColabEmulator) -> None:
    credentials = MintingCredentials(emu)
    with cr.Session("colab", base_url=emu.url, credentials=credentials, progress=False) as s:
        f = s.remote(double)
        assert f(1) == 2
        emu.revoke_access_tokens()
        emu.expire_proxy_tokens()
        emu.drop_websockets()
        assert f(2) == 4
    assert credentials.invalidated >= 1


def test_a_revoked_token_that_cannot_be_refreshed_fails_at_once(emu: ColabEmulator) -> None:
    """A token from the environment cannot be refreshed: the call says to sign in again,
    instead of reconnecting until the deadline and reporting a lost connection."""
    from colabremote.exceptions import AuthError

    session = colab(emu).open()
    endpoint = session.runtime().endpoint
    f = session.remote(double)
    assert f(1) == 2
    emu.revoke_access_tokens()
    emu.expire_proxy_tokens()
    emu.drop_websockets()
    with pytest.raises(AuthError, match="colabremote login"):
        f(2)
    # The same token cannot release the runtime either: that is said, not left silent.
    with pytest.warns(RuntimeNotReleasedWarning, match="colabremote runtimes release"):
        session.close()
    emu.release(endpoint)


def mount_drive() -> str:
    from google.colab import drive  # on the runtime only

    drive.mount("/content/drive")
    return "mounted"


def test_drive_mount_propagates_credentials(emu: ColabEmulator) -> None:
    emu.drive_authorized_by_default = True
    try:
        with colab(emu, allow_credentials={"drive"}) as session:
            assert session.remote(mount_drive)() == "mounted"
            endpoint = session.info().details["endpoint"]
        assert any(endpoint in str(p) for p in emu.propagations)
    finally:
        emu.drive_authorized_by_default = False


def test_drive_mount_needing_consent_fails_clearly_without_a_terminal(emu: ColabEmulator) -> None:
    with colab(emu, allow_credentials={"drive"}) as session:
        with pytest.raises(Exception, match="needs consent in a browser") as info:
            session.remote(mount_drive)()
        assert "open http" in str(info.value)
        assert session.remote(double)(1) == 2  # the kernel did not hang


def test_runtime_property(emu: ColabEmulator) -> None:
    with colab(emu, gpu="L4") as session:
        runtime = session.runtime()
        assert runtime.accelerator == "L4" and runtime.variant == "GPU"
        assert runtime.endpoint.startswith("m-s-") and runtime.release_on_close
        assert runtime.proxy_url is not None and runtime.proxy_url.startswith("http://127.0.0.1:")
        assert "token" not in repr(runtime).replace("proxy_url", "")


def test_runtime_property_needs_colab() -> None:
    from colabremote.exceptions import ConfigurationError

    with cr.Session("local", progress=False) as session, pytest.raises(ConfigurationError):
        session.runtime()


def test_default_session_settings_for_colab() -> None:
    from colabremote._default import settings_from_environment

    env = {"COLABREMOTE_BACKEND": "colab", "COLABREMOTE_GPU": "A100", "COLABREMOTE_BASE_URL": "x"}
    assert settings_from_environment(env) == {"backend": "colab", "gpu": "A100", "base_url": "x"}
    assert settings_from_environment({"COLABREMOTE_GPU": "A100"}) == {"backend": "local"}


def test_sigterm_releases_the_runtime(emu: ColabEmulator, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text(
        "import time, colabremote as cr\n"
        "from colabremote._colab.auth import EnvironmentToken\n"
        f"s = cr.Session('colab', base_url={emu.url!r}, credentials=EnvironmentToken("
        f"{emu.mint_access_token()!r}), progress=False)\n"
        "s.open()\n"
        "print(s.runtime().endpoint, flush=True)\n"
        "time.sleep(120)\n"
    )
    with subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        endpoint = process.stdout.readline().strip()
        assert endpoint in live(emu)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 128 + signal.SIGTERM
    assert endpoint not in live(emu)


def test_v1beta_api(emu: ColabEmulator) -> None:
    before = live(emu)
    with colab(emu, gpu="T4", api="v1beta") as session:
        assert session.remote(double)(3) == 6
        runtime = session.runtime()
        assert runtime.accelerator == "T4"
        assert session.info().details["api"] == "v1beta"
        assert any(r.path.startswith("/v1beta/") for r in emu.requests)
        emu.expire_proxy_tokens()
        emu.drop_websockets()
        assert session.remote(double)(4) == 8  # token refreshed through GET runtime
    assert live(emu) == before  # deleted at close


def test_kernels_work_in_content(emu: ColabEmulator, tmp_path: Path) -> None:
    """Relative paths on the runtime mean /content (the emulator's stand-in for it), and never
    this machine's working directory."""

    def write_relative() -> str:
        import os

        with open("note.txt", "w") as f:
            f.write("on the runtime")
        return os.getcwd()

    local = tmp_path / "data.txt"
    local.write_text("hello")
    with colab(emu) as session:
        session.upload(local, "/content/data.txt", progress=False)
        remote_cwd = session.remote(write_relative)()
        assert remote_cwd != os.getcwd()
        back = tmp_path / "note.txt"
        session.download("/content/note.txt", back, progress=False)
        assert back.read_text() == "on the runtime"
    assert not Path("note.txt").exists()


def die() -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def test_kernel_restart_keeps_one_keep_alive_loop(emu: ColabEmulator) -> None:
    from colabremote.exceptions import KernelDied

    with colab(emu) as session:
        with pytest.raises(KernelDied):
            session.remote(die)()
        assert session.remote(double)(3) == 6  # a fresh kernel on the same runtime
        backend: Any = session._core.backend
        assert len([t for t in backend._tasks if not t.done()]) == 2


def test_runtime_taken_away_raises_runtime_gone(emu: ColabEmulator) -> None:
    with colab(emu) as session:
        assert session.remote(double)(1) == 2
        emu.release(session.runtime().endpoint, reason="reclaimed")
        started = time.monotonic()
        with pytest.raises(RuntimeGone, match="no longer assigned"):
            session.remote(double)(2)
        assert time.monotonic() - started < 30
