"""Google sign-in: the loopback + PKCE flow played end to end, paste flow, refresh, storage, ADC.

The browser is played by the test (a real HTTP GET to the loopback listener); Google's token
endpoint is played by ``httpx.MockTransport`` (pure protocol logic; the emulator comes later).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import secrets
import socket
import stat
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from colabremote._colab import auth, tokens
from colabremote._colab.auth import (
    ADC_SCOPES,
    REQUIRED_SCOPES,
    AdcCredentials,
    ClientConfig,
    EnvironmentToken,
    GoogleOAuth,
    SignOut,
    UserCredentials,
    find_credentials,
    gcloud_adc_command,
    lookup,
    make_pkce_pair,
    missing_scopes,
    normalize_scopes,
    parse_pasted_code,
)
from colabremote._colab.tokens import StoredCredentials, TokenStore, is_secure_keyring
from colabremote.exceptions import (
    AuthError,
    ConfigurationError,
    MissingScopes,
    OAuthError,
    SignInRequired,
)

from .._keyrings import MemoryKeyring

T = TypeVar("T")

CLIENT_ID = "1234-test.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-client-secret-value"
EMAIL = "ada@example.com"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class FakeGoogle:
    """Google's authorization server and token endpoint, as far as these tests need them."""

    issued: dict[str, dict[str, str]] = field(default_factory=dict)  # code -> what it is bound to
    exchanges: list[str] = field(default_factory=list)
    refreshes: int = 0
    revoked: list[str] = field(default_factory=list)
    refresh_error: str | None = None
    refresh_delay: float = 0.0
    granted: str = " ".join(["openid", *REQUIRED_SCOPES])
    access_counter: int = 0
    secrets_seen: set[str] = field(default_factory=set)
    unavailable: int = 0  # answer this many token requests with 503 first

    def issue_code(self, challenge: str, redirect_uri: str) -> str:
        """What the consent page does: mint a code bound to the PKCE challenge."""
        code = "4/0-code-" + secrets.token_urlsafe(16)
        self.issued[code] = {"challenge": challenge, "redirect_uri": redirect_uri}
        self.secrets_seen.add(code)
        return code

    def _new_access(self) -> str:
        self.access_counter += 1
        token = f"ya29.access-{self.access_counter}-{secrets.token_hex(8)}"
        self.secrets_seen.add(token)
        return token

    async def handler(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if url == auth.DEFAULT_TOKEN_URL and self.unavailable:
            self.unavailable -= 1
            return httpx.Response(503)
        if url == auth.DEFAULT_TOKEN_URL:
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                return httpx.Response(401, json={"error": "invalid_client"})
            if form.get("grant_type") == "authorization_code":
                return self._exchange(form)
            if form.get("grant_type") == "refresh_token":
                self.refreshes += 1
                if self.refresh_delay:
                    await asyncio.sleep(self.refresh_delay)
                if self.refresh_error:
                    # A hostile answer that echoes the refresh token must not leak it.
                    return httpx.Response(
                        400,
                        json={
                            "error": self.refresh_error,
                            "error_description": f"Bad token {form.get('refresh_token')}",
                        },
                    )
                return httpx.Response(
                    200,
                    json={
                        "access_token": self._new_access(),
                        "expires_in": 3599,
                        "scope": self.granted,
                        "token_type": "Bearer",
                    },
                )
            return httpx.Response(400, json={"error": "unsupported_grant_type"})
        if url == auth.DEFAULT_USERINFO_URL:
            if not request.headers.get("Authorization", "").startswith("Bearer ya29."):
                return httpx.Response(401)
            return httpx.Response(200, json={"email": EMAIL, "name": "Ada", "id": "1"})
        if url == auth.DEFAULT_REVOKE_URL:
            self.revoked.append(form["token"])
            return httpx.Response(200)
        if url == auth.DEFAULT_TOKENINFO_URL:
            return httpx.Response(200, json={"scope": " ".join(ADC_SCOPES)})
        return httpx.Response(404)

    def _exchange(self, form: dict[str, str]) -> httpx.Response:
        code = form.get("code", "")
        bound = self.issued.pop(code, None)  # single use
        self.exchanges.append(code)
        if bound is None:
            return httpx.Response(400, json={"error": "invalid_grant", "error_description": "Bad"})
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode()).digest()
        if base64.urlsafe_b64encode(digest).decode().rstrip("=") != bound["challenge"]:
            return httpx.Response(400, json={"error": "invalid_grant", "error_description": "PKCE"})
        if form.get("redirect_uri") != bound["redirect_uri"]:
            return httpx.Response(400, json={"error": "redirect_uri_mismatch"})
        refresh = "1//refresh-" + secrets.token_urlsafe(16)
        self.secrets_seen.update({refresh, verifier})
        return httpx.Response(
            200,
            json={
                "access_token": self._new_access(),
                "refresh_token": refresh,
                "expires_in": 3599,
                "scope": self.granted,
                "token_type": "Bearer",
                "id_token": "x.y.z",
            },
        )


