"""Backend edge cases: broken interpreters, wrong tokens, secrets kept out of sight."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import colabremote as cr
from colabremote.exceptions import AuthenticationError, KernelStartError
from colabremote.testing import JupyterServer


def test_interpreter_without_ipykernel(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True
    )
    python = tmp_path / "bare" / "bin" / "python"
    session = cr.Session("local", python=str(python), progress=False)
    with pytest.raises(KernelStartError, match="has no ipykernel") as info:
        session.open()
    assert "-m pip install ipykernel" in str(info.value)
    assert session.closed  # nothing left running


def test_wrong_token_is_refused_clearly(jupyter_server: JupyterServer) -> None:
    secret = "not-the-token-" + "x" * 20
    session = cr.Session("jupyter", url=jupyter_server.url, token=secret, progress=False)
    with pytest.raises(AuthenticationError, match=r"HTTP 40[13]") as info:
        session.open()
    assert secret not in str(info.value)
    assert secret not in repr(session)


def test_secrets_stay_out_of_reprs_and_info(jupyter_server: JupyterServer) -> None:
    with cr.Session(
        "jupyter", url=jupyter_server.url, token=jupyter_server.token, progress=False
    ) as session:
        info = session.info()
        assert jupyter_server.token not in repr(session)
        assert jupyter_server.token not in repr(info)
        assert info.details["url"] == jupyter_server.url


def test_unreachable_server(tmp_path: Path) -> None:
    from colabremote.testing._jupyter import free_port

    session = cr.Session("jupyter", url=f"http://127.0.0.1:{free_port()}", progress=False)
    with pytest.raises(KernelStartError, match="cannot reach"):
        session.open()


def test_unknown_kernel_name(jupyter_server: JupyterServer) -> None:
    session = cr.Session(
        "jupyter",
        url=jupyter_server.url,
        token=jupyter_server.token,
        kernel_name="no-such-kernel",
        progress=False,
    )
    with pytest.raises(KernelStartError, match="kernelspecs"):
        session.open()


def test_http_clients_share_one_verifying_tls_context() -> None:
    """Building a TLS context costs ~20 ms; every client colabremote makes reuses one."""
    import ssl

    from colabremote._tls import verify_setting

    shared = verify_setting()
    assert isinstance(shared, ssl.SSLContext) and verify_setting(True) is shared
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
    assert verify_setting(False) is False  # an explicit opt-out is passed through
