"""One TLS context per process for the HTTP clients colabremote makes.

Building a context loads the CA bundle, about 20 ms each time; a Colab session makes several
clients (control plane, public API, runtime proxy, sign-in), so they share one. It is exactly the
context httpx would build itself (certifi's bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``), with
one difference: those variables are read once, when the first client is made.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def _shared() -> ssl.SSLContext | bool:
    make = getattr(httpx, "create_ssl_context", None)  # httpx's own builder, where exported
    return make() if make is not None else True


def verify_setting(verify: bool = True) -> ssl.SSLContext | bool:
    """What to pass as an httpx client's ``verify=``: the shared context when verifying."""
    return _shared() if verify is True else verify