@pytest.fixture
def google() -> FakeGoogle:
    return FakeGoogle()


@pytest.fixture(autouse=True)
def no_os_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's real keyring is never touched (sign-out looks in the keyring and the file)."""
    import keyring
    import keyring.backends.null

    monkeypatch.setattr(keyring, "get_keyring", keyring.backends.null.Keyring)


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "config", backend="file")


def make_oauth(google: FakeGoogle, store: TokenStore | None = None) -> GoogleOAuth:
    return GoogleOAuth(
        ClientConfig(CLIENT_ID, CLIENT_SECRET),
        store=store,
        transport=httpx.MockTransport(google.handler),
    )


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def follow_start(start_url: str) -> str:
    """What a browser does with the URL it is opened on: the loopback start page answers 302
    to the authorization URL (which is never on the browser's command line)."""
    parts = urlsplit(start_url)
    assert parts.scheme == "http" and parts.hostname == "127.0.0.1" and not parts.query
    answer = httpx.get(start_url)
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"]


@dataclass
class Browser:
    """Plays the user's browser: checks the authorization URL, then follows the redirect."""

    google: FakeGoogle
    before: Callable[[str, dict[str, str]], None] | None = None  # extra requests first
    after: Callable[[str, dict[str, str], str], None] | None = None  # extra requests after
    answers: list[int] = field(default_factory=list)
    seen: dict[str, str] = field(default_factory=dict)

    def __call__(self, start_url: str) -> bool:
        url = follow_start(start_url)
        params = query(url)
        self.seen = params
        assert url.startswith(auth.DEFAULT_AUTHORIZE_URL + "?")
        assert params["client_id"] == CLIENT_ID
        redirect = params["redirect_uri"]
        parts = urlsplit(redirect)
        assert parts.scheme == "http" and parts.hostname == "127.0.0.1" and parts.port
        assert parts.path == ""
        assert params["response_type"] == "code"
        assert params["code_challenge_method"] == "S256"
        assert len(params["code_challenge"]) == 43
        assert params["access_type"] == "offline"
        assert params["prompt"] == "consent"
        assert params["scope"] == " ".join(REQUIRED_SCOPES)
        assert len(params["state"]) >= 32
        if self.before is not None:
            self.before(redirect, params)
        code = self.google.issue_code(params["code_challenge"], redirect)
        answer = httpx.get(redirect, params={"state": params["state"], "code": code})
        self.answers.append(answer.status_code)
        assert answer.status_code == 200, answer.text
        assert "signed in" in answer.text
        if self.after is not None:
            self.after(redirect, params, code)
        return True


# -- the loopback flow ---------------------------------------------------------------------------


def test_loopback_flow_end_to_end(google: FakeGoogle, store: TokenStore) -> None:
    browser = Browser(google)

    async def main() -> StoredCredentials:
        async with make_oauth(google, store) as oauth:
            return await oauth.login(open_browser=browser, timeout=30, announce=lambda _: None)

    record = run(main())
    assert len(google.exchanges) == 1 and not google.issued  # the code was used, once
    assert record.account == EMAIL
    assert record.client_id == CLIENT_ID
    assert record.refresh_token and record.refresh_token.startswith("1//")
    assert record.access_token and record.expiry and record.expiry > now()
    assert set(REQUIRED_SCOPES) <= set(record.scopes)
    assert store.load() == record  # stored


