"""Messages that point the right way: a package missing on the kernel names the command that
installs it, a Jupyter server's own reason for a refusal is shown, and a free-tier Colab
account hears once, at open, what Colab's terms say about it."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import colabremote as cr
from colabremote._colab.auth import EnvironmentToken
from colabremote._kernel.websocket import WebSocketTransport
from colabremote.exceptions import (
    AuthenticationError,
    ColabTermsWarning,
    KernelStartError,
    RemoteTraceback,
    ServerError,
)
from colabremote.testing import ColabEmulator, JupyterServer, drop_connection

from .conftest import Output

# -- a package missing on the kernel -------------------------------------------------------


def import_absent() -> None:
    import colabremote_absent_pkg  # type: ignore[import-not-found]  # noqa: F401


def type_name(thing: object) -> str:
    return type(thing).__name__


def test_a_missing_package_names_the_install_command(session: cr.Session) -> None:
    with pytest.raises(ModuleNotFoundError) as raised:
        session.remote(import_absent)()
    error = raised.value
    assert error.name == "colabremote_absent_pkg"
    assert 's.exec("%pip install colabremote_absent_pkg")' in str(error)
    assert isinstance(error.__cause__, RemoteTraceback)  # the kernel's traceback stays


def test_exec_of_a_missing_package_names_the_install_command(session: cr.Session) -> None:
    with pytest.raises(ModuleNotFoundError) as raised:
        session.exec("import colabremote_absent_pkg")
    error = raised.value
    assert error.name == "colabremote_absent_pkg"
    assert 's.exec("%pip install colabremote_absent_pkg")' in str(error)
    assert isinstance(error.__cause__, RemoteTraceback)


def test_the_hint_comes_from_an_untrusted_kernel_too() -> None:
    """With trust_kernel=False the kernel's pickle is dropped; the hint is made here."""
    hint = r"%pip install colabremote_absent_pkg"
    with (
        cr.Session("local", trust_kernel=False, progress=False) as session,
        pytest.raises(ModuleNotFoundError, match=hint),
    ):
        session.remote(import_absent)()


@pytest.fixture
def installed_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A package installed here (in a site-packages folder, with its distribution's metadata
    under another name) that the kernel does not have."""
    site = tmp_path / "site-packages"
    (site / "hintpkg_zz").mkdir(parents=True)
    (site / "hintpkg_zz" / "__init__.py").write_text("class Thing:\n    pass\n")
    info = site / "hint_dist_zz-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hint-dist-zz\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("hintpkg_zz\n")
    monkeypatch.syspath_prepend(str(site))
    import hintpkg_zz  # type: ignore[import-not-found]

    yield hintpkg_zz
    sys.modules.pop("hintpkg_zz", None)


def test_an_argument_the_kernel_cannot_unpickle_names_the_distribution(
    session: cr.Session, installed_here: Any
) -> None:
    with pytest.raises(ModuleNotFoundError) as raised:
        session.remote(type_name)(installed_here.Thing())
    assert raised.value.name == "hintpkg_zz"
    assert '%pip install hint-dist-zz")' in str(raised.value)  # the pip name, not the import


def test_a_local_module_the_kernel_lacks_keeps_its_message(
    session: cr.Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hint_local_zz.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def load() -> int:
        import importlib

        return int(importlib.import_module("hint_local_zz").VALUE)  # not seen, so not sent

    assert load() == 1  # here it imports
    with pytest.raises(ModuleNotFoundError) as raised:
        session.remote(load)()
    assert str(raised.value) == "No module named 'hint_local_zz'"  # the project's, not pip's


def test_the_install_hint_runs_on_the_backend(session: cr.Session, output: Output) -> None:
    """``%pip`` in s.exec reaches IPython's magic in the kernel on every backend."""
    output.clear()
    session.exec("%pip --version")
    assert "pip " in output.text("stdout") and " from " in output.text("stdout")


# -- a Jupyter server's own reason ----------------------------------------------------------


def test_an_unknown_kernel_name_lists_the_servers_kernels(jupyter_server: JupyterServer) -> None:
    session = cr.Session(
        "jupyter",
        url=jupyter_server.url,
        token=jupyter_server.token,
        kernel_name="no-such-kernel",
        progress=False,
    )
    with pytest.raises(KernelStartError) as raised:
        session.open()
    message = str(raised.value)
    assert "has no 'no-such-kernel' kernel" in message and "lists 'python3'" in message
    assert "Unhandled error" in message  # the server's own words, next to ours


def test_a_contents_error_shows_the_servers_reason(
    jupyter_server: JupyterServer, tmp_path: Path
) -> None:
    local = tmp_path / "data.txt"
    local.write_text("data")
    with (
        cr.Session(
            "jupyter", url=jupyter_server.url, token=jupyter_server.token, progress=False
        ) as session,
        pytest.raises(ServerError) as raised,
    ):
        session.upload(str(local), "no-such-folder/data.txt")
    message = str(raised.value)
    assert "HTTP 500" in message and "No such file or directory" in message
    assert jupyter_server.token not in message


def test_a_bad_token_without_another_reason_says_check_the_token(
    jupyter_server: JupyterServer,
) -> None:
    secret = "not-the-token-" + "y" * 20
    session = cr.Session("jupyter", url=jupyter_server.url, token=secret, progress=False)
    with pytest.raises(AuthenticationError) as raised:
        session.open()
    assert str(raised.value).endswith("HTTP 403 Forbidden; check the token")
    assert secret not in str(raised.value)


