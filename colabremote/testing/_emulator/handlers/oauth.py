"""OAuth handlers: Google's authorization and token endpoints, as an installed app meets them.

``/o/oauth2/v2/auth`` approves at once as the configured test user and redirects with a code
(PKCE checked at the exchange); ``/token`` (code and refresh grants), ``/revoke``,
``/oauth2/v2/userinfo``, ``/tokeninfo``, and ``/oauth/paste`` (the page that shows a code to
paste).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import urllib.parse
from typing import Any, NoReturn

from .._model import KNOWN_SCOPES, AccessToken, AuthCode, RefreshToken, new_secret, normalize_scopes
from .common import BaseHandler, HTTPRefusal

#: How long an authorization code may wait for its exchange.
CODE_TTL = 600.0


def _loopback(uri: str) -> bool:
    parsed = urllib.parse.urlsplit(uri)
    return parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "localhost", "::1")


class OAuthHandler(BaseHandler):
    """OAuth endpoints answer errors in RFC 6749 form (``error``, ``error_description``)."""

    role = "oauth"

    def oauth_error(self, status: int, error: str, description: str) -> NoReturn:
        raise HTTPRefusal(status, {"error": error, "error_description": description})


class AuthorizeHandler(OAuthHandler):
    """Auto-approves as the configured test user and redirects with ``code`` and ``state``."""

    def get(self) -> None:
        emu = self.emulator
        arg = self.get_query_argument
        client = emu.accounts.clients.get(arg("client_id", "") or "")
        redirect_uri = arg("redirect_uri", "") or ""
        if client is None:
            self.oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if not (_loopback(redirect_uri) or redirect_uri == emu.paste_redirect_uri):
            self.oauth_error(400, "redirect_uri_mismatch", "redirect_uri is not registered.")
        params: dict[str, str] = {}
        state = self.get_query_argument("state", None)
        if state is not None:
            params["state"] = state
        scopes = normalize_scopes(arg("scope", "") or "")
        method = arg("code_challenge_method", "") or None
        challenge = arg("code_challenge", "") or None
        if arg("response_type", "") != "code":
            params["error"] = "unsupported_response_type"
        elif not scopes or not scopes <= KNOWN_SCOPES:
            params["error"] = "invalid_scope"
        elif challenge is not None and (method or "plain") not in ("S256", "plain"):
            params["error"] = "invalid_request"
        elif emu.faults.deny_next_authorization > 0:
            emu.faults.deny_next_authorization -= 1
            params["error"] = "access_denied"
        else:
            if arg("include_granted_scopes", "") == "true":
                scopes |= emu.accounts.granted.get((emu.user_email, client.client_id), frozenset())
            emu.accounts.granted[(emu.user_email, client.client_id)] = scopes
            code = new_secret("4/emu-")
            emu.accounts.codes[code] = AuthCode(
                code=code,
                client_id=client.client_id,
                redirect_uri=redirect_uri,
                scopes=scopes,
                email=emu.user_email,
                offline=arg("access_type", "") == "offline",
                challenge=challenge,
                challenge_method=(method or "plain") if challenge else None,
                expires=emu.clock.time() + CODE_TTL,
            )
            params["code"] = code
            params["scope"] = " ".join(sorted(scopes))
            params["authuser"] = "0"
            params["prompt"] = "consent"
        separator = "&" if "?" in redirect_uri else "?"
        self.redirect(redirect_uri + separator + urllib.parse.urlencode(params))


class PasteHandler(OAuthHandler):
    """The paste flow's landing page: shows the code for the user to copy."""

    def get(self) -> None:
        code = self.get_query_argument("code", "") or ""
        error = self.get_query_argument("error", "") or ""
        self.set_header("Content-Type", "text/html; charset=utf-8")
        if error:
            self.finish(f"<p>Sign-in failed: <code>{html.escape(error)}</code></p>")
            return
        self.finish(
            "<p>Copy this code and paste it into the application:</p>"
            f'<textarea id="code" readonly>{html.escape(code)}</textarea>'
        )


