"""Trust and safety of sign-in (issue 9): a base URL never gets Google's credentials, plain http
only to loopback, a loopback start page for the browser, a sign-out that cleans every store,
a private copy of the OAuth client, and tokens that never leak through an HTTP library's text.

Against real loopback servers: the ColabEmulator, and a recorder that answers 401 to everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Coroutine, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote_plus, urlsplit

import httpx
import pytest

import colabremote as cr
from colabremote import _cli
from colabremote._colab.auth import (
    ADC_SCOPES,
    AdcCredentials,
    ClientConfig,
    EnvironmentToken,
    GoogleOAuth,
    UserCredentials,
    find_credentials,
    keep_client_file,
    lookup,
)
from colabremote._colab.control import ControlPlane
from colabremote._colab.endpoints import ColabEndpoints
from colabremote._colab.origin import PRODUCTION, Origin
from colabremote._colab.tokens import StoredCredentials, TokenStore
from colabremote._http import BearerAuth
from colabremote.exceptions import AuthError, ConfigurationError, SignInRequired
from colabremote.testing._emulator import ColabEmulator

from ._keyrings import MemoryKeyring

T = TypeVar("T")

STORED_ACCESS = "ya29.stored-google-access-token"
STORED_REFRESH = "1//stored-google-refresh-token"
CLIENT_SECRET = "GOCSPX-the-real-client-secret"
ADC_TOKEN = "ya29.adc-token-for-google"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def emu() -> Iterator[ColabEmulator]:
    with ColabEmulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def private_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config dir of the test's own, the file store, no keyring and no ambient settings."""
    import keyring
    import keyring.backends.null

    monkeypatch.setattr(keyring, "get_keyring", keyring.backends.null.Keyring)
    config = tmp_path / "config"
    monkeypatch.setenv("COLABREMOTE_CONFIG_DIR", str(config))
    monkeypatch.setenv("COLABREMOTE_TOKEN_STORE", "file")
    for name in (
        "COLABREMOTE_ACCESS_TOKEN",
        "COLABREMOTE_BASE_URL",
        "COLABREMOTE_OAUTH_CLIENT_ID",
        "COLABREMOTE_OAUTH_CLIENT_SECRET",
        "COLABREMOTE_OAUTH_CLIENT_SECRETS",
    ):
        monkeypatch.delenv(name, raising=False)
    return config


def emulator_oauth(emu: ColabEmulator, store: TokenStore | None = None) -> GoogleOAuth:
    client = ClientConfig.from_mapping(emu.client_config(), source="the emulator")
    return GoogleOAuth.for_endpoints(ColabEndpoints.at(emu.url), client, store=store)


def follow(url: str) -> None:
    """A browser: the start page sends it to the emulator, which redirects back at once."""
    httpx.get(url, follow_redirects=True, timeout=30)


async def sign_in(emu: ColabEmulator) -> StoredCredentials:
    async with emulator_oauth(emu) as oauth:
        return await oauth.login(open_browser=follow, announce=lambda _: None, save=False)


# -- a base URL is not a place to send real tokens -----------------------------------------------


