"""ColabEmulator, driven with raw httpx and websockets as a Colab client would drive Colab."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import secrets
import struct
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from colabremote.testing import ColabEmulator, ManualClock

XSSI = ")]}'\n"
COLAB_SCOPE = "https://www.googleapis.com/auth/colaboratory"
SCOPES = f"profile email {COLAB_SCOPE}"
LOOPBACK = "http://127.0.0.1:49999"


def unxssi(response: httpx.Response) -> Any:
    """Parse a v1 body, which must carry the XSSI prefix."""
    assert response.text.startswith(XSSI), response.text[:40]
    return json.loads(response.text[len(XSSI) :])


def new_nbh() -> str:
    return str(uuid.uuid4()).replace("-", "_").ljust(44, ".")


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(96)[:128]
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize(
    client: httpx.Client, emu: ColabEmulator, challenge: str, redirect_uri: str = LOOPBACK
) -> dict[str, str]:
    """Play the browser: GET the authorization URL and read the redirect's query."""
    params = {
        "client_id": emu.client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "access_type": "offline",
        "scope": SCOPES,
        "state": "nonce=1234",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "prompt": "consent",
    }
    response = client.get("/o/oauth2/v2/auth", params=params)
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(redirect_uri + "?")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    return {k: v[0] for k, v in query.items()}


def exchange(
    client: httpx.Client,
    emu: ColabEmulator,
    code: str,
    verifier: str,
    redirect_uri: str = LOOPBACK,
) -> httpx.Response:
    return client.post(
        "/token",
        data={
            "code": code,
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            "redirect_uri": redirect_uri,
            "grant_type": "authorization_code",
            "code_verifier": verifier,
        },
    )


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[ColabEmulator]:
    with ColabEmulator() as emulator:
        yield emulator


def _defaults(emu: ColabEmulator) -> None:
    emu.faults.clear()
    emu.max_assignments = 20
    emu.proxy_token_ttl = 3600
    emu.access_token_ttl = 3600
    emu.idle_timeout = None
    emu.activity_counts_as_liveness = False
    emu.subscription_tier = "PRO"
    emu.unavailable_accelerators = set()
    emu.create_runtime_delay = 0.3
    emu.gapi_allowed = emu.public_api_allowed = True


@pytest.fixture(autouse=True)
def _reset(emu: ColabEmulator) -> Iterator[None]:
    _defaults(emu)
    yield
    _defaults(emu)


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def clocked_emulator(clock: ManualClock) -> Iterator[ColabEmulator]:
    with ColabEmulator(clock=clock) as emulator:
        yield emulator


@pytest.fixture
def clocked(clocked_emulator: ColabEmulator) -> Iterator[ColabEmulator]:
    """An emulator on a manual clock, for TTL and idle tests that move time instead of sleeping."""
    _defaults(clocked_emulator)
    yield clocked_emulator
    _defaults(clocked_emulator)