def test_loopback_refuses_wrong_state_and_missing_code_then_continues(
    google: FakeGoogle, store: TokenStore
) -> None:
    refused: list[int] = []

    def before(redirect: str, params: dict[str, str]) -> None:
        refused.append(
            httpx.get(redirect, params={"state": "forged", "code": "4/evil"}).status_code
        )
        refused.append(httpx.get(redirect, params={"code": "4/evil"}).status_code)
        refused.append(httpx.get(redirect, params={"state": params["state"]}).status_code)
        refused.append(httpx.post(redirect, params={"state": params["state"]}).status_code)
        refused.append(httpx.get(redirect + "/favicon.ico").status_code)

    async def main() -> StoredCredentials:
        async with make_oauth(google, store) as oauth:
            return await oauth.login(
                open_browser=Browser(google, before=before), timeout=30, announce=lambda _: None
            )

    record = run(main())
    assert refused == [400, 400, 400, 405, 404]
    assert google.exchanges and "4/evil" not in google.exchanges
    assert record.account == EMAIL


def test_loopback_accepts_only_one_code(google: FakeGoogle, store: TokenStore) -> None:
    second: list[str] = []

    def after(redirect: str, params: dict[str, str], code: str) -> None:
        other = google.issue_code(params["code_challenge"], redirect)
        try:
            answer = httpx.get(redirect, params={"state": params["state"], "code": other})
            second.append(f"HTTP {answer.status_code}")
        except httpx.TransportError:
            second.append("closed")

    async def main() -> StoredCredentials:
        async with make_oauth(google, store) as oauth:
            return await oauth.login(
                open_browser=Browser(google, after=after), timeout=30, announce=lambda _: None
            )

    run(main())
    assert second in (["closed"], ["HTTP 400"])
    assert len(google.exchanges) == 1  # the second code was never exchanged