def test_a_websocket_refusal_shows_the_servers_reason(jupyter_server: JupyterServer) -> None:
    url = jupyter_server.url.replace("http://", "ws://") + "/api/kernels/no-such-id/channels"
    headers = {"Authorization": f"token {jupyter_server.token}"}
    with pytest.raises(ServerError) as raised:
        asyncio.run(WebSocketTransport.open(url, headers=headers))
    message = str(raised.value)
    assert message.startswith("the server refused the kernel WebSocket (HTTP 404): ")
    assert "does not exist" in message  # from the server's HTML page, without its markup
    assert jupyter_server.token not in message  # the page carries it in an attribute


GATEWAY = os.environ.get("COLABREMOTE_TEST_GATEWAY", "")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Enterprise Gateway (COLABREMOTE_TEST_GATEWAY: its jupyter-enterprisegateway) on
    127.0.0.1, with a token, a python3 kernelspec, and an authorized-users list without the
    user asking, so kernel starts are refused with its KERNEL_USERNAME reason."""
    if not GATEWAY or shutil.which(GATEWAY) is None:
        pytest.skip("set COLABREMOTE_TEST_GATEWAY to Enterprise Gateway's executable")
    from colabremote.testing._jupyter import free_port

    spec = tmp_path / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    token = "gateway-token-" + os.urandom(8).hex()
    port = free_port()
    env = {**os.environ, "JUPYTER_PATH": str(tmp_path), "EG_AUTH_TOKEN": token}
    log = (tmp_path / "gateway.log").open("w")
    process = subprocess.Popen(
        [
            GATEWAY,
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--EnterpriseGatewayApp.authorized_users={getpass.getuser()}-is-not-allowed",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"token {token}"}
    try:
        deadline = time.monotonic() + 30
        while True:  # until it answers: a deadline, so a slow start fails the test
            try:
                answer = httpx.get(f"{url}/api/kernelspecs", headers=auth, timeout=1)
                answer.raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    output = (tmp_path / "gateway.log").read_text()[-2000:]
                    raise RuntimeError(f"Enterprise Gateway did not start:\n{output}") from None
                time.sleep(0.05)
        yield url, token
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def test_enterprise_gateways_reason_replaces_check_the_token(gateway: tuple[str, str]) -> None:
    url, token = gateway
    session = cr.Session("jupyter", url=url, token=token, progress=False)
    with pytest.raises(AuthenticationError) as raised:
        session.open()
    message = str(raised.value)
    assert "HTTP 403" in message and "KERNEL_USERNAME" in message
    assert "to start kernel 'Python 3'" in message  # root is refused first, others after
    assert "check the token" not in message and token not in message


# -- the free tier ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def free_emu() -> Iterator[ColabEmulator]:
    with ColabEmulator(subscription_tier="FREE") as emulator:
        yield emulator


@pytest.fixture
def no_compute_units(free_emu: ColabEmulator) -> Iterator[ColabEmulator]:
    free_emu.compute_units = 0.0
    yield free_emu
    free_emu.compute_units = 100.0
    free_emu.gapi_allowed = True


def colab(emu: ColabEmulator, **options: Any) -> cr.Session:
    token = EnvironmentToken(emu.mint_access_token())
    return cr.Session("colab", base_url=emu.url, credentials=token, progress=False, **options)


def double(x: int) -> int:
    return 2 * x


def test_a_free_account_is_told_once_about_colabs_terms(
    no_compute_units: ColabEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="colabremote.colab")
    with pytest.warns(ColabTermsWarning) as told, colab(no_compute_units) as session:
        assert session.remote(double)(1) == 2
        drop_connection(session)  # a reconnect is not a new open
        assert session.remote(double)(2) == 4
    notices = [w for w in told if w.category is ColabTermsWarning]
    assert len(notices) == 1
    text = str(notices[0].message)
    assert "free tier" in text and "Pro, Pro+ or Pay As You Go" in text
    assert "https://research.google.com/colaboratory/faq.html" in text
    assert "Additional Terms of Service" in text
    logged = [r for r in caplog.records if "colaboratory/faq.html" in r.getMessage()]
    assert len(logged) == 1


@pytest.mark.slow
def test_the_notice_comes_when_colab_refuses_user_info(no_compute_units: ColabEmulator) -> None:
    no_compute_units.gapi_allowed = False  # as for a third-party OAuth client
    with pytest.warns(ColabTermsWarning), colab(no_compute_units) as session:
        assert session.remote(double)(3) == 6


@pytest.mark.slow
def test_the_notice_comes_with_the_v1beta_api(no_compute_units: ColabEmulator) -> None:
    with pytest.warns(ColabTermsWarning), colab(no_compute_units, api="v1beta") as session:
        assert session.remote(double)(4) == 8


@pytest.mark.slow
def test_pay_as_you_go_is_not_the_free_tier(free_emu: ColabEmulator) -> None:
    assert free_emu.compute_units > 0  # free tier, with compute units bought
    with warnings.catch_warnings():
        warnings.simplefilter("error", ColabTermsWarning)
        with colab(free_emu) as session:
            assert session.remote(double)(5) == 10


@pytest.mark.parametrize("backend", ["colab", pytest.param("emulator", marks=pytest.mark.slow)])
def test_a_paid_account_hears_nothing_and_costs_no_request(backend: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ColabTermsWarning)
        if backend == "emulator":
            with cr.Session("emulator", progress=False) as session:
                assert session.remote(double)(6) == 12
            return
        with ColabEmulator(subscription_tier="PRO_PLUS") as emu:
            with colab(emu) as session:
                assert session.remote(double)(7) == 14
            assert not [r for r in emu.requests if "user-info" in r.path]