@pytest.fixture(scope="module")
def clocked_http(clocked_emulator: ColabEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=clocked_emulator.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def clocked_auth(clocked_emulator: ColabEmulator) -> dict[str, str]:
    token = clocked_emulator.mint_access_token()
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


@pytest.fixture(scope="module")
def http(emu: ColabEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def token(emu: ColabEmulator) -> str:
    return emu.mint_access_token()


@pytest.fixture(scope="module")
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def assign(
    http: httpx.Client,
    auth: dict[str, str],
    nbh: str | None = None,
    **params: str,
) -> tuple[httpx.Response, dict[str, Any]]:
    """GET then POST /tun/m/assign; returns the POST response and the GET body."""
    query = {"nbh": nbh or new_nbh(), **params, "authuser": "0"}
    got = http.get("/tun/m/assign", params=query, headers=auth)
    assert got.status_code == 200, got.text
    shape_a = unxssi(got)
    posted = http.post(
        "/tun/m/assign", params=query, headers={**auth, "X-Goog-Colab-Token": shape_a["token"]}
    )
    return posted, shape_a


def unassign(http: httpx.Client, auth: dict[str, str], endpoint: str) -> None:
    path = f"/tun/m/unassign/{endpoint}"
    xsrf = unxssi(http.get(path, params={"authuser": "0"}, headers=auth))["token"]
    response = http.post(
        path, params={"authuser": "0"}, headers={**auth, "X-Goog-Colab-Token": xsrf}
    )
    assert response.status_code == 200


@pytest.fixture(scope="module")
def runtime(emu: ColabEmulator, auth: dict[str, str]) -> Iterator[dict[str, Any]]:
    """One GPU runtime with a running kernel, shared by the proxy tests."""
    with httpx.Client(base_url=emu.url, timeout=60) as client:
        posted, _ = assign(client, auth, variant="GPU", accelerator="T4")
        body = unxssi(posted)
        info = body["runtimeProxyInfo"]
        kernel = httpx.post(
            info["url"] + "/api/kernels",
            json={"name": "python3"},
            headers={"X-Colab-Runtime-Proxy-Token": info["token"]},
            timeout=90,
        )
        assert kernel.status_code == 201, kernel.text
        body["kernel_id"] = kernel.json()["id"]
        yield body
        unassign(client, auth, body["endpoint"])


def execute_request(code: str, session: str, msg_id: str | None = None) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": msg_id or uuid.uuid4().hex,
            "msg_type": "execute_request",
            "username": "username",
            "session": session,
            "date": "2026-01-01T00:00:00Z",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": True,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }


def ws_url(runtime: dict[str, Any], session: str) -> str:
    base = runtime["runtimeProxyInfo"]["url"].replace("http://", "ws://")
    return f"{base}/api/kernels/{runtime['kernel_id']}/channels?session_id={session}"


async def run_cell(
    url: str,
    headers: dict[str, str],
    code: str,
    *,
    colab_reply: dict[str, Any] | None = None,
    subprotocols: list[str] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Execute ``code`` over a kernel WebSocket; return every message until execute_reply."""
    session = uuid.uuid4().hex
    messages: list[dict[str, Any]] = []
    async with websockets.connect(
        url,
        additional_headers=headers,
        subprotocols=subprotocols,  # type: ignore[arg-type]
        max_size=None,
    ) as ws:
        request = execute_request(code, session)
        seen: set[str] = set()
        await ws.send(json.dumps(request))
        while True:
            frame = await asyncio.wait_for(ws.recv(), 60)
            message = json.loads(frame)
            messages.append(message)
            kind = message["header"]["msg_type"]
            if kind == "colab_request" and colab_reply is not None:
                value = {
                    "type": "colab_reply",
                    "colab_msg_id": message["metadata"]["colab_msg_id"],
                    **colab_reply,
                }
                reply = {
                    "header": {
                        "msg_id": str(uuid.uuid4()),
                        "msg_type": "input_reply",
                        "session": session,
                        "date": "2026-01-01T00:00:00Z",
                        "username": "username",
                        "version": "5.0",
                    },
                    "content": {"value": value},
                    "channel": "stdin",
                    "metadata": {},
                    "parent_header": {},
                }
                await ws.send(json.dumps(reply))
            if message["parent_header"].get("msg_id") == request["header"]["msg_id"]:
                # Shell and iopub are not ordered: done when both the reply and idle came.
                seen.add(kind)
                if kind == "status" and message["content"]["execution_state"] == "idle":
                    seen.add("idle")
                if {"execute_reply", "idle"} <= seen:
                    return messages, ws.subprotocol
    raise AssertionError("unreachable")


def stdout(messages: list[dict[str, Any]]) -> str:
    return "".join(
        m["content"]["text"]
        for m in messages
        if m["header"]["msg_type"] == "stream" and m["content"]["name"] == "stdout"
    )


# --- OAuth ------------------------------------------------------------------------------------


def test_oauth_code_flow_with_pkce(emu: ColabEmulator, http: httpx.Client) -> None:
    verifier, challenge = pkce()
    query = authorize(http, emu, challenge)
    assert query["state"] == "nonce=1234"
    response = exchange(http, emu, query["code"], verifier)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0 and body["refresh_token"] and body["access_token"]
    assert COLAB_SCOPE in body["scope"].split()
    assert COLAB_SCOPE in emu.token_scopes(body["access_token"])
    # A code works once.
    again = exchange(http, emu, query["code"], verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    user = http.get(
        "/oauth2/v2/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert user.status_code == 200
    assert user.json()["email"] == emu.user_email and user.json()["name"] == emu.user_name


def test_oauth_bad_verifier_refused(emu: ColabEmulator, http: httpx.Client) -> None:
    _, challenge = pkce()
    query = authorize(http, emu, challenge)
    other_verifier, _ = pkce()
    response = exchange(http, emu, query["code"], other_verifier)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    _, challenge = pkce()
    query = authorize(http, emu, challenge)
    assert exchange(http, emu, query["code"], "").status_code == 400


def test_oauth_wrong_client_secret_and_redirect(emu: ColabEmulator, http: httpx.Client) -> None:
    verifier, challenge = pkce()
    query = authorize(http, emu, challenge)
    bad = http.post(
        "/token",
        data={
            "code": query["code"],
            "client_id": emu.client_id,
            "client_secret": "wrong",
            "redirect_uri": LOOPBACK,
            "grant_type": "authorization_code",
            "code_verifier": verifier,
        },
    )
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    params = {
        "client_id": emu.client_id,
        "redirect_uri": "https://evil.example.com/cb",
        "response_type": "code",
        "scope": SCOPES,
    }
    assert http.get("/o/oauth2/v2/auth", params=params).status_code == 400


def test_oauth_refresh_and_revoke(emu: ColabEmulator, http: httpx.Client) -> None:
    verifier, challenge = pkce()
    tokens = exchange(http, emu, authorize(http, emu, challenge)["code"], verifier).json()
    refreshed = http.post(
        "/token",
        data={
            "refresh_token": tokens["refresh_token"],
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            "grant_type": "refresh_token",
        },
    )
    assert refreshed.status_code == 200
    new_access = refreshed.json()["access_token"]
    assert new_access != tokens["access_token"] and "refresh_token" not in refreshed.json()
    headers = {"Authorization": f"Bearer {new_access}"}
    assert http.get("/oauth2/v2/userinfo", headers=headers).status_code == 200
    assert http.post("/revoke", params={"token": tokens["refresh_token"]}).status_code == 200
    assert http.get("/oauth2/v2/userinfo", headers=headers).status_code == 401
    again = http.post(
        "/token",
        data={
            "refresh_token": tokens["refresh_token"],
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            "grant_type": "refresh_token",
        },
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_online_access_has_no_refresh_token(emu: ColabEmulator, http: httpx.Client) -> None:
    verifier, challenge = pkce()
    params = {
        "client_id": emu.client_id,
        "redirect_uri": LOOPBACK,
        "response_type": "code",
        "scope": SCOPES,
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    location = http.get("/o/oauth2/v2/auth", params=params).headers["location"]
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]
    body = exchange(http, emu, code, verifier).json()
    assert "refresh_token" not in body and body["access_token"]


def test_refresh_invalid_grant_switch(emu: ColabEmulator, http: httpx.Client) -> None:
    verifier, challenge = pkce()
    tokens = exchange(http, emu, authorize(http, emu, challenge)["code"], verifier).json()
    data = {
        "refresh_token": tokens["refresh_token"],
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "grant_type": "refresh_token",
    }
    emu.faults.refresh_invalid_grant = 1
    assert http.post("/token", data=data).json()["error"] == "invalid_grant"
    assert http.post("/token", data=data).status_code == 200


def test_incremental_consent_tokeninfo_and_denial(emu: ColabEmulator, http: httpx.Client) -> None:
    verifier, challenge = pkce()
    exchange(http, emu, authorize(http, emu, challenge)["code"], verifier)
    drive = "https://www.googleapis.com/auth/drive.file"
    verifier, challenge = pkce()
    params = {
        "client_id": emu.client_id,
        "redirect_uri": LOOPBACK,
        "response_type": "code",
        "access_type": "offline",
        "scope": drive,
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "include_granted_scopes": "true",
        "login_hint": emu.user_email,
    }
    location = http.get("/o/oauth2/v2/auth", params=params).headers["location"]
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]
    body = exchange(http, emu, code, verifier).json()
    assert {drive, COLAB_SCOPE} <= set(body["scope"].split())
    info = http.get("/tokeninfo", params={"access_token": body["access_token"]}).json()
    assert info["email"] == emu.user_email and drive in info["scope"].split()
    emu.faults.deny_next_authorization = 1
    denied = http.get("/o/oauth2/v2/auth", params=params).headers["location"]
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(denied).query)["error"] == ["access_denied"]


def test_oauth_paste_flow(emu: ColabEmulator, http: httpx.Client) -> None:
    verifier, challenge = pkce()
    query = authorize(http, emu, challenge, redirect_uri=emu.paste_redirect_uri)
    page = http.get("/oauth/paste", params=query)
    assert page.status_code == 200 and query["code"] in page.text
    response = exchange(http, emu, query["code"], verifier, redirect_uri=emu.paste_redirect_uri)
    assert response.status_code == 200


def test_access_token_ttl(
    clocked: ColabEmulator, clock: ManualClock, clocked_http: httpx.Client
) -> None:
    clocked.access_token_ttl = 0.3
    short = clocked.mint_access_token()
    headers = {"Authorization": f"Bearer {short}"}
    assert clocked_http.get("/v1/user-info", headers=headers).status_code == 200
    clock.advance(0.5)
    assert clocked_http.get("/v1/user-info", headers=headers).status_code == 401


def test_write_client_secrets(emu: ColabEmulator, tmp_path: Any) -> None:
    path = emu.write_client_secrets(tmp_path / "client.json")
    with open(path) as f:
        config = json.load(f)["installed"]
    assert config["client_id"] == emu.client_id
    assert config["client_secret"] == emu.client_secret
    assert config["token_uri"] == f"{emu.url}/token"
    assert config["auth_uri"] == f"{emu.url}/o/oauth2/v2/auth"
    assert config["redirect_uris"] == ["http://127.0.0.1"]


# --- auth on the control plane ----------------------------------------------------------------


def test_bearer_and_scopes_required(emu: ColabEmulator, http: httpx.Client) -> None:
    params = {"nbh": new_nbh(), "authuser": "0"}
    assert http.get("/tun/m/assign", params=params).status_code == 401
    bad = {"Authorization": "Bearer not-a-token"}
    assert http.get("/tun/m/assign", params=params, headers=bad).status_code == 401
    no_email = {"Authorization": f"Bearer {emu.mint_access_token([COLAB_SCOPE])}"}
    assert http.get("/tun/m/assign", params=params, headers=no_email).status_code == 401
    no_colab = {"Authorization": f"Bearer {emu.mint_access_token(['email', 'profile'])}"}
    assert http.get("/tun/m/assign", params=params, headers=no_colab).status_code == 200
    refused = http.get("/v1/user-info", headers=no_colab)
    assert refused.status_code == 403 and "insufficient" in refused.text
    assert http.get("/v1beta/runtimes", headers=no_colab).status_code == 403


def test_gapi_and_public_api_can_be_walled_off(
    emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]
) -> None:
    emu.gapi_allowed = emu.public_api_allowed = False
    walled = http.get("/v1/assignments", headers=auth)
    assert walled.status_code == 403 and "USER_PROJECT_DENIED" in walled.text
    assert http.get("/v1beta/runtimes", headers=auth).status_code == 403
    listed = http.get("/tun/m/assignments", params={"authuser": "0"}, headers=auth)
    assert listed.status_code == 200


def test_authuser(http: httpx.Client, auth: dict[str, str]) -> None:
    params = {"nbh": new_nbh(), "authuser": "1"}
    assert http.get("/tun/m/assign", params=params, headers=auth).status_code == 401
    params["authuser"] = "x"
    assert http.get("/tun/m/assign", params=params, headers=auth).status_code == 400


def test_xssi_prefix_on_v1_not_on_public(http: httpx.Client, auth: dict[str, str]) -> None:
    assert http.get("/v1/user-info", headers=auth).text.startswith(XSSI)
    assert http.get("/tun/m/ccu-info", params={"authuser": "0"}, headers=auth).text.startswith(XSSI)
    assert http.get("/vscode/experiment-state", params={"authuser": "0"}).text.startswith(XSSI)
    public = http.get("/v1beta/subscription", headers=auth)
    assert not public.text.startswith(XSSI)
    assert public.json() == {"name": "subscription", "tier": "SUBSCRIPTION_TIER_PRO"}


# --- assign -----------------------------------------------------------------------------------


def test_assign_shape_a_then_b(
    emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]
) -> None:
    nbh = new_nbh()
    posted, shape_a = assign(http, auth, nbh, variant="GPU", accelerator="t4")
    assert set(shape_a) == {"acc", "nbh", "p", "token", "variant"}
    assert shape_a["acc"] == "T4" and shape_a["variant"] == "GPU" and shape_a["nbh"] == nbh
    assert posted.status_code == 200
    body = unxssi(posted)
    assert body["outcome"] == 4 and body["variant"] == 1 and body["machineShape"] == 0
    assert body["accelerator"] == "T4"
    assert body["runtimeProxyInfo"]["url"].startswith("http://127.0.0.1:")
    again = unxssi(http.get("/tun/m/assign", params={"nbh": nbh, "authuser": "0"}, headers=auth))
    assert "token" not in again and again["endpoint"] == body["endpoint"]
    assert again["runtimeProxyInfo"]["token"] != body["runtimeProxyInfo"]["token"]
    # Assignments are keyed by (user, nbh): another user with the same nbh gets Shape A.
    stranger = {"Authorization": f"Bearer {emu.mint_access_token(email='other@example.com')}"}
    theirs = unxssi(
        http.get("/tun/m/assign", params={"nbh": nbh, "authuser": "0"}, headers=stranger)
    )
    assert "token" in theirs
    unassign(http, auth, body["endpoint"])


def test_assign_xsrf_required(emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]) -> None:
    query = {"nbh": new_nbh(), "authuser": "0"}
    assert http.post("/tun/m/assign", params=query, headers=auth).status_code == 403
    unknown = {**auth, "X-Goog-Colab-Token": "made-up"}
    assert http.post("/tun/m/assign", params=query, headers=unknown).status_code == 403
    # A token issued for another path, or to another user, does not work here.
    posted, _ = assign(http, auth)
    endpoint = unxssi(posted)["endpoint"]
    path = f"/tun/m/unassign/{endpoint}"
    other = unxssi(http.get(path, params={"authuser": "0"}, headers=auth))["token"]
    elsewhere = {**auth, "X-Goog-Colab-Token": other}
    assert http.post("/tun/m/assign", params=query, headers=elsewhere).status_code == 403
    mine = unxssi(http.get("/tun/m/assign", params=query, headers=auth))["token"]
    stranger = {"Authorization": f"Bearer {emu.mint_access_token(email='other@example.com')}"}
    theirs = {**stranger, "X-Goog-Colab-Token": mine}
    assert http.post("/tun/m/assign", params=query, headers=theirs).status_code == 403
    assert http.post(path, params={"authuser": "0"}, headers=elsewhere).status_code == 200


def test_nbh_format_checked(http: httpx.Client, auth: dict[str, str]) -> None:
    for nbh in ("short", "x" * 45, "a" * 43 + "!"):
        params = {"nbh": nbh, "authuser": "0"}
        assert http.get("/tun/m/assign", params=params, headers=auth).status_code == 400


def test_shape_b_after_lost_post_reply(
    emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]
) -> None:
    emu.faults.assign_delay = 3
    nbh = new_nbh()
    query = {"nbh": nbh, "authuser": "0"}
    xsrf = unxssi(http.get("/tun/m/assign", params=query, headers=auth))["token"]
    with pytest.raises(httpx.ReadTimeout):
        http.post(
            "/tun/m/assign",
            params=query,
            headers={**auth, "X-Goog-Colab-Token": xsrf},
            timeout=0.5,
        )
    shape_b = unxssi(http.get("/tun/m/assign", params=query, headers=auth))
    assert "token" not in shape_b and shape_b["endpoint"].startswith("m-s-")
    emu.faults.assign_delay = 0
    unassign(http, auth, shape_b["endpoint"])


@pytest.mark.parametrize("status", [412, 503, 400, 502])
def test_assign_status_faults(
    emu: ColabEmulator, http: httpx.Client, auth: dict[str, str], status: int
) -> None:
    emu.faults.fail_next_assign(status)
    posted, _ = assign(http, auth, variant="GPU", accelerator="T4")
    assert posted.status_code == status
    retry, _ = assign(http, auth, variant="GPU", accelerator="T4")
    assert retry.status_code == 200
    unassign(http, auth, unxssi(retry)["endpoint"])


@pytest.mark.parametrize("outcome", [1, 2, 5])
def test_assign_outcome_faults(
    emu: ColabEmulator, http: httpx.Client, auth: dict[str, str], outcome: int
) -> None:
    emu.faults.fail_next_assign(outcome=outcome)
    posted, _ = assign(http, auth)
    assert posted.status_code == 200 and unxssi(posted) == {"outcome": outcome}


def test_too_many_assignments(emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]) -> None:
    emu.max_assignments = len(emu.runtimes) + 1
    first, _ = assign(http, auth)
    assert first.status_code == 200
    second, _ = assign(http, auth)
    assert second.status_code == 412
    unassign(http, auth, unxssi(first)["endpoint"])


def test_no_entitlement(emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]) -> None:
    posted, _ = assign(http, auth, variant="GPU", accelerator="H100")
    assert posted.status_code == 400
    emu.subscription_tier = "FREE"
    try:
        high_mem, _ = assign(http, auth, shape="hm")
        assert high_mem.status_code == 400
    finally:
        emu.subscription_tier = "PRO"


def test_unavailable_accelerator(
    emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]
) -> None:
    emu.unavailable_accelerators = {"A100"}
    try:
        posted, _ = assign(http, auth, variant="GPU", accelerator="A100")
        assert posted.status_code == 503
        fallback, _ = assign(http, auth, variant="GPU", accelerator="L4")
        assert fallback.status_code == 200
    finally:
        emu.unavailable_accelerators = set()
    unassign(http, auth, unxssi(fallback)["endpoint"])


def test_slow_assign(emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]) -> None:
    emu.faults.assign_delay = 0.5
    started = time.monotonic()
    posted, _ = assign(http, auth)
    assert posted.status_code == 200 and time.monotonic() - started >= 0.5
    unassign(http, auth, unxssi(posted)["endpoint"])


def test_enum_spellings_across_apis(
    emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]
) -> None:
    posted, _ = assign(
        http, auth, variant="TPU", accelerator="V5E1", runtime_version_label="2026.04"
    )
    tpu = unxssi(posted)
    posted, _ = assign(http, auth, variant="GPU", accelerator="T4", shape="hm")
    gpu = unxssi(posted)
    assert (tpu["variant"], tpu["machineShape"], gpu["variant"], gpu["machineShape"]) == (
        2,
        0,
        1,
        1,
    )
    gapi = {
        a["endpoint"]: a for a in unxssi(http.get("/v1/assignments", headers=auth))["assignments"]
    }
    assert gapi[tpu["endpoint"]]["variant"] == "VARIANT_TPU"
    assert gapi[tpu["endpoint"]]["runtimeVersionLabel"] == "2026.04"
    assert gapi[gpu["endpoint"]]["machineShape"] == "SHAPE_HIGH_MEM"
    assert gapi[gpu["endpoint"]]["runtimeProxyInfo"]["tokenTtl"] == "3600s"
    tun = unxssi(http.get("/tun/m/assignments", params={"authuser": "0"}, headers=auth))
    tun_by = {a["endpoint"]: a for a in tun["assignments"]}
    assert tun_by[gpu["endpoint"]]["variant"] == 1
    assert tun_by[gpu["endpoint"]]["runtimeProxyInfo"]["tokenExpiresInSeconds"] == 3600
    public = {
        r["connectionInfo"]["endpoint"]: r
        for r in http.get("/v1beta/runtimes", headers=auth).json()["runtimes"]
    }
    assert public[gpu["endpoint"]]["runtimeSpec"] == {
        "variant": "VARIANT_GPU",
        "accelerator": "T4",
        "shape": "SHAPE_HIGHMEM",
    }
    user = unxssi(http.get("/v1/user-info", headers=auth))
    assert user["subscriptionTier"] == "SUBSCRIPTION_TIER_PRO"
    assert {"variant": "VARIANT_GPU", "models": ["T4", "L4", "A100"]} in user[
        "eligibleAccelerators"
    ]
    unassign(http, auth, tpu["endpoint"])
    unassign(http, auth, gpu["endpoint"])


def test_list_keepalive_unassign(
    emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]
) -> None:
    posted, _ = assign(http, auth)
    endpoint = unxssi(posted)["endpoint"]
    listed = unxssi(http.get("/v1/assignments", headers=auth))["assignments"]
    assert endpoint in [a["endpoint"] for a in listed]
    path = f"/tun/m/{endpoint}/keep-alive/"
    assert http.get(path, params={"authuser": "0"}, headers=auth).status_code == 400
    tunnel = {**auth, "X-Colab-Tunnel": "Google"}
    assert http.get(path, params={"authuser": "0"}, headers=tunnel).status_code == 200
    assert emu.keepalive_count(endpoint) == 1
    unassign(http, auth, endpoint)
    listed = unxssi(http.get("/v1/assignments", headers=auth)).get("assignments", [])
    assert endpoint not in [a["endpoint"] for a in listed]
    assert http.get(path, params={"authuser": "0"}, headers=tunnel).status_code == 404


def test_keepalive_hang(emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]) -> None:
    posted, _ = assign(http, auth)
    endpoint = unxssi(posted)["endpoint"]
    emu.faults.hang_keepalive(2)
    tunnel = {**auth, "X-Colab-Tunnel": "Google"}
    path = f"/tun/m/{endpoint}/keep-alive/"
    with pytest.raises(httpx.ReadTimeout):
        http.get(path, params={"authuser": "0"}, headers=tunnel, timeout=0.5)
    assert emu.keepalive_count(endpoint) == 1  # the ping arrived and counted as activity
    assert http.get(path, params={"authuser": "0"}, headers=tunnel).status_code == 200
    unassign(http, auth, endpoint)


def test_idle_reclaim(
    clocked: ColabEmulator,
    clock: ManualClock,
    clocked_http: httpx.Client,
    clocked_auth: dict[str, str],
) -> None:
    posted, _ = assign(clocked_http, clocked_auth)
    body = unxssi(posted)
    rt = clocked.runtime(body["endpoint"])
    rt.idle_timeout = 0.5
    clock.advance(0.4)
    clocked.tick()
    assert not rt.released
    clock.advance(0.2)
    clocked.tick()
    assert rt.released and rt.release_reason == "idle"
    info = body["runtimeProxyInfo"]
    gone = httpx.get(
        info["url"] + "/api/kernels", headers={"X-Colab-Runtime-Proxy-Token": info["token"]}
    )
    assert gone.status_code == 404


def test_activity_counts_as_liveness(
    clocked: ColabEmulator,
    clock: ManualClock,
    clocked_http: httpx.Client,
    clocked_auth: dict[str, str],
) -> None:
    posted, _ = assign(clocked_http, clocked_auth)
    body = unxssi(posted)
    rt = clocked.runtime(body["endpoint"])
    rt.idle_timeout = 1.0
    clocked.activity_counts_as_liveness = True
    header = {"X-Colab-Runtime-Proxy-Token": body["runtimeProxyInfo"]["token"]}
    for _ in range(8):  # proxied traffic keeps it alive
        url = body["runtimeProxyInfo"]["url"] + "/api/colab/resources"
        assert httpx.get(url, headers=header).status_code == 200
        clock.advance(0.25)
        clocked.tick()
    assert not rt.released
    clock.advance(1.1)  # and without traffic it goes
    clocked.tick()
    assert rt.released and rt.release_reason == "idle"


def test_5xx_burst_on_a_path(emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]) -> None:
    emu.faults.fail_next("/v1/user-info", 503, times=2)
    codes = [http.get("/v1/user-info", headers=auth).status_code for _ in range(3)]
    assert codes == [503, 503, 200]


def test_credentials_propagation(
    emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]
) -> None:
    posted, _ = assign(http, auth)
    endpoint = unxssi(posted)["endpoint"]
    path = f"/tun/m/credentials-propagation/{endpoint}"

    def propagate(dryrun: bool) -> dict[str, Any]:
        query = {
            "authtype": "dfs_ephemeral",
            "version": "2",
            "dryrun": str(dryrun).lower(),
            "propagate": "true",
            "record": "false",
            "authuser": "0",
        }
        xsrf = unxssi(http.get(path, params=query, headers=auth))["token"]
        response = http.post(path, params=query, headers={**auth, "X-Goog-Colab-Token": xsrf})
        assert response.status_code == 200
        result: dict[str, Any] = unxssi(response)
        return result

    first = propagate(True)
    assert first["success"] is False
    assert http.get(first["unauthorized_redirect_uri"]).status_code == 200
    assert propagate(True) == {"success": True}
    assert propagate(False) == {"success": True}
    assert (emu.user_email, endpoint, "dfs_ephemeral") in emu.propagations
    unassign(http, auth, endpoint)


def test_experiment_state_and_ccu(http: httpx.Client, auth: dict[str, str]) -> None:
    signed_out = unxssi(http.get("/vscode/experiment-state", params={"authuser": "0"}))
    assert signed_out["experiments"]["runtime_version_names"] == ["2026.07", "2026.04", "2025.07"]
    ccu = unxssi(http.get("/tun/m/ccu-info", params={"authuser": "0"}, headers=auth))
    assert {"currentBalance", "consumptionRateHourly", "assignmentsCount"} <= set(ccu)
    info = unxssi(http.get("/v1/user-info?get_ccu_consumption_info=true", headers=auth))
    assert isinstance(info["freeCcuQuotaInfo"]["remainingTokens"], str)


# --- public API -------------------------------------------------------------------------------


def test_public_api_runtime_lifecycle(
    emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]
) -> None:
    specs = http.get("/v1beta/runtimespecs", headers=auth).json()["runtimeSpecs"]
    assert {"key": {"variant": "VARIANT_CPU", "accelerator": "NONE", "shape": "SHAPE_STANDARD"},
            "eligible": True} in specs  # fmt: skip
    body = {
        "runtimeSpec": {"variant": "VARIANT_GPU", "accelerator": "T4", "shape": "SHAPE_STANDARD"}
    }
    request_id = {"requestId": str(uuid.uuid4())}
    created = http.post("/v1beta/runtimes", params=request_id, json=body, headers=auth)
    same = http.post("/v1beta/runtimes", params=request_id, json=body, headers=auth)
    assert same.json()["name"] == created.json()["name"]  # requestId is an idempotency key
    assert created.status_code == 200 and not created.text.startswith(XSSI)
    op = created.json()
    assert op["done"] is False and op["metadata"]["runtime"].startswith("runtimes/")
    op_id = op["name"].removeprefix("operations/")
    waited = http.get(f"/v1/operations/{op_id}:wait", params={"timeout": "200s"}, headers=auth)
    result = waited.json()
    assert result["done"] is True and "error" not in result
    runtime = result["response"]
    assert set(runtime["connectionInfo"]) == {"endpoint", "url", "token", "expireTime"}
    runtime_id = runtime["name"].removeprefix("runtimes/")
    got = http.get(f"/v1beta/runtimes/{runtime_id}", headers=auth).json()
    assert got["connectionInfo"]["endpoint"] == runtime["connectionInfo"]["endpoint"]
    assert http.get(f"/v1/operations/{op_id}", headers=auth).json()["done"] is True
    assert http.delete(f"/v1beta/runtimes/{runtime_id}", headers=auth).json() == {}
    assert http.get(f"/v1beta/runtimes/{runtime_id}", headers=auth).status_code == 404


def test_public_api_create_failures(
    emu: ColabEmulator, http: httpx.Client, auth: dict[str, str]
) -> None:
    body = {
        "runtimeSpec": {"variant": "VARIANT_GPU", "accelerator": "A100", "shape": "SHAPE_STANDARD"}
    }
    emu.faults.fail_next_assign(503)
    op = http.post("/v1beta/runtimes", json=body, headers=auth).json()
    op_id = op["name"].removeprefix("operations/")
    result = http.get(f"/v1/operations/{op_id}:wait", params={"timeout": "200s"}, headers=auth)
    error = result.json()["error"]
    assert error["code"] == 9 and error["details"][0]["reason"] == "NO_RUNTIMES"
    emu.create_runtime_delay = 0
    try:
        first = http.post("/v1beta/runtimes", params={"runtimeId": "mine"}, json=body, headers=auth)
        assert first.json()["done"] is True
        clash = http.post("/v1beta/runtimes", params={"runtimeId": "mine"}, json=body, headers=auth)
        assert clash.json()["error"]["code"] == 6
    finally:
        emu.create_runtime_delay = 0.3
    assert http.delete("/v1beta/runtimes/mine", headers=auth).status_code == 200


# --- the runtime proxy ------------------------------------------------------------------------


def test_proxy_rest_and_token_forms(emu: ColabEmulator, runtime: dict[str, Any]) -> None:
    info = runtime["runtimeProxyInfo"]
    header = {"X-Colab-Runtime-Proxy-Token": info["token"]}
    kernels = httpx.get(info["url"] + "/api/kernels", headers=header)
    assert kernels.status_code == 200
    assert runtime["kernel_id"] in [k["id"] for k in kernels.json()]
    by_query = httpx.get(
        info["url"] + "/api/kernels", params={"colab-runtime-proxy-token": info["token"]}
    )
    assert by_query.status_code == 200
    assert httpx.get(info["url"] + "//api//kernels", headers=header).status_code == 200
    assert httpx.get(info["url"] + "/api/kernels").status_code == 401
    wrong = {"X-Colab-Runtime-Proxy-Token": "nope"}
    assert httpx.get(info["url"] + "/api/kernels", headers=wrong).status_code == 401
    resources = httpx.get(info["url"] + "/api/colab/resources", headers=header)
    assert unxssi(resources)["gpus"][0]["name"]
    emu.faults.fail_next("/api/kernels", 502)
    assert httpx.get(info["url"] + "/api/kernels", headers=header).status_code == 502
    assert httpx.get(info["url"] + "/api/kernels", headers=header).status_code == 200


def test_proxy_contents_root_is_content(runtime: dict[str, Any]) -> None:
    """Contents paths are relative to ``/``; the runtime's files live under ``content/``."""
    info = runtime["runtimeProxyInfo"]
    header = {"X-Colab-Runtime-Proxy-Token": info["token"]}
    data = base64.b64encode(b"hello").decode()
    put = httpx.put(
        info["url"] + "/api/contents/content/hello.txt",
        json={"content": data, "format": "base64", "type": "file"},
        headers=header,
    )
    assert put.status_code in (200, 201), put.text
    assert put.json()["path"] == "content/hello.txt"
    got = httpx.get(
        info["url"] + "/api/contents/%2Fcontent%2Fhello.txt",
        params={"format": "base64", "type": "file"},
        headers=header,
    )
    assert got.status_code == 200 and base64.b64decode(got.json()["content"]) == b"hello"
    listing = httpx.get(info["url"] + "/api/contents/content", headers=header).json()
    assert "content/hello.txt" in [c["path"] for c in listing["content"]]
    deleted = httpx.delete(info["url"] + "/api/contents/content/hello.txt", headers=header)
    assert deleted.status_code == 204


def test_proxy_kernel_websocket(runtime: dict[str, Any]) -> None:
    info = runtime["runtimeProxyInfo"]
    headers = {"X-Colab-Runtime-Proxy-Token": info["token"], "X-Colab-Client-Agent": "vscode"}
    messages, subprotocol = asyncio.run(
        run_cell(
            ws_url(runtime, "s"),
            headers,
            "print(1+1)",
            subprotocols=["v1.kernel.websocket.jupyter.org"],
        )
    )
    assert subprotocol is None  # legacy protocol only, as Colab
    assert stdout(messages) == "2\n"


def test_proxy_passes_binary_frames(runtime: dict[str, Any]) -> None:
    """A binary-framed message (Jupyter's legacy buffer layout) reaches the kernel."""
    headers = {"X-Colab-Runtime-Proxy-Token": runtime["runtimeProxyInfo"]["token"]}
    request = execute_request("print(6*7)", "b")
    request.pop("buffers")
    payload = json.dumps(request).encode()
    frame = struct.pack("!iI", 1, 8) + payload

    async def scenario() -> str:
        out = ""
        async with websockets.connect(ws_url(runtime, "b"), additional_headers=headers) as ws:
            await ws.send(frame)
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if message["parent_header"].get("msg_id") != request["header"]["msg_id"]:
                    continue
                if message["header"]["msg_type"] == "stream":
                    out += message["content"]["text"]
                if message["header"]["msg_type"] == "status" and (
                    message["content"]["execution_state"] == "idle"
                ):
                    return out

    assert asyncio.run(scenario()) == "42\n"


def test_proxy_websocket_refused_without_token(runtime: dict[str, Any]) -> None:
    async def connect() -> None:
        async with websockets.connect(ws_url(runtime, "s")):
            pass

    with pytest.raises(websockets.InvalidStatus) as info:
        asyncio.run(connect())
    assert info.value.response.status_code == 401


@pytest.mark.slow
def test_proxy_expired_token_and_refresh(
    clocked: ColabEmulator,
    clock: ManualClock,
    clocked_http: httpx.Client,
    clocked_auth: dict[str, str],
) -> None:
    emu, http, auth = clocked, clocked_http, clocked_auth
    posted, _ = assign(http, auth)
    info = unxssi(posted)["runtimeProxyInfo"]
    endpoint = unxssi(posted)["endpoint"]
    emu.proxy_token_ttl = 0.3
    short = unxssi(
        http.get(
            "/v1/runtime-proxy-token", params={"endpoint": endpoint, "port": "8080"}, headers=auth
        )
    )
    assert short["tokenTtl"] == "0.3s" and short["url"] == info["url"]
    header = {"X-Colab-Runtime-Proxy-Token": short["token"]}
    assert httpx.get(info["url"] + "/api/kernels", headers=header, timeout=60).status_code == 200
    clock.advance(0.5)
    assert httpx.get(info["url"] + "/api/kernels", headers=header).status_code == 404
    emu.proxy_token_ttl = 3600
    fresh = unxssi(
        http.get(
            "/v1/runtime-proxy-token", params={"endpoint": endpoint, "port": "8080"}, headers=auth
        )
    )
    header = {"X-Colab-Runtime-Proxy-Token": fresh["token"]}
    assert httpx.get(info["url"] + "/api/kernels", headers=header).status_code == 200
    # Listing assignments issues new tokens too; expire everything, then take one from the list.
    emu.expire_proxy_tokens(endpoint)
    assert httpx.get(info["url"] + "/api/kernels", headers=header).status_code == 404
    listed = unxssi(http.get("/tun/m/assignments", params={"authuser": "0"}, headers=auth))
    entry = next(a for a in listed["assignments"] if a["endpoint"] == endpoint)
    header = {"X-Colab-Runtime-Proxy-Token": entry["runtimeProxyInfo"]["token"]}
    assert httpx.get(info["url"] + "/api/kernels", headers=header).status_code == 200
    unassign(http, auth, endpoint)


def test_drop_websockets(emu: ColabEmulator, runtime: dict[str, Any]) -> None:
    headers = {"X-Colab-Runtime-Proxy-Token": runtime["runtimeProxyInfo"]["token"]}

    async def scenario() -> int:
        async with websockets.connect(ws_url(runtime, "d"), additional_headers=headers) as ws:
            # A reply through the relay means the proxy has taken the socket on.
            request = execute_request("", "d")
            request["header"]["msg_type"] = "kernel_info_request"
            request["content"] = {}
            await ws.send(json.dumps(request))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if reply["header"]["msg_type"] == "kernel_info_reply":
                    break
            dropped = await asyncio.get_running_loop().run_in_executor(None, emu.drop_websockets)
            with pytest.raises(websockets.ConnectionClosed):
                while True:  # messages already in flight may still arrive first
                    await asyncio.wait_for(ws.recv(), 10)
            return dropped

    assert asyncio.run(scenario()) >= 1


def test_drive_mount_colab_request(runtime: dict[str, Any]) -> None:
    headers = {"X-Colab-Runtime-Proxy-Token": runtime["runtimeProxyInfo"]["token"]}
    code = "from google.colab import drive\ndrive.mount('/content/drive')"
    messages, _ = asyncio.run(run_cell(ws_url(runtime, "m"), headers, code, colab_reply={}))
    request = next(m for m in messages if m["header"]["msg_type"] == "colab_request")
    assert request["channel"] == "iopub"
    assert request["metadata"]["colab_request_type"] == "request_auth"
    assert isinstance(request["metadata"]["colab_msg_id"], int)
    assert request["content"] == {"request": {"authType": "dfs_ephemeral"}}
    assert set(request["parent_header"]) == {"session"}
    assert "Mounted at /content/drive" in stdout(messages)
    failed, _ = asyncio.run(
        run_cell(ws_url(runtime, "m"), headers, code, colab_reply={"error": "user said no"})
    )
    errors = [m for m in failed if m["header"]["msg_type"] == "error"]
    assert errors and errors[0]["content"]["evalue"] == "user said no"


# --- the request log --------------------------------------------------------------------------


def test_request_log_has_no_secrets(emu: ColabEmulator, token: str) -> None:
    records = emu.requests
    assert any(r.path == "/tun/m/assign" and r.method == "POST" for r in records)
    assert any(r.server.startswith("proxy:") for r in records)
    keepalive = [r for r in records if r.path.endswith("/keep-alive/") and r.status == 200]
    assert keepalive and keepalive[0].header("X-Colab-Tunnel") == "Google"
    text = repr(records) + repr(emu) + repr(emu.runtimes) + repr(emu.faults)
    assert token not in text and emu.client_secret not in text
    for rt in emu.runtimes:
        for proxy_token in rt.proxy_tokens:
            assert proxy_token not in text
    assert "<redacted>" in text


def test_server_logs_have_no_secrets(
    emu: ColabEmulator,
    http: httpx.Client,
    token: str,
    runtime: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    proxy_token = runtime["runtimeProxyInfo"]["token"]
    url = runtime["runtimeProxyInfo"]["url"]
    assert httpx.get(url + "/api/kernels", params={"colab-runtime-proxy-token": proxy_token})
    emu.expire_proxy_tokens(runtime["endpoint"])
    expired = httpx.get(url + "/api/kernels", params={"colab-runtime-proxy-token": proxy_token})
    assert expired.status_code == 404
    assert http.get("/tokeninfo", params={"access_token": token}).status_code == 200
    assert http.get("/tokeninfo", params={"access_token": token + "x"}).status_code == 400
    server_logs = [
        r.getMessage() + str(r.exc_info or "")
        for r in caplog.records
        if r.name.startswith(("tornado", "colabremote"))  # not the client's (httpx) own log
    ]
    assert server_logs  # tornado's access log did run
    assert not [line for line in server_logs if proxy_token in line or token in line]
    auth = {"Authorization": f"Bearer {token}"}
    query = {"endpoint": runtime["endpoint"], "port": "8080"}
    fresh = unxssi(http.get("/v1/runtime-proxy-token", params=query, headers=auth))
    runtime["runtimeProxyInfo"] = {**runtime["runtimeProxyInfo"], "token": fresh["token"]}


def test_proxy_and_handler_logs_have_no_secrets_after_websocket_traffic(
    emu: ColabEmulator,
    http: httpx.Client,
    token: str,
    runtime: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Tokens in query strings, on the proxy's WebSocket path and on the main origin, reach no
    log line: not tornado's access log, not its error log for a request that fails to decode (a
    malformed token argument is quoted there by default), not a 404 for an unknown path."""
    caplog.set_level(logging.DEBUG)
    proxy_token = runtime["runtimeProxyInfo"]["token"]
    by_query = (
        ws_url(runtime, "q")
        + "&"
        + urllib.parse.urlencode({"colab-runtime-proxy-token": proxy_token})
    )
    messages, _ = asyncio.run(run_cell(by_query, {}, "print('via query')"))
    assert stdout(messages) == "via query\n"

    async def connect(url: str) -> None:
        async with websockets.connect(url):
            pass

    malformed = ws_url(runtime, "u") + f"&colab-runtime-proxy-token={proxy_token}%FF"
    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(connect(malformed))
    assert refused.value.response.status_code == 400
    assert http.get(f"/tokeninfo?access_token={token}%FF").status_code == 400
    assert http.get("/no/such/path", params={"access_token": token}).status_code == 404
    emu.tick()  # tornado logs a request just after its reply leaves: wait for the loop
    server_logs = [
        r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
        for r in caplog.records
        if r.name.startswith(("tornado", "colabremote"))
    ]
    assert any("400 GET /api/kernels/" in line for line in server_logs)  # the path did run
    assert any("404 GET /no/such/path" in line for line in server_logs)
    assert not [line for line in server_logs if proxy_token in line or token in line]
    records = emu.requests
    assert any(r.path == "/no/such/path" and r.status == 404 for r in records)
    assert token not in repr(records) and proxy_token not in repr(records)


def test_no_secret_on_a_command_line(emu: ColabEmulator, runtime: dict[str, Any]) -> None:
    """The runtimes' jupyter_servers got their tokens without argv, which every local user can
    read in /proc/<pid>/cmdline."""
    secrets_now = emu.issued_secrets()
    assert any(rt.jupyter_token in secrets_now for rt in emu.runtimes if rt.jupyter_token)
    leaks = [pid for pid, cmdline in command_lines() if any(s in cmdline for s in secrets_now)]
    assert leaks == []


def command_lines() -> list[tuple[str, str]]:
    """(pid, command line) of every process this user can see."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found.append((entry, f.read().replace(b"\0", b" ").decode(errors="replace")))
            except OSError:  # the process ended while we looked
                continue
    return found
