"""What every handler of the main origin shares: request logging, fault injection, JSON replies
(XSSI-prefixed on the v1 roles), Google-style errors and bearer-token checks."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any, NoReturn

import tornado.web

from .._model import COLAB_READONLY_SCOPE, COLAB_SCOPE, XSSI_PREFIX, AccessToken, Runtime
from .._redact import RedactedLogs, redact_headers, redact_query

if TYPE_CHECKING:
    from .. import ColabEmulator

# google.rpc.Code names for the HTTP statuses the emulator answers with.
_GRPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class HTTPRefusal(Exception):
    """Raised inside a handler to answer with a status and body at once."""

    def __init__(self, status: int, body: Any, *, xssi: bool = False) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.xssi = xssi


def duration(seconds: float) -> str:
    """A protobuf Duration in JSON form: ``3600s``, ``2.5s``."""
    return f"{seconds:g}s"


def number(seconds: float) -> int | float:
    """Seconds as the v1 APIs write them: an integer when whole."""
    return int(seconds) if float(seconds).is_integer() else seconds


def rfc3339(epoch: float) -> str:
    """A protobuf Timestamp in JSON form, in UTC with microseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}Z"


class BaseHandler(RedactedLogs, tornado.web.RequestHandler):
    """Logging, fault injection, JSON replies and bearer-token checks."""

    emulator: ColabEmulator
    #: colab, gapi, public or oauth: decides XSSI and the error body form.
    role: str

    def initialize(self, emulator: ColabEmulator) -> None:
        self.emulator = emulator

    def check_xsrf_cookie(self) -> None:
        return None

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> asyncio.Future[None]:
        # Logged before the reply leaves: a client that has its answer finds the request logged.
        if not self._finished:
            self._record_request()
        return super().finish(chunk)

    def _record_request(self) -> None:
        request = self.request
        self.emulator._record(
            "colab",
            request.method or "",
            request.path,
            redact_query(request.query_arguments),
            self.get_status(),
            redact_headers(request.headers),
        )

    async def prepare(self) -> None:
        status = self.emulator.faults.take_path(self.request.path)
        if status is not None:
            self.error(status, "injected fault")

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, HTTPRefusal):
            self._reply(e.status, e.body, xssi=e.xssi)
            return
        super()._handle_request_exception(e)

    def _reply(self, status: int, body: Any, *, xssi: bool) -> None:
        if self._finished:
            return
        self.set_status(status)
        if body is None:
            self.finish()
            return
        self.set_header("Content-Type", "application/json; charset=utf-8")
        text = json.dumps(body)
        self.finish((XSSI_PREFIX if xssi else "") + text)

    @property
    def xssi(self) -> bool:
        """Whether bodies carry the XSSI prefix: on the v1 roles ({COLAB}, {GAPI}) only."""
        return self.role in ("colab", "gapi")

    def send(self, body: Any, status: int = 200) -> None:
        """A JSON reply, XSSI-prefixed on the v1 roles."""
        self._reply(status, body, xssi=self.xssi)

    def error(self, status: int, message: str, reason: str | None = None) -> NoReturn:
        """Refuse with a Google-style JSON error body (raises)."""
        body: dict[str, Any] = {
            "error": {
                "code": status,
                "message": message,
                "status": _GRPC_STATUS.get(status, "UNKNOWN"),
            }
        }
        if reason:
            body["error"]["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "googleapis.com",
                }
            ]
        raise HTTPRefusal(status, body, xssi=self.xssi)

    def bearer(self) -> AccessToken:
        """The request's valid access token, or a 401 refusal."""
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            self.error(401, "Request is missing required authentication credential.")
        token = self.emulator.accounts.valid_token(value.strip())
        if token is None:
            self.error(401, "Request had invalid authentication credentials.")
        return token

    def api_user(self, *, read_only: bool = False) -> AccessToken:
        """Auth for {GAPI} and {PUBLIC}: a valid token with the colaboratory scope (403)."""
        token = self.bearer()
        if self.role == "gapi" and not self.emulator.gapi_allowed:
            self.error(
                403,
                "Caller does not have required permission to use project.",
                reason="USER_PROJECT_DENIED",
            )
        if self.role == "public" and not self.emulator.public_api_allowed:
            self.error(403, "The caller is not allowlisted for this API.", reason="NOT_ALLOWLISTED")
        allowed = {COLAB_SCOPE, COLAB_READONLY_SCOPE} if read_only else {COLAB_SCOPE}
        if not allowed & token.scopes:
            self.insufficient_scopes()
        return token

    def insufficient_scopes(self) -> NoReturn:
        self.error(
            403,
            "Request had insufficient authentication scopes.",
            reason="ACCESS_TOKEN_SCOPE_INSUFFICIENT",
        )

    def single(self, name: str) -> str | None:
        """A query parameter that must appear at most once (400 otherwise)."""
        values = self.get_query_arguments(name)
        if len(values) > 1:
            self.error(400, f"parameter {name} given more than once")
        return values[0] if values else None

    def owned_runtime(self, token: AccessToken, endpoint: str) -> Runtime:
        """The token's user's live runtime at ``endpoint`` (a v1 assignment), or a 404."""
        rt = self.emulator._by_endpoint.get(endpoint)
        if rt is None or rt.released or rt.email != token.email:
            self.error(404, f"no assignment {endpoint}")
        return rt


class NotFoundHandler(BaseHandler):
    """Any path no role serves: a Google-style 404, logged and recorded without its query (in
    place of tornado's own 404 handler, whose access-log line shows the full URI)."""

    role = "public"

    async def prepare(self) -> None:
        await super().prepare()
        self.error(404, f"no such path: {self.request.path}")
