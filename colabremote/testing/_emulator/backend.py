"""``Session(backend="emulator")``: the Colab backend pointed at a ColabEmulator started here."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from ..._backends.base import Progress
from ..._backends.colab import ColabBackend
from ..._colab.auth import invalidate
from ..._colab.endpoints import ColabEndpoints


class EmulatorBackend(ColabBackend):
    """The Colab backend against a :class:`~colabremote.testing.ColabEmulator` started here.

    Same code path as a real runtime: sign-in (the emulator approves at once; a loopback OAuth
    flow with PKCE runs for real), assignment, keep-alive, the runtime proxy, release.
    """

    name = "emulator"

    def __init__(self, **options: Any) -> None:
        from . import ColabEmulator

        self.emulator = ColabEmulator()
        self._credentials: Any = None
        super().__init__(token_provider=self._token, on_auth_error=self._invalidate, **options)

    async def _invalidate(self) -> None:
        invalidate(self._credentials)

    async def _token(self) -> str:
        if self._credentials is None:
            self._credentials = await self._sign_in()
        token: str = await self._credentials.token()
        return token

    async def _sign_in(self) -> Any:
        from ..._colab.auth import ClientConfig, GoogleOAuth, UserCredentials

        emulator = self.emulator
        endpoints = ColabEndpoints.at(emulator.url)
        oauth = GoogleOAuth(
            ClientConfig.from_mapping(emulator.client_config(), source="the emulator"),
            authorize_url=endpoints.oauth_authorize,
            token_url=endpoints.oauth_token,
            revoke_url=endpoints.oauth_revoke,
            userinfo_url=endpoints.userinfo,
        )

        def browser(url: str) -> None:
            # The emulator approves at once and redirects to our loopback listener.
            httpx.get(url, follow_redirects=True, timeout=30)

        stored = await oauth.login(open_browser=browser, announce=lambda _text: None, save=False)
        return UserCredentials(oauth, stored, owns_oauth=True)

    async def start(self, progress: Progress) -> None:
        progress("starting a Colab emulator on 127.0.0.1")
        await asyncio.to_thread(self.emulator.start)
        self.control.endpoints = ColabEndpoints.at(self.emulator.url)
        self.public.endpoints = self.control.endpoints
        try:
            await super().start(progress)
        except BaseException:
            self.emulator.stop()
            raise

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self._credentials is not None:
                with contextlib.suppress(Exception):
                    await self._credentials.aclose()
            # Not in a worker thread: at interpreter exit the thread pools are already shut.
            self.emulator.stop()
