"""HTTP handlers of the emulator's main origin, one module per service role.

The paths of the four roles do not collide, so one server serves them all:

- {COLAB} (``colab.py``): ``/tun/m/...`` and ``/vscode/experiment-state``.
- {GAPI} (``gapi.py``): ``/v1/assignments``, ``/v1/runtime-proxy-token``, ``/v1/user-info``.
- {PUBLIC} (``public_api.py``): ``/v1beta/...`` and ``/v1/operations...``.
- OAuth (``oauth.py``): authorization, token, revocation, userinfo and tokeninfo endpoints.

``common.py`` holds what they share: auth checks, JSON and XSSI, Google-style errors, the request
log and fault injection, and the 404 for every other path. Runtime proxies are separate servers
(``_proxy.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import tornado.web

from . import colab, gapi, oauth, public_api
from .common import NotFoundHandler

if TYPE_CHECKING:
    from .. import ColabEmulator


def routes(emulator: ColabEmulator) -> list[Any]:
    """The tornado routes of every role, each handler bound to ``emulator``."""
    kwargs = {"emulator": emulator}
    return [
        (pattern, handler, kwargs)
        for module in (colab, gapi, public_api, oauth)
        for pattern, handler in module.ROUTES
    ]


def application(emulator: ColabEmulator) -> tornado.web.Application:
    """The main origin: every role's routes, and a 404 of our own for any other path."""
    return tornado.web.Application(
        routes(emulator),
        default_handler_class=NotFoundHandler,
        default_handler_args={"emulator": emulator},
    )


__all__ = ["application", "routes"]
