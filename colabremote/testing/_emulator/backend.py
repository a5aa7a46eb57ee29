"""``Session(backend="emulator")``: the Colab backend pointed at a ColabEmulator started here."""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import unquote

from ..._backends.base import KernelFiles, Progress
from ..._backends.colab import ColabBackend
from ..._colab.auth import ClientConfig, GoogleOAuth, UserCredentials
from ..._colab.endpoints import ColabEndpoints


class _EmulatorSignIn:
    """Credentials from a real loopback sign-in to the emulator, made on first use (when the
    session opens and the emulator runs)."""

    source = "emulator"

    def __init__(self, emulator: Any) -> None:
        self._emulator = emulator
        self._credentials: UserCredentials | None = None

    def __repr__(self) -> str:
        return f"_EmulatorSignIn(credentials={self._credentials!r})"

    async def token(self) -> str:
        if self._credentials is None:
            self._credentials = await self._sign_in()
        return await self._credentials.token()

    def invalidate(self) -> None:
        if self._credentials is not None:
            self._credentials.invalidate()

    async def aclose(self) -> None:
        if self._credentials is not None:
            await self._credentials.aclose()

    async def _sign_in(self) -> UserCredentials:
        emulator = self._emulator
        endpoints = ColabEndpoints.at(emulator.url)
        oauth = GoogleOAuth.for_endpoints(
            endpoints, ClientConfig.from_mapping(emulator.client_config(), source="the emulator")
        )

        def browser(url: str) -> None:
            # Our listener's start page sends it to the emulator, which approves at once and
            # redirects back to the listener. urllib plays the browser, not httpx, which would log
            # the redirect's URL: it carries the code.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with opener.open(url, timeout=30) as page:
                    page.read()
            except urllib.error.HTTPError as error:  # an error page, as a browser would show
                error.close()

        stored = await oauth.login(open_browser=browser, announce=lambda _text: None, save=False)
        return UserCredentials(oauth, stored, owns_oauth=True)


class EmulatorBackend(ColabBackend):
    """The Colab backend against a :class:`~colabremote.testing.ColabEmulator` started here.

    Same code path as a real runtime: sign-in (the emulator approves at once; a loopback OAuth
    flow with PKCE runs for real), assignment, keep-alive, the runtime proxy, release.
    """

    name = "emulator"

    def __init__(self, *, python: str | os.PathLike[str] | None = None, **options: Any) -> None:
        from . import ColabEmulator

        self.emulator = ColabEmulator(python=None if python is None else os.fspath(python))
        self._sign_in = _EmulatorSignIn(self.emulator)
        super().__init__(credentials=self._sign_in, **options)

    async def start(self, progress: Progress) -> None:
        progress("starting a Colab emulator on 127.0.0.1")
        starting = asyncio.ensure_future(asyncio.to_thread(self.emulator.start))
        try:
            await asyncio.shield(starting)
            self.control.endpoints = ColabEndpoints.at(self.emulator.url)
            self.public.endpoints = self.control.endpoints
            await super().start(progress)
        except BaseException:
            # Interrupted while the emulator starts in its thread: stop it once it has started.
            with contextlib.suppress(BaseException):
                await starting
            self.emulator.stop()
            raise

    async def kernel_file_path(self, remote: str, kernel: KernelFiles) -> str | None:
        """The emulator's proxy serves a runtime's content root (its kernels' working
        directory) as ``/content``, and as the root of its other paths."""
        relative = self._contents_path(remote)[len("/api/contents/") :]
        parts = [unquote(part) for part in relative.split("/")]
        if parts[0] == "content":
            parts = parts[1:]
        return posixpath.join(kernel.cwd, *parts)

    def keep_kernel(self) -> bool:
        """The emulator this backend started ends with the session, and its runtimes too."""
        return False

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            with contextlib.suppress(Exception):
                await self._sign_in.aclose()
            # Not in a worker thread: at interpreter exit the thread pools are already shut.
            self.emulator.stop()
