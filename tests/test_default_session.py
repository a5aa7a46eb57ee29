"""@cr.remote without a session: the default session, configured by COLABREMOTE_*."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

import colabremote as cr
from colabremote._backends.factory import make_backend
from colabremote._default import settings_from_environment
from colabremote.exceptions import ConfigurationError
from colabremote.testing import JupyterServer


def test_default_session_in_a_script(tmp_path: Path) -> None:
    """A script decorates with @cr.remote, calls, and exits: the kernel is closed at exit."""
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            import colabremote as cr

            @cr.remote
            def where(x):
                print("running remotely")
                return os.getpid(), x * 2

            @cr.remote(timeout=30)
            def double(x):
                return x * 2

            pid, value = where(21)
            assert pid != os.getpid()
            print("result", value, double(4), cr.default_session().info().backend)
            """
        )
    )
    env = dict(os.environ, COLABREMOTE_BACKEND="local")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["running remotely", "result 42 8 local"]


def test_settings_from_environment() -> None:
    env = {"COLABREMOTE_BACKEND": "jupyter", "COLABREMOTE_URL": "http://127.0.0.1:1", "X": "1"}
    assert settings_from_environment(env) == {"backend": "jupyter", "url": "http://127.0.0.1:1"}
    assert settings_from_environment({"COLABREMOTE_BACKEND": ""}) == {"backend": "local"}


def test_bad_configuration_is_explained() -> None:
    with pytest.raises(ConfigurationError, match="not one of local, jupyter, colab, emulator"):
        cr.Session(backend="nowhere")  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="needs url="):
        make_backend("jupyter", {})
    with pytest.raises(ConfigurationError, match="does not take url"):
        make_backend("local", {"url": "http://127.0.0.1:1"})
    with pytest.raises(ConfigurationError, match="python='/no/such/python' was not found"):
        cr.Session(backend="local", python="/no/such/python")
    with pytest.raises(ConfigurationError, match="decorates a function"):
        cr.remote(42)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="positive"):
        cr.remote(timeout=0)(len)


@pytest.mark.slow
def test_unclosed_sessions_release_kernels_at_exit(jupyter_server: object, tmp_path: Path) -> None:
    """A script that never closes its session still deletes its kernel from the server."""

    assert isinstance(jupyter_server, JupyterServer)
    headers = {"Authorization": f"token {jupyter_server.token}"}
    before = {
        k["id"] for k in httpx.get(f"{jupyter_server.url}/api/kernels", headers=headers).json()
    }
    script = tmp_path / "leaky.py"
    script.write_text(
        "import colabremote as cr\n"
        f"s = cr.Session('jupyter', url={jupyter_server.url!r}, token={jupyter_server.token!r})\n"
        "print(s.remote(abs)(-3))\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"
    after = {
        k["id"] for k in httpx.get(f"{jupyter_server.url}/api/kernels", headers=headers).json()
    }
    assert after == before