def test_loopback_early_connection_cannot_bring_a_second_code(
    google: FakeGoogle, store: TokenStore
) -> None:
    """A connection accepted before the good redirect, used after it, is refused too."""
    early: list[socket.socket] = []
    answers: list[bytes] = []

    def before(redirect: str, params: dict[str, str]) -> None:
        parts = urlsplit(redirect)
        assert parts.port is not None
        early.append(socket.create_connection(("127.0.0.1", parts.port), timeout=5))

    def after(redirect: str, params: dict[str, str], code: str) -> None:
        other = google.issue_code(params["code_challenge"], redirect)
        conn = early[0]
        conn.sendall(
            f"GET /?state={params['state']}&code={other} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        conn.close()
        answers.append(b"".join(chunks))

    async def main() -> StoredCredentials:
        async with make_oauth(google, store) as oauth:
            return await oauth.login(
                open_browser=Browser(google, before=before, after=after),
                timeout=30,
                announce=lambda _: None,
            )

    run(main())
    assert answers[0].startswith(b"HTTP/1.1 400"), answers
    assert b"already finished" in answers[0]
    assert len(google.exchanges) == 1


def test_loopback_error_from_google_ends_flow(google: FakeGoogle, store: TokenStore) -> None:
    def deny(start_url: str) -> None:
        params = query(follow_start(start_url))
        answer = httpx.get(
            params["redirect_uri"], params={"state": params["state"], "error": "access_denied"}
        )
        assert answer.status_code == 400

    async def main() -> None:
        async with make_oauth(google, store) as oauth:
            await oauth.login(open_browser=deny, timeout=30, announce=lambda _: None)

    with pytest.raises(OAuthError) as info:
        run(main())
    assert info.value.error == "access_denied"
    assert not google.exchanges and store.load() is None


def test_loopback_times_out(google: FakeGoogle, store: TokenStore) -> None:
    printed: list[str] = []

    async def main() -> None:
        async with make_oauth(google, store) as oauth:
            await oauth.login(open_browser=None, timeout=0.3, announce=printed.append)

    with pytest.raises(AuthError, match="no sign-in arrived"):
        run(main())
    # The loopback start URL is shown for manual use; it leads to the authorization URL.
    assert "http://127.0.0.1:" in printed[0] and "/start/" in printed[0]
    assert "state=" not in printed[0] and "code_challenge" not in printed[0]


def test_loopback_browser_failure_propagates(google: FakeGoogle) -> None:
    def broken(url: str) -> None:
        raise RuntimeError("no display")

    async def main() -> None:
        async with make_oauth(google) as oauth:
            await oauth.login(open_browser=broken, timeout=30, announce=lambda _: None)

    with pytest.raises(RuntimeError, match="no display"):
        run(main())


# -- the paste flow ------------------------------------------------------------------------------


def paste_login(google: FakeGoogle, store: TokenStore, answer: Callable[[str], str]) -> Any:
    printed: list[str] = []

    def input_fn(prompt: str) -> str:
        url = printed[-1].splitlines()[-1]
        params = query(url)
        assert params["redirect_uri"] == auth.DEFAULT_PASTE_REDIRECT_URI
        assert params["code_challenge_method"] == "S256"
        assert params["access_type"] == "offline"
        code = google.issue_code(params["code_challenge"], params["redirect_uri"])
        return answer(f"{params['redirect_uri']}?state={params['state']}&code={code}&scope=x")

    async def main() -> StoredCredentials:
        async with make_oauth(google, store) as oauth:
            return await oauth.login_paste(input_fn=input_fn, announce=printed.append)

    return run(main())


def test_paste_flow_with_code(google: FakeGoogle, store: TokenStore) -> None:
    record = paste_login(google, store, lambda url: "  " + query(url)["code"] + "\n")
    assert record.account == EMAIL and store.load() == record


def test_paste_flow_with_full_url(google: FakeGoogle, store: TokenStore) -> None:
    record = paste_login(google, store, lambda url: url)
    assert record.account == EMAIL and len(google.exchanges) == 1


def test_paste_flow_wrong_state(google: FakeGoogle, store: TokenStore) -> None:
    with pytest.raises(OAuthError, match="state") as info:
        paste_login(google, store, lambda url: url.replace("state=", "state=x"))
    assert info.value.error == "state_mismatch" and not google.exchanges


def test_parse_pasted_code_variants() -> None:
    assert parse_pasted_code("4/0Abc_def", "s") == "4/0Abc_def"
    assert parse_pasted_code("http://127.0.0.1/?code=4%2F0A&state=s", "s") == "4/0A"
    assert parse_pasted_code("?code=4/0A", "s") == "4/0A"  # no state: nothing to check
    with pytest.raises(OAuthError) as info:
        parse_pasted_code("https://x/?error=access_denied&state=s", "s")
    assert info.value.error == "access_denied"
    with pytest.raises(OAuthError):
        parse_pasted_code("https://x/?state=s", "s")
    with pytest.raises(OAuthError):
        parse_pasted_code("   ", "s")


# -- exchange details ----------------------------------------------------------------------------


def test_exchange_with_wrong_verifier_is_refused(google: FakeGoogle) -> None:
    _, challenge = make_pkce_pair()
    code = google.issue_code(challenge, "http://127.0.0.1:1")
    other_verifier, _ = make_pkce_pair()

    async def main() -> None:
        async with make_oauth(google) as oauth:
            await oauth.exchange_code(
                code, redirect_uri="http://127.0.0.1:1", verifier=other_verifier
            )

    with pytest.raises(OAuthError) as info:
        run(main())
    assert info.value.error == "invalid_grant"
    assert code not in str(info.value) and other_verifier not in str(info.value)


def test_exchange_without_colab_scope_raises_missing_scopes(google: FakeGoogle) -> None:
    google.granted = "openid https://www.googleapis.com/auth/userinfo.email"
    verifier, challenge = make_pkce_pair()
    code = google.issue_code(challenge, "http://127.0.0.1:1")

    async def main() -> None:
        async with make_oauth(google) as oauth:
            await oauth.exchange_code(code, redirect_uri="http://127.0.0.1:1", verifier=verifier)

    with pytest.raises(MissingScopes) as info:
        run(main())
    assert auth.SCOPE_COLAB in info.value.missing


def test_pkce_pair() -> None:
    verifier, challenge = make_pkce_pair()
    assert len(verifier) == 128
    assert set(verifier) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    )
    digest = hashlib.sha256(verifier.encode()).digest()
    assert challenge == base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert make_pkce_pair()[0] != verifier


def test_scopes() -> None:
    assert REQUIRED_SCOPES == (
        "email",
        "https://www.googleapis.com/auth/colaboratory",
        "https://www.googleapis.com/auth/userinfo.email",
        "profile",
    )
    assert normalize_scopes(["b", "a", "b", " ", "a "]) == ("a", "b")
    granted = ["openid", auth.SCOPE_USERINFO_EMAIL, auth.SCOPE_USERINFO_PROFILE, auth.SCOPE_COLAB]
    assert missing_scopes(granted, REQUIRED_SCOPES) == ()
    assert missing_scopes(["email", "profile"], REQUIRED_SCOPES) == (auth.SCOPE_COLAB,)


