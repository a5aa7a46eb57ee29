"""The kernel is a trust boundary: what code on a runtime may get from the user's side."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import colabremote as cr
from colabremote._colab.auth import EnvironmentToken
from colabremote.exceptions import ConfigurationError
from colabremote.testing import ColabEmulator, JupyterServer


@pytest.fixture(scope="module")
def emu() -> Iterator[ColabEmulator]:
    with ColabEmulator() as emulator:
        emulator.drive_authorized_by_default = True  # Google's own consent page is not the point
        yield emulator


def colab(emu: ColabEmulator, **options: Any) -> cr.Session:
    token = EnvironmentToken(emu.mint_access_token())
    return cr.Session("colab", base_url=emu.url, credentials=token, progress=False, **options)


def mount_drive() -> str:
    from google.colab import drive  # on the runtime only

    drive.mount("/content/drive")
    return "mounted"


def power(base: int, exponent: int) -> int:
    return int(base**exponent)


def propagations_to(emu: ColabEmulator, endpoint: str) -> list[Any]:
    return [p for p in emu.propagations if endpoint in str(p)]


# -- credentials propagation needs the user's consent ------------------------------------------


@pytest.mark.slow
def test_runtime_gets_no_drive_credentials_unless_allowed(emu: ColabEmulator) -> None:
    """Colab's dry run saying no consent page is needed is not the user's consent."""
    with colab(emu) as session:
        endpoint = session.runtime().endpoint
        with pytest.raises(Exception, match=r"allow_credentials=\{'drive'\}") as info:
            session.remote(mount_drive)()
        assert "does not allow" in str(info.value)
        assert propagations_to(emu, endpoint) == []  # not even a dry run reached Colab
        session.exec("x = 1")  # the kernel did not hang: the session goes on


@pytest.mark.slow
def test_allowed_credentials_are_propagated(emu: ColabEmulator) -> None:
    with colab(emu, allow_credentials={"drive"}) as session:
        assert session.remote(mount_drive)() == "mounted"
        assert propagations_to(emu, session.runtime().endpoint) != []


def test_unknown_credential_kind_is_a_configuration_error(emu: ColabEmulator) -> None:
    with pytest.raises(ConfigurationError, match=r"\['gmail'\].*\['drive', 'google'\]"):
        colab(emu, allow_credentials={"gmail"})


@pytest.mark.slow
def test_a_yes_on_the_terminal_allows_it_for_the_session(
    emu: ColabEmulator, tmp_path: Path
) -> None:
    """A person at a terminal is asked once; their "y" lets this session's runtime mount Drive."""
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import colabremote as cr
            from colabremote._colab.auth import EnvironmentToken

            def mount_drive():
                from google.colab import drive
                drive.mount("/content/drive")
                return "mounted"

            token = EnvironmentToken({emu.mint_access_token()!r})
            with cr.Session("colab", base_url={emu.url!r}, credentials=token,
                            progress=False) as s:
                print("RESULT", s.remote(mount_drive)(), s.remote(mount_drive)(), flush=True)
            """
        )
    )
    leader, follower = os.openpty()  # the child's stdin is a terminal
    try:
        os.write(leader, b"y\n")
        done = subprocess.run(
            [sys.executable, str(script)],
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(leader)
        os.close(follower)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "RESULT mounted mounted"
    assert done.stderr.count("asks for your Google Drive") == 1  # asked once per session


# -- secrets never leave in text -------------------------------------------------------------


def test_a_jupyter_url_with_its_token_keeps_the_token_out_of_sight(
    jupyter_server: JupyterServer,
) -> None:
    """The URL Jupyter prints at start-up (``...?token=...``) works as it is; the token goes into
    the Authorization header, never into info(), reprs or error messages."""
    secret = jupyter_server.token
    url = f"{jupyter_server.url}/?token={secret}"
    with cr.Session("jupyter", url=url, progress=False) as session:
        assert session.remote(power)(2, 5) == 32
        shown = repr(session) + repr(session.info())
        assert secret not in shown
        assert session.info().details["url"] == jupyter_server.url
        with pytest.raises(FileNotFoundError) as info:
            session.download("not-there.txt", "/tmp/never-written", progress=False)
        assert secret not in str(info.value)
    with pytest.raises(ConfigurationError) as bad:
        cr.Session("jupyter", url=f"ftp://127.0.0.1:1/?token={secret}")
    assert secret not in str(bad.value)


def test_a_token_with_a_trailing_newline_works_and_one_with_spaces_inside_is_refused(
    jupyter_server: JupyterServer,
) -> None:
    secret = jupyter_server.token
    with cr.Session(
        "jupyter", url=jupyter_server.url, token=secret + "\n", progress=False
    ) as session:
        assert session.remote(power)(3, 2) == 9
    with pytest.raises(ConfigurationError, match="spaces or control characters") as info:
        cr.Session("jupyter", url=jupyter_server.url, token=secret[:4] + "\n" + secret[4:])
    assert secret[4:] not in str(info.value)