class Recorder:
    """A loopback server that keeps every request it gets and answers each with a 401."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = unquote_plus(self.rfile.read(length).decode("latin-1"))  # form-encoded
                recorder.seen.append(f"{self.command} {self.path}\n{self.headers}\n{body}")
                payload = json.dumps({"error": "invalid_client"}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


def google_sign_in(store: TokenStore) -> StoredCredentials:
    record = StoredCredentials(
        client_id="1234-real.apps.googleusercontent.com",
        refresh_token=STORED_REFRESH,
        access_token=STORED_ACCESS,
        expiry=datetime.now(timezone.utc) + timedelta(minutes=50),
        scopes=("email",),
        account="ada@example.com",
    )
    store.save(record)
    return record


class FakeAdc:
    """google-auth ADC as far as colabremote looks at them: a ready token."""

    scopes: ClassVar[list[str]] = list(ADC_SCOPES)
    token = ADC_TOKEN
    expiry = None

    def refresh(self, request: object) -> None:
        return None


def test_a_base_url_never_gets_googles_tokens_client_or_adc(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the stored Google sign-in, not the configured client secret, not ADC; and its 401s
    delete nothing."""
    production = TokenStore()
    record = google_sign_in(production)
    monkeypatch.setenv("COLABREMOTE_OAUTH_CLIENT_ID", record.client_id)
    monkeypatch.setenv("COLABREMOTE_OAUTH_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setattr(
        lookup, "load_adc", lambda **kwargs: AdcCredentials(FakeAdc(), request=None)
    )
    for options in ({"base_url": recorder.url}, {"base_url": recorder.url, "use_adc": True}):
        session = cr.Session("colab", progress=False, **options)
        with pytest.raises(SignInRequired, match="never sent to another origin"):
            session.open()
        session.close()
    monkeypatch.setenv("COLABREMOTE_BASE_URL", recorder.url)
    with pytest.raises(SignInRequired):
        cr.Session("colab", progress=False, use_adc=True).open()
    for secret in (STORED_ACCESS, STORED_REFRESH, CLIENT_SECRET, ADC_TOKEN):
        assert not any(secret in request for request in recorder.seen), secret
    assert production.load() == record  # Google's sign-in is untouched


def test_stores_are_per_origin(tmp_path: Path) -> None:
    """Each origin has its own file and keyring entry; Google's keep their names."""
    one = Origin.of("http://127.0.0.1:8765")
    other = Origin.of("http://localhost:8765")
    assert one != other and one.label != other.label and one.label.startswith("127.0.0.1_8765")
    names = {TokenStore(tmp_path, origin=o).path.name for o in (PRODUCTION, one, other)}
    assert len(names) == 3 and "credentials.json" in names
    memory = MemoryKeyring()
    stores = [
        TokenStore(tmp_path, backend="auto", keyring_backend=memory, origin=o)
        for o in (PRODUCTION, one)
    ]
    google_sign_in(stores[1])
    assert stores[0].load() is None  # the emulator's sign-in is not Google's
    assert set(memory.items) == {("colabremote", "google-oauth@http://127.0.0.1:8765")}
    google_sign_in(stores[0])
    assert ("colabremote", "google-oauth") in memory.items  # the name existing sign-ins use
    with pytest.raises(ConfigurationError):
        GoogleOAuth(store=stores[1])  # Google's endpoints with an emulator's record
    with pytest.raises(ConfigurationError):
        GoogleOAuth.for_endpoints(ColabEndpoints.at("http://127.0.0.1:8765"), store=stores[0])


def test_a_refusal_from_another_origin_deletes_nothing(emu: ColabEmulator) -> None:
    """invalid_grant from an emulator's token endpoint: SignInRequired, the record stays."""
    origin = ColabEndpoints.at(emu.url).origin
    store = TokenStore(origin=origin)
    record = run(sign_in(emu))
    expired = record.with_token(record.access_token or "", datetime.now(timezone.utc))
    store.save(expired)
    emu.faults.refresh_invalid_grant = 1

    async def main() -> None:
        async with emulator_oauth(emu, store) as oauth:
            found = find_credentials(store=store, oauth=oauth)
            assert isinstance(found, UserCredentials)
            await found.token()

    try:
        with pytest.raises(SignInRequired):
            run(main())
    finally:
        emu.faults.refresh_invalid_grant = 0
    assert store.load() == expired


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9", "http://127.8.0.1:9", "http://[::1]:9", "http://localhost:9/x/"],
)
def test_plain_http_to_loopback_is_accepted(url: str) -> None:
    assert not ColabEndpoints.at(url).origin.is_production


@pytest.mark.parametrize(
    "url", ["http://example.com", "http://10.0.0.5:8765", "http://[2001:db8::1]:80"]
)
def test_plain_http_elsewhere_is_refused(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="base_url= uses plain http"):
        cr.Session("colab", base_url=url, progress=False)
    monkeypatch.setenv("COLABREMOTE_BASE_URL", url)
    with pytest.raises(ConfigurationError, match="COLABREMOTE_BASE_URL uses plain http"):
        cr.Session("colab", progress=False)
    assert ColabEndpoints.at(url.replace("http:", "https:")).origin.url is not None