# -- refresh -------------------------------------------------------------------------------------


def stored(expires_in: timedelta) -> StoredCredentials:
    return StoredCredentials(
        client_id=CLIENT_ID,
        refresh_token="1//stored-refresh-token",
        access_token="ya29.old-access-token",
        expiry=now() + expires_in,
        scopes=REQUIRED_SCOPES,
        account=EMAIL,
    )


def test_token_is_refreshed_before_expiry(google: FakeGoogle, store: TokenStore) -> None:
    async def main() -> tuple[str, str, str]:
        async with make_oauth(google, store) as oauth:
            fresh = UserCredentials(oauth, stored(timedelta(minutes=30)), store=store)
            near = UserCredentials(oauth, stored(timedelta(minutes=4)), store=store)
            first = await near.token()
            return await fresh.token(), first, await near.token()

    fresh_token, refreshed, again = run(main())
    assert fresh_token == "ya29.old-access-token"
    assert refreshed.startswith("ya29.access-1-") and again == refreshed
    assert google.refreshes == 1
    saved = store.load()
    assert saved is not None and saved.access_token == refreshed  # the new token is stored
    assert saved.refresh_token == "1//stored-refresh-token"
    assert saved.expiry is not None and saved.expiry > now() + timedelta(minutes=55)


def test_refresh_follows_the_clock(google: FakeGoogle) -> None:
    clock = [now()]

    async def main() -> list[str]:
        async with make_oauth(google) as oauth:
            creds = UserCredentials(oauth, stored(timedelta(minutes=10)), clock=lambda: clock[0])
            first = await creds.token()
            clock[0] += timedelta(minutes=6)  # now within the five-minute margin
            return [first, await creds.token()]

    first, second = run(main())
    assert first == "ya29.old-access-token" and second != first and google.refreshes == 1


def test_concurrent_token_calls_refresh_once(google: FakeGoogle) -> None:
    google.refresh_delay = 0.1

    async def main() -> list[str]:
        async with make_oauth(google) as oauth:
            creds = UserCredentials(oauth, stored(timedelta(seconds=-5)))
            return await asyncio.gather(*(creds.token() for _ in range(20)))

    results = run(main())
    assert google.refreshes == 1
    assert len(set(results)) == 1 and results[0].startswith("ya29.access-1-")


def test_invalid_grant_means_sign_in_again(google: FakeGoogle, store: TokenStore) -> None:
    google.refresh_error = "invalid_grant"
    record = stored(timedelta(seconds=-5))
    store.save(record)

    async def main() -> None:
        async with make_oauth(google, store) as oauth:
            await UserCredentials(oauth, record, store=store).token()

    with pytest.raises(SignInRequired, match="colabremote login") as info:
        run(main())
    assert "1//stored-refresh-token" not in str(info.value)  # echoed by the server, redacted
    assert store.load() is None  # the dead sign-in is forgotten


def test_other_refresh_errors_are_oauth_errors(google: FakeGoogle) -> None:
    google.refresh_error = "invalid_request"

    async def main() -> None:
        async with make_oauth(google) as oauth:
            await UserCredentials(oauth, stored(timedelta(seconds=-5))).token()

    with pytest.raises(OAuthError) as info:
        run(main())
    assert info.value.error == "invalid_request"
    assert not isinstance(info.value, SignInRequired)


def test_refresh_is_retried_but_exchange_is_not(google: FakeGoogle) -> None:
    google.unavailable = 1

    async def refresh() -> str:
        async with make_oauth(google) as oauth:
            return await UserCredentials(oauth, stored(timedelta(seconds=-5))).token()

    assert run(refresh()).startswith("ya29.access-")  # the 503 was retried
    google.unavailable = 1
    verifier, challenge = make_pkce_pair()
    code = google.issue_code(challenge, "http://127.0.0.1:1")

    async def exchange() -> None:
        async with make_oauth(google) as oauth:
            await oauth.exchange_code(code, redirect_uri="http://127.0.0.1:1", verifier=verifier)

    with pytest.raises(AuthError, match="HTTP 503"):  # a code is single-use: no blind retry
        run(exchange())
    assert google.unavailable == 0 and code in google.issued


