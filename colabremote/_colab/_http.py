"""What every Colab API client shares: an httpx client it may own, ``async with``, and the
error that HTTP failures become."""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar

import httpx

from ..exceptions import ColabError

_Self = TypeVar("_Self", bound="OwnsHttpClient")


class OwnsHttpClient:
    """Closes ``_http`` on :meth:`aclose` (and leaving ``async with``) when it created it."""

    _http: httpx.AsyncClient
    _owns_http: bool

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def colab_error(message: str, status: int | None) -> ColabError:
    """The error an HTTP failure talking to Colab becomes (for ``mapped_errors``)."""
    return ColabError(message, status=status)


def sign_in_again(credentials: Any, needs: str) -> str:
    """What to do when Colab refuses the access token: replace COLABREMOTE_ACCESS_TOKEN when
    the token came from it (signing in again would not help), else sign in again."""
    if getattr(credentials, "source", None) == "environment":
        return (
            "The token is COLABREMOTE_ACCESS_TOKEN's: it is expired or revoked, or lacks "
            f"{needs}. Set a fresh token there, or unset it to use your sign-in."
        )
    return f"Sign in again (`colabremote login`); the token needs {needs}."