def test_plain_http_elsewhere_is_refused_by_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["--base-url", "http://example.com", "whoami"]) == 1
    assert "--base-url uses plain http" in capsys.readouterr().err


def test_user_info_and_query_are_refused_in_a_base_url() -> None:
    with pytest.raises(ConfigurationError) as info:
        ColabEndpoints.at("https://user:hunter22@example.com")
    assert "hunter22" not in str(info.value)
    with pytest.raises(ConfigurationError, match="query"):
        ColabEndpoints.at("https://example.com/?token=abc")


# -- the browser sign-in -------------------------------------------------------------------------


def test_the_browser_gets_a_loopback_start_url(emu: ColabEmulator) -> None:
    """Not the authorization URL: ``webbrowser`` puts it on a command line. The page the
    browser ends on names the account that signed in."""
    opened: list[str] = []
    announced: list[str] = []
    pages: list[str] = []

    def browser(url: str) -> None:
        opened.append(url)
        pages.append(httpx.get(url, follow_redirects=True, timeout=30).text)

    async def main() -> StoredCredentials:
        async with emulator_oauth(emu) as oauth:
            return await oauth.login(open_browser=browser, announce=announced.append, save=False)

    record = run(main())
    assert record.account == emu.user_email
    assert f"signed in as {emu.user_email}" in pages[0]
    (url,) = opened
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1" and parts.path.startswith("/start/") and not parts.query
    for text in (url, *announced):
        assert "state" not in text and "code_challenge" not in text and "client_id" not in text


def test_a_start_url_opened_twice_ends_the_sign_in(emu: ColabEmulator) -> None:
    """Whoever opened it first may have read the state: the sign-in must start over."""

    def browser(url: str) -> None:
        assert httpx.get(url).status_code == 302
        assert httpx.get(url).status_code == 400

    async def main() -> None:
        async with emulator_oauth(emu) as oauth:
            await oauth.login(open_browser=browser, announce=lambda _: None, save=False)

    with pytest.raises(AuthError, match="opened more than once"):
        run(main())


# -- signing out ---------------------------------------------------------------------------------


def test_logout_revokes_then_cleans_keyring_and_file(emu: ColabEmulator, tmp_path: Path) -> None:
    """A record in the keyring and one left in the file: both revoked, then both removed."""
    origin = ColabEndpoints.at(emu.url).origin
    memory = MemoryKeyring()
    in_keyring = TokenStore(tmp_path, backend="auto", keyring_backend=memory, origin=origin)
    in_file = TokenStore(tmp_path, backend="file", origin=origin)
    first, second = run(sign_in(emu)), run(sign_in(emu))
    in_keyring.save(first)
    in_file.save(second)
    stored_when_revoking: list[int] = []

    class Watching(GoogleOAuth):
        async def revoke(self, token: str) -> bool:
            stored_when_revoking.append(len(in_keyring.load_everywhere()))
            return await super().revoke(token)

    async def main() -> Any:
        client = ClientConfig.from_mapping(emu.client_config(), source="the emulator")
        async with Watching.for_endpoints(
            ColabEndpoints.at(emu.url), client, store=in_keyring
        ) as oauth:
            done = await oauth.logout()
            for record in (first, second):
                with pytest.raises(SignInRequired):
                    await oauth.refresh(record)  # revoked at the emulator
            return done

    done = run(main())
    assert done.revoked and done.accounts == (emu.user_email,)
    assert done.removed == ("the OS keyring", str(in_file.path))
    assert stored_when_revoking == [2, 2]  # revoked first, deleted after
    assert not memory.items and not in_file.path.exists()


# -- the OAuth client file -----------------------------------------------------------------------


def client_file(emu: ColabEmulator, path: Path) -> Path:
    emu.write_client_secrets(path)
    return path