def test_invalidate_forces_a_refresh(google: FakeGoogle) -> None:
    async def main() -> tuple[str, str]:
        async with make_oauth(google) as oauth:
            creds = UserCredentials(oauth, stored(timedelta(minutes=30)))
            first = await creds.token()
            creds.invalidate()  # e.g. after a 401
            return first, await creds.token()

    first, second = run(main())
    assert first == "ya29.old-access-token" and second != first and google.refreshes == 1


def test_logout_revokes_and_forgets(google: FakeGoogle, store: TokenStore) -> None:
    store.save(stored(timedelta(minutes=30)))

    async def main() -> tuple[SignOut, SignOut]:
        async with make_oauth(google, store) as oauth:
            return await oauth.logout(), await oauth.logout()

    first, second = run(main())
    assert first.found and first.revoked and first.removed == (str(store.path),)
    assert first.accounts == (EMAIL,)
    assert not second.found
    assert google.revoked == ["1//stored-refresh-token"]
    assert store.load() is None


# -- the token store -----------------------------------------------------------------------------


def test_file_store_permissions(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "a" / "colabremote", backend="file")
    assert store.load() is None
    record = stored(timedelta(minutes=30))
    store.save(record)
    assert stat.S_IMODE(store.config_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.load() == record
    store.delete()
    assert store.load() is None
    store.delete()  # deleting nothing is fine


def test_file_store_fixes_loose_permissions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = TokenStore(tmp_path / "c", backend="file")
    store.save(stored(timedelta(minutes=30)))
    os.chmod(store.path, 0o644)
    os.chmod(store.config_dir, 0o755)
    with caplog.at_level(logging.WARNING):
        assert store.load() is not None
        store.save(stored(timedelta(minutes=30)))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.config_dir.stat().st_mode) == 0o700
    assert "readable by others" in caplog.text
    assert "stored-refresh-token" not in caplog.text


@pytest.mark.parametrize("failing", ["fsync", "replace", "write"])
def test_file_store_write_is_atomic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    store = TokenStore(tmp_path / "c", backend="file")
    old = stored(timedelta(minutes=30))
    store.save(old)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    if failing == "write":
        real_dumps = json.dumps
        monkeypatch.setattr(json, "dumps", lambda *a, **k: real_dumps(*a, **k)[:10])
        monkeypatch.setattr(os, "fsync", boom)
    else:
        monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="disk full"):
        store.save(stored(timedelta(minutes=60)))
    monkeypatch.undo()
    assert store.load() == old  # the old record, whole
    assert sorted(p.name for p in store.config_dir.iterdir()) == ["credentials.json"]


def test_file_store_refuses_a_symlink(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "c", backend="file")
    store.config_dir.mkdir(mode=0o700)
    (tmp_path / "elsewhere.json").write_text("{}")
    store.path.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ConfigurationError, match="regular file"):
        store.load()


def test_config_dir_resolution(tmp_path: Path) -> None:
    env = {"COLABREMOTE_CONFIG_DIR": str(tmp_path / "x"), "XDG_CONFIG_HOME": str(tmp_path)}
    assert tokens.default_config_dir(env) == tmp_path / "x"
    assert tokens.default_config_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "colabremote"
    assert tokens.default_config_dir({}) == Path.home() / ".config" / "colabremote"
    store = TokenStore(backend="file", environ=env)
    assert store.config_dir == tmp_path / "x" and store.kind == "file"
    assert TokenStore(environ={"COLABREMOTE_TOKEN_STORE": "file"}).kind == "file"
    with pytest.raises(ConfigurationError):
        TokenStore(backend="nonsense")  # type: ignore[arg-type]


class PlaintextKeyring:
    """Stands in for keyrings.alt.file.PlaintextKeyring."""

    priority = 0.5


PlaintextKeyring.__module__ = "keyrings.alt.file"


def test_never_a_plaintext_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring
    import keyring.backends.fail
    import keyring.backends.null

    assert not is_secure_keyring(keyring.backends.fail.Keyring())  # type: ignore[no-untyped-call]
    assert not is_secure_keyring(keyring.backends.null.Keyring())  # type: ignore[no-untyped-call]
    assert not is_secure_keyring(PlaintextKeyring())
    assert is_secure_keyring(MemoryKeyring())
    with pytest.raises(ConfigurationError, match="does not encrypt"):
        TokenStore(tmp_path, keyring_backend=PlaintextKeyring())
    # Automatic choice: a plaintext keyring is passed over for the private file.
    monkeypatch.setattr(keyring, "get_keyring", PlaintextKeyring)
    auto = TokenStore(tmp_path / "auto", backend="auto")
    assert auto.kind == "file"
    with pytest.raises(ConfigurationError, match="no secure OS keyring"):
        TokenStore(tmp_path, backend="keyring")


