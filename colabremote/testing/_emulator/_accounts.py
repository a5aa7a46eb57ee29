"""Google sign-in state: the registered OAuth client, users, codes, access and refresh tokens.

The OAuth handlers change it; every other role only asks it whether a bearer token is valid.
Expiry reads the emulator's clock.
"""

from __future__ import annotations

import secrets

from ._clock import Clock
from ._model import AccessToken, AuthCode, OAuthClient, RefreshToken, User, new_secret


class Accounts:
    """Who may sign in, and every credential handed out so far (all on the emulator's loop)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.client = OAuthClient(
            f"{secrets.token_hex(6)}-emu.apps.googleusercontent.com", new_secret("GOCSPX-emu-")
        )
        self.clients: dict[str, OAuthClient] = {self.client.client_id: self.client}
        self.users: dict[str, User] = {}
        self.codes: dict[str, AuthCode] = {}
        #: Codes already exchanged, kept so that :meth:`secrets` still knows them.
        self.spent_codes: set[str] = set()
        self.access_tokens: dict[str, AccessToken] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        #: Scopes a user has granted a client, for ``include_granted_scopes``.
        self.granted: dict[tuple[str, str], frozenset[str]] = {}

    def user(self, email: str, name: str) -> User:
        """The user with this e-mail, made on first sight with ``name``."""
        if email not in self.users:
            self.users[email] = User(email, name)
        return self.users[email]

    def mint(
        self,
        email: str,
        client_id: str,
        scopes: frozenset[str],
        refresh: RefreshToken | None,
        ttl: float,
    ) -> AccessToken:
        """A new access token, valid for ``ttl`` seconds from now."""
        token = AccessToken(
            token=new_secret("ya29.emu-", 32),
            email=email,
            client_id=client_id,
            scopes=scopes,
            expires=self.clock.time() + ttl,
            refresh_token=refresh.token if refresh is not None else None,
        )
        self.access_tokens[token.token] = token
        return token

    def redeem(self, value: str) -> AuthCode | None:
        """The authorization code ``value`` names, taken out of use (codes are single-use)."""
        code = self.codes.pop(value, None)
        if code is not None:
            self.spent_codes.add(value)
        return code

    def secrets(self) -> set[str]:
        """Every credential issued so far: client secrets, authorization codes, access and
        refresh tokens (revoked, expired and spent ones included)."""
        found = {client.client_secret for client in self.clients.values()}
        found.update(self.codes, self.spent_codes, self.access_tokens, self.refresh_tokens)
        return found

    def valid_token(self, value: str) -> AccessToken | None:
        """The access token ``value`` names, if it is neither revoked nor expired now."""
        token = self.access_tokens.get(value)
        if token is None or not token.valid_at(self.clock.time()):
            return None
        return token

    def revoke(self, value: str) -> bool:
        """Revoke an access or refresh token (a refresh token takes its access tokens along,
        and an access token its refresh token); False when ``value`` names neither."""
        refresh = self.refresh_tokens.get(value)
        access = self.access_tokens.get(value)
        if refresh is not None:
            refresh.revoked = True
            for token in self.access_tokens.values():
                if token.refresh_token == value:
                    token.revoked = True
            return True
        if access is not None and not access.revoked:
            access.revoked = True
            if access.refresh_token is not None:
                self.revoke(access.refresh_token)
            return True
        return False

    def revoke_access_tokens(self) -> None:
        """Every access token so far stops working; refresh tokens still do."""
        for token in self.access_tokens.values():
            token.revoked = True
