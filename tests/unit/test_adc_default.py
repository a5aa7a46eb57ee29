"""ADC as the lead route: found by default from gcloud's file, never for another origin, and
what the final SignInRequired says. Nothing here sends a request."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from colabremote._colab.auth import (
    AdcCredentials,
    GoogleOAuth,
    adc_file,
    find_credentials,
    gcloud_adc_command,
)
from colabremote._colab.auth import lookup as lookup_module
from colabremote._colab.endpoints import ColabEndpoints
from colabremote._colab.models import check_accelerator
from colabremote._colab.tokens import TokenStore
from colabremote.exceptions import ConfigurationError, MissingScopes, SignInRequired


def write_adc(directory: Path) -> Path:
    """What `gcloud auth application-default login` writes (made-up values)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "application_default_credentials.json"
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "1234-test.apps.googleusercontent.com",
                "client_secret": "test-secret",
                "refresh_token": "1//test-refresh",
            }
        )
    )
    return path


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(environ={"COLABREMOTE_CONFIG_DIR": str(tmp_path / "config")}, backend="file")


def test_adc_file_is_gclouds_or_the_named_one(tmp_path: Path) -> None:
    assert adc_file({"CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}) is None
    written = write_adc(tmp_path / "gcloud")
    assert adc_file({"CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}) == written
    named = write_adc(tmp_path / "elsewhere")
    environ = {
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        "GOOGLE_APPLICATION_CREDENTIALS": str(named),
    }
    assert adc_file(environ) == named
    missing = {"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "nope.json")}
    assert adc_file(missing) is None


def test_adc_are_found_by_default_after_the_stored_sign_in(
    tmp_path: Path, store: TokenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("google.auth")
    environ = {"CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}
    write_adc(tmp_path / "gcloud")
    # google-auth reads the process environment: the same file, so nothing else is probed.
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", environ["CLOUDSDK_CONFIG"])
    found = find_credentials(store=store, environ=environ)
    assert isinstance(found, AdcCredentials) and found.source == "adc"
    asyncio.run(found.aclose())
    with pytest.raises(SignInRequired):
        find_credentials(store=store, environ=environ, use_adc=False)
    token = find_credentials(store=store, environ={**environ, "COLABREMOTE_ACCESS_TOKEN": "ya29.x"})
    assert token.source == "environment"


def test_a_base_url_never_gets_adc(tmp_path: Path) -> None:
    environ = {"CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}
    write_adc(tmp_path / "gcloud")
    endpoints = ColabEndpoints.at("http://127.0.0.1:9")
    store = TokenStore(
        environ={"COLABREMOTE_CONFIG_DIR": str(tmp_path / "config")},
        backend="file",
        origin=endpoints.origin,
    )
    oauth = GoogleOAuth.for_endpoints(endpoints, store=store)
    for use_adc in (None, True):
        with pytest.raises(SignInRequired, match="never sent to another origin"):
            find_credentials(store=store, oauth=oauth, environ=environ, use_adc=use_adc)


def test_no_credentials_leads_with_the_gcloud_command(tmp_path: Path, store: TokenStore) -> None:
    environ = {"CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}
    with pytest.raises(SignInRequired) as caught:
        find_credentials(store=store, environ=environ)
    message = str(caught.value)
    assert message.index(gcloud_adc_command()) < message.index("colabremote login")
    assert "COLABREMOTE_ACCESS_TOKEN" in message


def test_without_google_auth_adc_are_skipped_and_the_extra_named(
    tmp_path: Path, store: TokenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "google.auth", None)
    environ = {"CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}
    write_adc(tmp_path / "gcloud")
    with pytest.raises(SignInRequired, match=r'pip install "colabremote\[adc\]"'):
        find_credentials(store=store, environ=environ)


def test_default_lookup_never_asks_google_auth_without_a_file(
    tmp_path: Path, store: TokenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """google.auth.default() would probe the GCE metadata server: not on a default lookup."""

    def refuse(**kwargs: object) -> AdcCredentials:
        raise AssertionError("load_adc called")

    monkeypatch.setattr(lookup_module, "load_adc", refuse)
    with pytest.raises(SignInRequired):
        find_credentials(store=store, environ={"CLOUDSDK_CONFIG": str(tmp_path / "gcloud")})


def test_adc_lacking_the_colab_scope_say_how_to_sign_in_again() -> None:
    """google-auth's own user credentials, holding a token granted without the colab scope."""
    oauth2 = pytest.importorskip("google.oauth2.credentials")
    google = oauth2.Credentials(
        token="ya29.adc",
        granted_scopes=["openid", "https://www.googleapis.com/auth/userinfo.email"],
    )
    adc = AdcCredentials(google, request=None)
    with pytest.raises(MissingScopes, match="colaboratory") as caught:
        asyncio.run(adc.token())
    assert gcloud_adc_command() in str(caught.value)
    assert "ya29.adc" not in str(caught.value)


@pytest.mark.parametrize(
    ("gpu", "tpu", "expected"),
    [("t4", None, ("T4", None)), (None, "v6e1", (None, "V6E1")), (None, None, (None, None))],
)
def test_check_accelerator_accepts_known_names(
    gpu: str | None, tpu: str | None, expected: tuple[str | None, str | None]
) -> None:
    assert check_accelerator(gpu, tpu) == expected


def test_check_accelerator_refuses_both_and_unknowns() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        check_accelerator("T4", "V28")
    with pytest.raises(ConfigurationError, match="is not a Colab GPU; GPUs:"):
        check_accelerator("xyz", None)