def test_keyring_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring

    memory = MemoryKeyring()
    monkeypatch.setattr(keyring, "get_keyring", lambda: memory)
    store = TokenStore(tmp_path / "k")
    assert store.kind == "keyring"
    record = stored(timedelta(minutes=30))
    store.save(record)
    assert store.load() == record
    assert not (tmp_path / "k").exists()  # nothing on disk
    store.delete()
    assert store.load() is None
    store.delete()


# -- ADC -----------------------------------------------------------------------------------------


class FakeAdc:
    """Stands in for google-auth user credentials."""

    def __init__(self, scopes: list[str] | None, *, expired: bool = False) -> None:
        self.scopes = scopes
        self.token: str | None = None if expired else "ya29.adc-token"
        self.expiry: datetime | None = None
        self.refreshed = 0

    def refresh(self, request: object) -> None:
        self.refreshed += 1
        self.token = "ya29.adc-refreshed"
        self.expiry = (now() + timedelta(hours=1)).replace(tzinfo=None)  # naive UTC


def test_adc_without_colab_scopes() -> None:
    creds = AdcCredentials(FakeAdc(["openid", auth.SCOPE_USERINFO_EMAIL]), request=None)
    with pytest.raises(MissingScopes) as info:
        run(creds.token())
    command = (
        "gcloud auth application-default login --scopes="
        "https://www.googleapis.com/auth/cloud-platform,"
        "https://www.googleapis.com/auth/colaboratory,"
        "https://www.googleapis.com/auth/userinfo.email,openid"
    )
    assert command == gcloud_adc_command()
    assert command in str(info.value)
    assert info.value.missing == (auth.SCOPE_COLAB,)
    assert "ya29" not in str(info.value)


def test_adc_with_scopes_refreshes() -> None:
    fake = FakeAdc(list(ADC_SCOPES), expired=True)
    creds = AdcCredentials(fake, request=object())
    assert run(creds.token()) == "ya29.adc-refreshed"
    assert fake.refreshed == 1


def test_adc_invalidated_after_a_401_refreshes() -> None:
    fake = FakeAdc(list(ADC_SCOPES))
    creds = AdcCredentials(fake, request=object())
    assert run(creds.token()) == "ya29.adc-token" and fake.refreshed == 0
    creds.invalidate()  # what a session does when Colab answers 401
    assert run(creds.token()) == "ya29.adc-refreshed" and fake.refreshed == 1


def test_adc_unknown_scopes_are_looked_up(google: FakeGoogle) -> None:
    async def main() -> str:
        async with make_oauth(google) as oauth:
            creds = AdcCredentials(FakeAdc(None), request=None, scope_lookup=oauth.token_scopes)
            return await creds.token()

    assert run(main()) == "ya29.adc-token"


def test_adc_granted_scopes_outrank_requested(google: FakeGoogle) -> None:
    """User ADC report what was *asked* in ``scopes``; what was granted decides."""
    fake = FakeAdc(list(ADC_SCOPES))
    fake.granted_scopes = ["openid", auth.SCOPE_USERINFO_EMAIL]  # type: ignore[attr-defined]
    with pytest.raises(MissingScopes, match="gcloud auth application-default login"):
        run(AdcCredentials(fake, request=None).token())

    async def lookup(token: str) -> tuple[str, ...]:
        return ("openid",)

    with pytest.raises(MissingScopes) as info:
        run(AdcCredentials(FakeAdc(list(ADC_SCOPES)), request=None, scope_lookup=lookup).token())
    assert set(info.value.missing) == {auth.SCOPE_COLAB, auth.SCOPE_USERINFO_EMAIL}


def test_adc_needs_google_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.auth", None)
    with pytest.raises(ConfigurationError, match=r"pip install \"colabremote\[adc\]\""):
        auth.load_adc()


# -- client configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["installed", "web"])
def test_client_secrets_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "client_secret.json"
    path.write_text(json.dumps({kind: {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}}))
    for config in (
        ClientConfig.load(path, environ={}),
        ClientConfig.load(environ={"COLABREMOTE_OAUTH_CLIENT_SECRETS": str(path)}),
    ):
        assert (config.client_id, config.client_secret) == (CLIENT_ID, CLIENT_SECRET)
    (tmp_path / "conf").mkdir()
    path.rename(tmp_path / "conf" / "client_secrets.json")
    default = ClientConfig.load(environ={"COLABREMOTE_CONFIG_DIR": str(tmp_path / "conf")})
    assert default.client_id == CLIENT_ID


