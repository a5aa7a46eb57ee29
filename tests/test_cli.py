"""The colabremote command against the emulator: sign in, whoami, runtimes, release, sign out."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from colabremote.testing._emulator import ColabEmulator


@pytest.fixture(scope="module")
def emu() -> Iterator[ColabEmulator]:
    with ColabEmulator() as emulator:
        yield emulator


@pytest.fixture
def env(emu: ColabEmulator, tmp_path: Path) -> dict[str, str]:
    """A private config dir, a file token store, and a 'browser' that approves sign-ins."""
    browser = tmp_path / "browser.py"
    browser.write_text(
        textwrap.dedent(
            """
            import sys, httpx
            httpx.get(sys.argv[1], follow_redirects=True, timeout=30)
            """
        )
    )
    environ = dict(os.environ)
    environ.pop("COLABREMOTE_ACCESS_TOKEN", None)
    environ.update(
        COLABREMOTE_CONFIG_DIR=str(tmp_path / "config"),
        COLABREMOTE_TOKEN_STORE="file",
        COLABREMOTE_BASE_URL=emu.url,
        BROWSER=f"{sys.executable} {browser} %s",
        # Sign-out looks in the keyring too: never the real user's.
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
    )
    return environ


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "colabremote", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.slow
def test_sign_in_whoami_and_sign_out(
    emu: ColabEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    secrets = tmp_path / "client.json"
    emu.write_client_secrets(secrets)
    login = run(env, "login", "--client-secrets", str(secrets))
    assert login.returncode == 0, login.stderr
    assert f"Signed in as {emu.user_email}" in login.stdout
    # The emulator's sign-in is kept apart from the Google one (credentials.json).
    (stored,) = (tmp_path / "config").glob("credentials-127.0.0.1_*.json")
    assert not (tmp_path / "config" / "credentials.json").exists()
    assert stored.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "config").stat().st_mode & 0o777 == 0o700

    whoami = run(env, "whoami")
    assert whoami.returncode == 0, whoami.stderr
    assert "subscription:" in whoami.stdout

    logout = run(env, "logout")
    assert logout.returncode == 0 and "Signed out." in logout.stdout
    assert f"Revoked the sign-in of {emu.user_email}" in logout.stdout
    assert not stored.exists()
    again = run(env, "whoami")
    assert again.returncode == 1 and "colabremote login" in again.stderr


@pytest.mark.slow
def test_runtimes_list_and_release(emu: ColabEmulator, env: dict[str, str]) -> None:
    env = dict(env, COLABREMOTE_ACCESS_TOKEN=emu.mint_access_token())
    import colabremote as cr
    from colabremote._colab.auth import EnvironmentToken

    token = EnvironmentToken(env["COLABREMOTE_ACCESS_TOKEN"])
    session = cr.Session(
        "colab", base_url=emu.url, credentials=token, gpu="T4", release=False, progress=False
    )
    with session:
        endpoint = session.info().details["endpoint"]
    listing = run(env, "runtimes")
    assert listing.returncode == 0, listing.stderr
    assert endpoint in listing.stdout and "GPU T4" in listing.stdout
    released = run(env, "runtimes", "release", endpoint)
    assert released.returncode == 0 and f"released: {endpoint}" in released.stdout
    assert endpoint not in run(env, "runtimes").stdout


@pytest.mark.slow
def test_sign_in_without_a_browser(emu: ColabEmulator, env: dict[str, str], tmp_path: Path) -> None:
    """--no-browser prints a URL; the user opens it elsewhere and pastes the code back."""
    import re

    import httpx

    secrets = tmp_path / "client.json"
    emu.write_client_secrets(secrets)
    with subprocess.Popen(
        [
            *(sys.executable, "-m", "colabremote", "login", "--no-browser"),
            *("--client-secrets", str(secrets)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        assert process.stderr is not None and process.stdin is not None
        url = ""
        while not url:
            line = process.stderr.readline()
            assert line, "the CLI ended before printing a sign-in URL"
            if line.startswith("http"):
                url = line.strip()
        page = httpx.get(url, follow_redirects=True, timeout=30).text  # "another machine"
        found = re.search(r'<textarea id="code" readonly>([^<]+)</textarea>', page)
        assert found is not None
        stdout, _ = process.communicate(found.group(1) + "\n", timeout=60)
        assert process.returncode == 0
    assert f"Signed in as {emu.user_email}" in stdout


@pytest.mark.slow
def test_emulator_command_prints_how_to_connect(tmp_path: Path) -> None:
    import signal

    import httpx

    with subprocess.Popen(
        [sys.executable, "-m", "colabremote", "emulator"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        first = process.stdout.readline()
        url = first.split("serving at ")[1].split(" ")[0]
        lines = [process.stdout.readline() for _ in range(7)]
        token = lines[2].split("COLABREMOTE_ACCESS_TOKEN=")[1].split()[0]
        answer = httpx.get(
            f"{url}/tun/m/assignments",
            params={"authuser": "0"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.status_code == 200  # the printed token works
        process.send_signal(signal.SIGINT)
        process.wait(60)
    assert f"COLABREMOTE_BASE_URL={url}" in lines[1]
    # A one-command form: an exported variable would outlive the emulator.
    assert lines[2].rstrip().endswith("python your_script.py")
    text = first + "".join(lines)
    assert "export" not in text
    assert "apart from your Google sign-in" in " ".join(text.split())


# -- the first run: version, help, options after the command, ADC through gcloud -------------


def test_version_and_help_in_plain_text(env: dict[str, str]) -> None:
    import colabremote

    version = run(env, "--version")
    assert (
        version.returncode == 0
        and version.stdout.strip() == f"colabremote {colabremote.__version__}"
    )
    for args in (("--help",), ("login", "--help"), ("runtimes", "--help")):
        shown = run(env, *args)
        assert shown.returncode == 0, shown.stderr
        assert "``" not in shown.stdout and ":func:" not in shown.stdout
    assert "login --adc" in run(env, "--help").stdout


def test_global_options_after_the_command(emu: ColabEmulator, env: dict[str, str]) -> None:
    env = dict(env, COLABREMOTE_ACCESS_TOKEN=emu.mint_access_token())
    del env["COLABREMOTE_BASE_URL"]
    whoami = run(env, "whoami", "--base-url", emu.url)
    assert whoami.returncode == 0, whoami.stderr
    assert "subscription:" in whoami.stdout


def test_whoami_with_an_environment_token_shows_the_account(
    emu: ColabEmulator, env: dict[str, str]
) -> None:
    env = dict(env, COLABREMOTE_ACCESS_TOKEN=emu.mint_access_token())
    whoami = run(env, "whoami")
    assert whoami.returncode == 0, whoami.stderr
    assert f"account:       {emu.user_email}" in whoami.stdout


def test_release_all_with_nothing_assigned_says_so(emu: ColabEmulator, env: dict[str, str]) -> None:
    env = dict(env, COLABREMOTE_ACCESS_TOKEN=emu.mint_access_token(email="idle@example.com"))
    released = run(env, "runtimes", "release", "--all")
    assert released.returncode == 0, released.stderr
    assert "nothing to release" in released.stdout


def test_an_unreachable_base_url_fails_fast_with_the_address(env: dict[str, str]) -> None:
    import socket
    import time

    with socket.socket() as probe:  # a port nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"http://127.0.0.1:{port}"
    env = dict(env, COLABREMOTE_BASE_URL=address, COLABREMOTE_ACCESS_TOKEN="ya29.unused")
    started = time.monotonic()
    whoami = run(env, "whoami")
    assert time.monotonic() - started < 8  # no retries against a closed port
    assert whoami.returncode == 1
    assert f"cannot reach {address}" in whoami.stderr


def fake_gcloud(directory: Path, exit_status: int) -> Path:
    """A `gcloud` that records its arguments and exits; placed first on PATH by the test."""
    directory.mkdir()
    recorded = directory / "argv.txt"
    script = directory / "gcloud"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{recorded}"\nexit {exit_status}\n')
    script.chmod(0o755)
    return recorded


def adc_env(env: dict[str, str], path: str) -> dict[str, str]:
    env = dict(env, PATH=path)
    del env["COLABREMOTE_BASE_URL"]  # ADC are Google's: no base URL
    return env


def test_login_adc_runs_gcloud_with_the_colab_scopes(env: dict[str, str], tmp_path: Path) -> None:
    """The fake gcloud fails, so nothing is checked with Google afterwards."""
    pytest.importorskip("google.auth")
    from colabremote._colab.auth import ADC_SCOPES

    recorded = fake_gcloud(tmp_path / "bin", exit_status=3)
    env = adc_env(env, f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}")
    login = run(env, "login", "--adc")
    assert recorded.read_text().split() == [
        "auth",
        "application-default",
        "login",
        "--scopes=" + ",".join(ADC_SCOPES),
    ]
    assert login.returncode == 1
    assert "exit status 3" in login.stderr


def test_login_adc_without_gcloud_prints_the_command(env: dict[str, str], tmp_path: Path) -> None:
    pytest.importorskip("google.auth")
    from colabremote._colab.auth import gcloud_adc_command

    (tmp_path / "empty").mkdir()
    login = run(adc_env(env, str(tmp_path / "empty")), "login", "--adc")
    assert login.returncode == 1
    assert "gcloud is not on PATH" in login.stdout
    assert gcloud_adc_command() in login.stdout


def test_login_adc_names_the_adc_extra(env: dict[str, str], tmp_path: Path) -> None:
    recorded = fake_gcloud(tmp_path / "bin", exit_status=0)
    env = adc_env(env, f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}")
    without_google_auth = (
        "import sys; sys.modules['google.auth'] = None; "
        "from colabremote._cli import main; sys.exit(main(['login', '--adc']))"
    )
    login = subprocess.run(
        [sys.executable, "-c", without_google_auth],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert login.returncode == 1
    assert 'pip install "colabremote[adc]"' in login.stderr
    assert not recorded.exists()  # told before gcloud runs, so the sign-in is not wasted
