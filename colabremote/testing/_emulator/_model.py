"""The emulator's state: users, tokens, runtimes, operations and the request log.

Everything here is plain data. Secret values sit in fields with ``repr=False`` so that no repr
(and therefore no log line or assertion message) shows them. Nothing here reads a clock: times
come in from the emulator's one clock (``_clock.py``), so tests can move it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._ports import PortProxy

COLAB_SCOPE = "https://www.googleapis.com/auth/colaboratory"
COLAB_READONLY_SCOPE = "https://www.googleapis.com/auth/colaboratory.readonly"
EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
PROFILE_SCOPE = "https://www.googleapis.com/auth/userinfo.profile"
DRIVE_FILE_SCOPE = "https://www.googleapis.com/auth/drive.file"
CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

# Short names Google accepts in an authorization request, and the names it reports back.
SCOPE_ALIASES = {"email": EMAIL_SCOPE, "profile": PROFILE_SCOPE}
KNOWN_SCOPES = frozenset(
    {
        "openid",
        COLAB_SCOPE,
        COLAB_READONLY_SCOPE,
        EMAIL_SCOPE,
        PROFILE_SCOPE,
        DRIVE_FILE_SCOPE,
        CLOUD_SCOPE,
    }
)

NBH_PATTERN = re.compile(r"^[a-zA-Z0-9\-_.]{44}$")
RUNTIME_ID_PATTERN = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")

# What Colab's v1 APIs put before a JSON body, against cross-site script inclusion.
XSSI_PREFIX = ")]}'\n"

VARIANTS = ("DEFAULT", "GPU", "TPU")
HIGH_MEM_ONLY = frozenset({"L4", "V28", "V5E1", "V6E1"})


def normalize_scopes(scopes: str | list[str] | tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    """Scope names as Google reports them (``email`` becomes the userinfo.email URL)."""
    items = scopes.split() if isinstance(scopes, str) else list(scopes)
    return frozenset(SCOPE_ALIASES.get(s, s) for s in items if s)


def new_secret(prefix: str, nbytes: int = 24) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


@dataclass
class User:
    email: str
    name: str
    id: str = field(default_factory=lambda: str(secrets.randbelow(10**20)))

    def info(self) -> dict[str, Any]:
        given, _, family = self.name.partition(" ")
        return {
            "id": self.id,
            "email": self.email,
            "verified_email": True,
            "name": self.name,
            "given_name": given,
            "family_name": family,
            "picture": "https://lh3.googleusercontent.com/a/emulator",
        }


@dataclass
class OAuthClient:
    client_id: str
    client_secret: str = field(repr=False)


@dataclass
class AuthCode:
    code: str = field(repr=False)
    client_id: str
    redirect_uri: str
    scopes: frozenset[str]
    email: str
    offline: bool
    challenge: str | None = field(repr=False)
    challenge_method: str | None
    expires: float


@dataclass
class AccessToken:
    token: str = field(repr=False)
    email: str
    client_id: str
    scopes: frozenset[str]
    expires: float
    refresh_token: str | None = field(default=None, repr=False)
    revoked: bool = False

    def valid_at(self, now: float) -> bool:
        """Usable at wall time ``now``: neither revoked nor expired."""
        return not self.revoked and now < self.expires


@dataclass
class RefreshToken:
    token: str = field(repr=False)
    email: str
    client_id: str
    scopes: frozenset[str]
    revoked: bool = False


@dataclass
class Runtime:
    """One assigned VM: a v1 assignment, a v1beta runtime, or both views of the same thing."""

    endpoint: str
    email: str
    runtime_id: str
    nbh: str | None
    variant: str  # DEFAULT, GPU or TPU
    accelerator: str  # NONE for CPU
    high_mem: bool
    version: str
    created: float
    root_dir: str
    last_alive: float
    url: str = ""  # the runtime proxy's address, once it listens
    proxy_tokens: dict[str, float] = field(default_factory=dict, repr=False)
    #: Tokens of the per-port proxies: token -> (port, expiry).
    port_tokens: dict[str, tuple[int, float]] = field(default_factory=dict, repr=False)
    #: The proxies of its other ports, by port, made when a token for one is first asked for.
    port_proxies: dict[int, PortProxy] = field(default_factory=dict, repr=False)
    jupyter_token: str = field(default="", repr=False)  # its jupyter_server's, once started
    released: bool = False
    release_reason: str = ""
    idle_timeout: float | None = None  # overrides the emulator's idle_timeout for this runtime

    @property
    def variant_int(self) -> int:
        return VARIANTS.index(self.variant)

    def issue_proxy_token(self, ttl: float, now: float) -> tuple[str, float]:
        """A new proxy token valid for ``ttl`` seconds from wall time ``now``, and that TTL."""
        token = new_secret("emu-rt-")
        self.proxy_tokens[token] = now + ttl
        return token, ttl

    def issue_port_token(self, port: int, ttl: float, now: float) -> tuple[str, float]:
        """A new token for the proxy of ``port`` only, valid for ``ttl`` seconds, and that TTL."""
        token = new_secret("emu-port-")
        self.port_tokens[token] = (port, now + ttl)
        return token, ttl


@dataclass
class XsrfToken:
    token: str = field(repr=False)
    email: str
    path: str
    expires: float


@dataclass
class Operation:
    """A v1beta CreateRuntime long-running operation."""

    op_id: str
    email: str
    runtime_id: str
    request_id: str | None
    done_at: float  # when it completes, on the clock's monotonic time
    done: bool = False
    error: dict[str, Any] | None = None
    runtime: Runtime | None = field(default=None, repr=False)
    finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the emulator saw it, with every secret replaced by ``<redacted>``."""

    server: str  # "colab" or "proxy:<endpoint>"
    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None