def test_client_from_environment_and_missing(tmp_path: Path) -> None:
    env = {
        "COLABREMOTE_OAUTH_CLIENT_ID": CLIENT_ID,
        "COLABREMOTE_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
    }
    assert ClientConfig.load(environ=env).client_secret == CLIENT_SECRET
    with pytest.raises(ConfigurationError) as info:
        ClientConfig.load(environ={"COLABREMOTE_CONFIG_DIR": str(tmp_path)})
    message = str(info.value)
    assert "OAuth client ID" in message and "Desktop app" in message
    assert "COLABREMOTE_OAUTH_CLIENT_SECRETS" in message
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"other": {}}))
    with pytest.raises(ConfigurationError, match="installed"):
        ClientConfig.from_file(bad)


# -- the ordered lookup --------------------------------------------------------------------------


def test_find_credentials_order(
    google: FakeGoogle, store: TokenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SignInRequired, match="colabremote login"):
        find_credentials(store=store, environ={})
    store.save(stored(timedelta(minutes=30)))
    found = find_credentials(store=store, environ={})
    assert isinstance(found, UserCredentials) and found.source == "stored"
    assert run(found.token()) == "ya29.old-access-token"
    run(found.aclose())
    env_found = find_credentials(store=store, environ={"COLABREMOTE_ACCESS_TOKEN": "ya29.ci"})
    assert isinstance(env_found, EnvironmentToken)
    assert run(env_found.token()) == "ya29.ci"
    store.delete()
    adc = AdcCredentials(FakeAdc(list(ADC_SCOPES)), request=None)
    monkeypatch.setattr(lookup, "load_adc", lambda **kwargs: adc)
    assert find_credentials(store=store, environ={}, use_adc=True) is adc
    run(adc.aclose())
    # The tokeninfo lookup is wired to the OAuth endpoints given (here the fake).
    oauth = make_oauth(google)
    monkeypatch.setattr(
        lookup, "load_adc", lambda **kwargs: AdcCredentials(FakeAdc(None), None, **kwargs)
    )
    via_oauth = find_credentials(store=store, oauth=oauth, environ={}, use_adc=True)
    assert run(via_oauth.token()) == "ya29.adc-token"
    run(oauth.aclose())
    with pytest.raises(SignInRequired):
        find_credentials(store=store, environ={}, use_adc=False)


def test_stored_credentials_need_a_client_only_to_refresh(store: TokenStore) -> None:
    store.save(stored(timedelta(seconds=-5)))
    found = find_credentials(store=store, environ={"COLABREMOTE_CONFIG_DIR": str(store.config_dir)})

    async def main() -> None:
        try:
            await found.token()
        finally:
            await found.aclose()

    with pytest.raises(ConfigurationError, match="OAuth client"):
        run(main())


# -- secrets stay secret -------------------------------------------------------------------------


def test_no_secret_in_repr_str_or_errors(
    google: FakeGoogle, store: TokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []

    async def main() -> None:
        async with make_oauth(google, store) as oauth:
            record = await oauth.login(
                open_browser=Browser(google), timeout=30, announce=lambda _: None
            )
            google.secrets_seen.update(
                {record.refresh_token or "", record.access_token or "", CLIENT_SECRET}
            )
            request = oauth.authorization_request("http://127.0.0.1:1")
            google.secrets_seen.update({request.verifier})
            creds = UserCredentials(oauth, record, store=store)
            for obj in (record, oauth, oauth.client, request, creds, store):
                texts.extend([repr(obj), str(obj)])
            env = EnvironmentToken("ya29.environment-secret")
            google.secrets_seen.add("ya29.environment-secret")
            texts.extend([repr(env), str(env)])
            google.refresh_error = "invalid_grant"
            try:
                await UserCredentials(oauth, record.with_token("", None)).token()
            except SignInRequired as exc:
                texts.append(str(exc))

    run(main())
    texts.append(caplog.text)
    assert len(texts) > 10
    for secret in google.secrets_seen:
        assert secret
        for text in texts:
            assert secret not in text, text