def test_client_file_copy_is_private_from_the_start(emu: ColabEmulator, tmp_path: Path) -> None:
    source = client_file(emu, tmp_path / "client.json")
    config = tmp_path / "config"
    old = os.umask(0)
    try:
        client, kept = keep_client_file(source, config)
    finally:
        os.umask(old)
    assert client.client_id == emu.client_id
    assert kept == config / "client_secrets.json"
    assert kept.stat().st_mode & 0o777 == 0o600 and config.stat().st_mode & 0o777 == 0o700
    assert kept.read_bytes() == source.read_bytes()
    assert [p.name for p in config.iterdir()] == ["client_secrets.json"]  # no temporary left


def test_client_file_copy_refuses_a_symlink_and_never_follows_one(
    emu: ColabEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = client_file(emu, tmp_path / "client.json")
    link = tmp_path / "link.json"
    link.symlink_to(source)
    config = tmp_path / "config"
    with pytest.raises(ConfigurationError, match="symbolic link"):
        keep_client_file(link, config)
    assert _cli.main(["login", "--client-secrets", str(link)]) == 1
    assert "symbolic link" in capsys.readouterr().err
    assert not (config / "client_secrets.json").exists()
    # A link planted where the copy goes is replaced, not written through.
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("untouched")
    config.mkdir(mode=0o700, exist_ok=True)
    (config / "client_secrets.json").symlink_to(elsewhere)
    _client, kept = keep_client_file(source, config)
    assert not kept.is_symlink() and elsewhere.read_text() == "untouched"


def test_an_emulators_client_file_is_kept_apart(emu: ColabEmulator, tmp_path: Path) -> None:
    origin = ColabEndpoints.at(emu.url).origin
    _client, kept = keep_client_file(client_file(emu, tmp_path / "c.json"), tmp_path, origin)
    assert kept.name != "client_secrets.json"
    env = {"COLABREMOTE_OAUTH_CLIENT_ID": "google-client", "COLABREMOTE_CONFIG_DIR": str(tmp_path)}
    assert ClientConfig.load(environ=env, origin=origin).client_id == emu.client_id
    assert ClientConfig.load(environ=env).client_id == "google-client"
    kept.unlink()
    with pytest.raises(ConfigurationError, match="never sent to another origin"):
        ClientConfig.load(environ=env, origin=origin)


# -- secrets never leave in text -----------------------------------------------------------------


def test_environment_token_white_space() -> None:
    assert run(EnvironmentToken("  ya29.abc\r\n").token()) == "ya29.abc"
    for bad in ("ya29.a bc", "ya29.a\nbc", "ya29.a\x00bc", "ya29.a\tbc"):
        with pytest.raises(ConfigurationError, match="COLABREMOTE_ACCESS_TOKEN") as info:
            EnvironmentToken(bad)
        assert "ya29" not in str(info.value)


class GivenTokens:
    """A user's own credentials object (any ``async def token()`` works)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token


def test_a_token_with_a_newline_works_and_a_broken_one_is_not_quoted(emu: ColabEmulator) -> None:
    token = emu.mint_access_token()

    async def whoami(credentials: Any) -> str:
        control = ControlPlane(credentials, endpoints=ColabEndpoints.at(emu.url))
        try:
            return (await control.user_info()).subscription_tier.value
        finally:
            await control.aclose()

    assert run(whoami(GivenTokens(token + "\n")))
    with pytest.raises(ConfigurationError) as info:
        run(whoami(GivenTokens(token[:10] + "\n" + token[10:])))
    assert token[:10] not in str(info.value) and token[10:] not in str(info.value)
    assert "BearerAuth" in repr(BearerAuth(token)) and token not in repr(BearerAuth(token))


def test_logout_says_when_revoking_failed(
    recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    """The origin refuses to revoke: the record is forgotten all the same, and the user told."""
    store = TokenStore(origin=ColabEndpoints.at(recorder.url).origin)
    google_sign_in(store)
    assert _cli.main(["--base-url", recorder.url, "logout"]) == 0
    out = capsys.readouterr().out
    assert "Could not revoke the sign-in of ada@example.com" in out
    assert f"Removed it from {store.path}." in out and "Signed out." in out
    assert store.load() is None
    assert any(request.startswith("POST /revoke") for request in recorder.seen)
    assert _cli.main(["--base-url", recorder.url, "logout"]) == 0
    assert "Was not signed in." in capsys.readouterr().out