class TokenHandler(OAuthHandler):
    def post(self) -> None:
        emu = self.emulator
        form = {k: self.get_body_argument(k, "") or "" for k in self.request.body_arguments}
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        auth = self.request.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            decoded = base64.b64decode(auth[6:]).decode()
            client_id, _, client_secret = decoded.partition(":")
            client_id = urllib.parse.unquote_plus(client_id)
            client_secret = urllib.parse.unquote_plus(client_secret)
        client = emu.accounts.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.client_secret, client_secret):
            self.oauth_error(401, "invalid_client", "Unauthorized")
        grant_type = form.get("grant_type", "")
        if grant_type == "authorization_code":
            self._code_grant(form, client_id)
        elif grant_type == "refresh_token":
            self._refresh_grant(form, client_id)
        else:
            self.oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _code_grant(self, form: dict[str, str], client_id: str) -> None:
        emu = self.emulator
        code = emu.accounts.redeem(form.get("code", ""))
        now = emu.clock.time()
        if code is None or code.client_id != client_id or now > code.expires:
            self.oauth_error(400, "invalid_grant", "Malformed auth code.")
        if form.get("redirect_uri", "") != code.redirect_uri:
            self.oauth_error(400, "redirect_uri_mismatch", "Bad Request")
        if code.challenge is not None:
            verifier = form.get("code_verifier", "")
            if not verifier:
                self.oauth_error(400, "invalid_grant", "Missing code verifier.")
            if code.challenge_method == "S256":
                digest = hashlib.sha256(verifier.encode()).digest()
                computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            else:
                computed = verifier
            if not secrets.compare_digest(computed, code.challenge):
                self.oauth_error(400, "invalid_grant", "Invalid code verifier.")
        refresh = None
        if code.offline:
            refresh = RefreshToken(new_secret("1//emu-"), code.email, client_id, code.scopes)
            emu.accounts.refresh_tokens[refresh.token] = refresh
        access = emu._mint(code.email, client_id, code.scopes, refresh)
        self.send(self._token_body(access, refresh))

    def _refresh_grant(self, form: dict[str, str], client_id: str) -> None:
        emu = self.emulator
        refresh = emu.accounts.refresh_tokens.get(form.get("refresh_token", ""))
        if emu.faults.refresh_invalid_grant > 0:
            emu.faults.refresh_invalid_grant -= 1
            self.oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        if refresh is None or refresh.revoked or refresh.client_id != client_id:
            self.oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        scopes = refresh.scopes
        if form.get("scope"):
            requested = normalize_scopes(form["scope"])
            if not requested <= scopes:
                self.oauth_error(400, "invalid_scope", "Scope not granted.")
            scopes = requested
        access = emu._mint(refresh.email, client_id, scopes, refresh)
        self.send(self._token_body(access, None))

    def _token_body(self, access: AccessToken, refresh: RefreshToken | None) -> dict[str, Any]:
        now = self.emulator.clock.time()
        header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        claims = {
            "iss": self.emulator.url,
            "aud": access.client_id,
            "sub": self.emulator._user(access.email).id,
            "email": access.email,
            "iat": int(now),
            "exp": int(access.expires),
        }
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        body: dict[str, Any] = {
            "access_token": access.token,
            "expires_in": max(1, round(access.expires - now)),
            "scope": " ".join(sorted(access.scopes)),
            "token_type": "Bearer",
            "id_token": f"{header}.{payload}.",
        }
        if refresh is not None:
            body["refresh_token"] = refresh.token
        return body


class RevokeHandler(OAuthHandler):
    """Revokes an access or refresh token (a refresh token takes its access tokens along)."""

    def get(self) -> None:
        self.post()

    def post(self) -> None:
        value = self.get_query_argument("token", "") or self.get_body_argument("token", "") or ""
        if not self.emulator.accounts.revoke(value):
            self.oauth_error(400, "invalid_token", "Token expired or revoked")
        self.send({})


class UserinfoHandler(OAuthHandler):
    def get(self) -> None:
        token = self.bearer()
        self.send(self.emulator._user(token.email).info())


class TokenInfoHandler(OAuthHandler):
    def get(self) -> None:
        value = self.get_query_argument("access_token", "") or ""
        token = self.emulator.accounts.valid_token(value)
        if token is None:
            self.oauth_error(400, "invalid_token", "Invalid Value")
        now = self.emulator.clock.time()
        self.send(
            {
                "aud": token.client_id,
                "azp": token.client_id,
                "email": token.email,
                "email_verified": "true",
                "expires_in": str(max(0, int(token.expires - now))),
                "scope": " ".join(sorted(token.scopes)),
            }
        )


ROUTES: list[tuple[str, type[BaseHandler]]] = [
    (r"/o/oauth2/v2/auth", AuthorizeHandler),
    (r"/o/oauth2/auth", AuthorizeHandler),
    (r"/oauth/paste", PasteHandler),
    (r"/token", TokenHandler),
    (r"/revoke", RevokeHandler),
    (r"/oauth2/v2/userinfo", UserinfoHandler),
    (r"/tokeninfo", TokenInfoHandler),
    (r"/oauth2/v3/tokeninfo", TokenInfoHandler),
]
