"""The first steps a new user takes, and the messages that must point the right way: no sign-in,
a typo in gpu=/tpu=, too many runtimes, a refused COLABREMOTE_ACCESS_TOKEN, ADC checked with
Colab. Everything talks to 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

import colabremote as cr
from colabremote._cli import check_adc
from colabremote._colab.auth import (
    AdcCredentials,
    ClientConfig,
    EnvironmentToken,
    GoogleOAuth,
    gcloud_adc_command,
)
from colabremote._colab.endpoints import ColabEndpoints
from colabremote.exceptions import AuthError, ConfigurationError, SignInRequired, TooManyRuntimes
from colabremote.testing._emulator import ColabEmulator


@pytest.fixture(scope="module")
def emu() -> Iterator[ColabEmulator]:
    with ColabEmulator() as emulator:
        yield emulator


@pytest.fixture
def no_sign_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No environment token, no stored sign-in, no ADC file: a first run."""
    for name in (
        "COLABREMOTE_ACCESS_TOKEN",
        "COLABREMOTE_BASE_URL",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLABREMOTE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("COLABREMOTE_TOKEN_STORE", "file")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))


@pytest.mark.usefixtures("no_sign_in")
def test_no_sign_in_is_one_clean_error_that_leads_with_gcloud() -> None:
    session = cr.Session("colab", gpu="T4", progress=False)
    with pytest.raises(SignInRequired) as caught:
        session.open()
    session.close()
    error = caught.value
    assert str(error).index(gcloud_adc_command()) < str(error).index("colabremote login")
    # Raised before any request: no retry, no HTTP client, nothing chained to it.
    assert error.__cause__ is None and error.__suppress_context__ is False
    assert error.__context__ is None
    frames = "".join(traceback.format_exception(error))
    for noise in ("tenacity", "httpx", "_retry.py"):
        assert noise not in frames, noise


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"gpu": "T5"}, "did you mean gpu='T4'"),
        ({"gpu": "cpu"}, "leave out gpu= and tpu="),
        ({"gpu": "V28"}, "tpu='V28'"),
        ({"tpu": "T4"}, "gpu='T4'"),
        ({"tpu": "v5"}, "did you mean tpu='V5E1'"),
    ],
)
@pytest.mark.parametrize("backend", ["colab", "emulator"])
def test_accelerator_typos_fail_at_construction(
    backend: str, options: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigurationError, match=says) as caught:
        cr.Session(backend, progress=False, **options)  # type: ignore[call-overload]
    message = str(caught.value)
    assert "variant=" not in message and "upgrade" not in message
    if "did you mean" in message:
        assert "GPUs: A100, G4, H100, L4, T4, V100" in message or "TPUs: V28" in message


def test_accelerator_names_are_case_insensitive() -> None:
    session = cr.Session("emulator", gpu="t4", progress=False)
    backend = session._core.backend
    assert getattr(backend, "gpu", None) == "T4"
    session.close()


def test_too_many_runtimes_names_the_command_that_releases_one(tmp_path: Path) -> None:
    with ColabEmulator(max_assignments=0) as emulator:
        token = EnvironmentToken(emulator.mint_access_token())
        session = cr.Session("colab", base_url=emulator.url, credentials=token, progress=False)
        with pytest.raises(TooManyRuntimes, match="`colabremote runtimes release`") as caught:
            session.open()
        session.close()
    assert "ControlPlane" not in str(caught.value)


def test_a_refused_environment_token_names_the_variable(
    emu: ColabEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLABREMOTE_ACCESS_TOKEN", "ya29.not-a-token-the-emulator-issued")
    session = cr.Session("colab", base_url=emu.url, progress=False)
    with pytest.raises(AuthError, match="COLABREMOTE_ACCESS_TOKEN") as caught:
        session.open()
    session.close()
    assert "colabremote login" not in str(caught.value)
    assert "ya29.not-a-token" not in str(caught.value)


def test_login_adc_check_with_google_auths_own_credentials(emu: ColabEmulator) -> None:
    """The check `colabremote login --adc` runs after gcloud, with google-auth's user
    credentials refreshed at the emulator's token endpoint (never Google's)."""
    oauth2 = pytest.importorskip("google.oauth2.credentials")
    transport = pytest.importorskip("google.auth.transport.requests")

    endpoints = ColabEndpoints.at(emu.url)
    client = ClientConfig.from_mapping(emu.client_config(), source="the emulator")

    async def sign_in() -> str:
        async with GoogleOAuth.for_endpoints(endpoints, client) as oauth:
            stored = await oauth.login(
                open_browser=_approve, announce=lambda _text: None, save=False
            )
        assert stored.refresh_token is not None
        return stored.refresh_token

    refresh_token = asyncio.run(sign_in())
    google = oauth2.Credentials(
        token=None,
        refresh_token=refresh_token,
        token_uri=f"{emu.url}/token",
        client_id=emu.client_id,
        client_secret=emu.client_secret,
    )
    adc = AdcCredentials(google, transport.Request())
    oauth = GoogleOAuth.for_endpoints(endpoints, client)
    account, balance = asyncio.run(check_adc(adc, endpoints, oauth))
    assert account == emu.user_email
    assert balance >= 0


def _approve(url: str) -> None:
    import httpx

    httpx.get(url, follow_redirects=True, timeout=30)
