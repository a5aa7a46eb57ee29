"""The emulator's state: users' tokens, runtimes, fault switches and the request log.

Everything here is plain data. Secret values sit in fields with ``repr=False`` so that no repr
(and therefore no log line or assertion message) shows them.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._proxy import RuntimeProxy

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

VARIANTS = ("DEFAULT", "GPU", "TPU")
HIGH_MEM_ONLY = frozenset({"L4", "V28", "V5E1", "V6E1"})
TIERS = ("FREE", "PRO", "PRO_PLUS")

# The secret-bearing names redacted from the request log.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "x-goog-colab-token",
        "x-colab-runtime-proxy-token",
        "cookie",
        "set-cookie",
    }
)
SECRET_PARAMS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "colab-runtime-proxy-token",
        "code",
        "code_verifier",
        "client_secret",
        "id_token",
    }
)
REDACTED = "<redacted>"


LOG = logging.getLogger("colabremote.emulator")


def log_uncaught(summary: str, error: BaseException | None) -> None:
    """Log a handler's uncaught exception by its summary only (never the query or headers)."""
    LOG.error("uncaught exception in %s: %r", summary, error, exc_info=error)


class RedactedLogs:
    """For tornado handlers: log an uncaught exception by the request's summary only.

    tornado's own ``log_exception`` also logs ``repr(request)``, whose URI may carry tokens.
    """

    def _request_summary(self) -> str:
        request: Any = getattr(self, "request", None)
        return f"{getattr(request, 'method', '?')} {getattr(request, 'path', '?')}"

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        import tornado.web

        if not isinstance(value, tornado.web.HTTPError):
            log_uncaught(self._request_summary(), value)


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

    @property
    def valid(self) -> bool:
        return not self.revoked and time.time() < self.expires


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
    proxy: RuntimeProxy | None = field(default=None, repr=False)
    proxy_tokens: dict[str, float] = field(default_factory=dict, repr=False)
    released: bool = False
    release_reason: str = ""
    idle_timeout: float | None = None  # overrides the emulator's idle_timeout for this runtime

    @property
    def variant_int(self) -> int:
        return VARIANTS.index(self.variant)

    @property
    def url(self) -> str:
        return self.proxy.url if self.proxy is not None else ""

    def issue_proxy_token(self, ttl: float) -> tuple[str, float]:
        token = new_secret("emu-rt-")
        self.proxy_tokens[token] = time.time() + ttl
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
    done_at: float | None  # when it completes (None: waits for the runtime to be built)
    done: bool = False
    error: dict[str, Any] | None = None
    runtime: Runtime | None = field(default=None, repr=False)
    event: threading.Event = field(default_factory=threading.Event, repr=False)


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


def redact_headers(headers: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.get_all():
        out[name] = REDACTED if name.lower() in SECRET_HEADERS else value
    return out


def redact_query(arguments: dict[str, list[bytes]]) -> dict[str, list[str]]:
    return {
        name: [REDACTED if name in SECRET_PARAMS else v.decode(errors="replace") for v in values]
        for name, values in arguments.items()
    }


@dataclass
class AssignFault:
    status: int | None  # an HTTP status to answer, or None
    outcome: int | None  # an assign outcome (HTTP 200) to answer, or None


class Faults:
    """Switches for the failures the real service shows. Change them at any time from a test.

    - ``fail_next_assign(status=412|503|400|5xx)`` or ``fail_next_assign(outcome=1|2|5)``: the
      next assign POSTs (and v1beta CreateRuntime calls, mapped to operation errors) fail that way.
    - ``assign_delay``: seconds an assign POST takes. The assignment is committed *before* the
      wait, so a client that times out finds it with a same-``nbh`` GET (as the live service).
    - ``hang_keepalive(seconds, times=1)``: the next keep-alive pings are recorded as activity and
      then answered only after ``seconds`` (longer than the client's time-out, as the live TFE).
    - ``fail_next(path, status=503, times=1)``: the next ``times`` requests whose path equals
      ``path`` (or starts with it, when it ends with ``*``) get ``status``. Works on the control
      plane and on runtime proxies.
    - ``refresh_invalid_grant``: number of refresh-token grants to refuse with ``invalid_grant``.
    - ``deny_next_authorization``: number of authorization requests answered ``access_denied``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assign: deque[AssignFault] = deque()
        self._hangs: deque[float] = deque()
        self._paths: list[list[Any]] = []  # [path, status, remaining]
        self.assign_delay: float = 0.0
        self.refresh_invalid_grant: int = 0
        self.deny_next_authorization: int = 0

    def fail_next_assign(
        self, status: int | None = None, *, outcome: int | None = None, times: int = 1
    ) -> None:
        if (status is None) == (outcome is None):
            raise ValueError("give exactly one of status and outcome")
        with self._lock:
            self._assign.extend(AssignFault(status, outcome) for _ in range(times))

    def hang_keepalive(self, seconds: float, times: int = 1) -> None:
        with self._lock:
            self._hangs.extend([seconds] * times)

    def fail_next(self, path: str, status: int = 503, times: int = 1) -> None:
        with self._lock:
            self._paths.append([path, status, times])

    def clear(self) -> None:
        """Turn every switch off."""
        with self._lock:
            self._assign.clear()
            self._hangs.clear()
            self._paths.clear()
        self.assign_delay = 0.0
        self.refresh_invalid_grant = 0
        self.deny_next_authorization = 0

    # Used by the handlers.

    def take_assign(self) -> AssignFault | None:
        with self._lock:
            return self._assign.popleft() if self._assign else None

    def take_hang(self) -> float:
        with self._lock:
            return self._hangs.popleft() if self._hangs else 0.0

    def take_path(self, path: str) -> int | None:
        with self._lock:
            for entry in self._paths:
                pattern, status, remaining = entry
                matches = (
                    path.startswith(pattern[:-1]) if pattern.endswith("*") else path == pattern
                )
                if matches and remaining > 0:
                    entry[2] = remaining - 1
                    if entry[2] == 0:
                        self._paths.remove(entry)
                    return int(status)
        return None
