"""HTTP handlers of the emulator's main origin: {COLAB}, {GAPI}, {PUBLIC} and OAuth paths.

The paths of the four roles do not collide, so one server serves them all:

- {COLAB}: ``/tun/m/...`` and ``/vscode/experiment-state`` (XSSI prefix, ``authuser``, XSRF).
- {GAPI}: ``/v1/assignments``, ``/v1/runtime-proxy-token``, ``/v1/user-info`` (XSSI prefix).
- {PUBLIC}: ``/v1beta/...`` and ``/v1/operations...`` (plain JSON, Google error bodies).
- OAuth: ``/o/oauth2/v2/auth``, ``/token``, ``/revoke``, ``/oauth2/v2/userinfo``,
  ``/tokeninfo``, and ``/oauth/paste`` (the page that shows a code to paste).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import secrets
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, NoReturn

import tornado.web

from ._model import (
    COLAB_READONLY_SCOPE,
    COLAB_SCOPE,
    EMAIL_SCOPE,
    HIGH_MEM_ONLY,
    KNOWN_SCOPES,
    NBH_PATTERN,
    RUNTIME_ID_PATTERN,
    TIERS,
    VARIANTS,
    AccessToken,
    AuthCode,
    Operation,
    RedactedLogs,
    RefreshToken,
    Runtime,
    XsrfToken,
    new_secret,
    normalize_scopes,
    redact_headers,
    redact_query,
)
from ._proxy import XSSI_PREFIX

if TYPE_CHECKING:
    from . import ColabEmulator

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
_GAPI_VARIANT = {"DEFAULT": "VARIANT_UNSPECIFIED", "GPU": "VARIANT_GPU", "TPU": "VARIANT_TPU"}
_PUBLIC_VARIANT = {"DEFAULT": "VARIANT_CPU", "GPU": "VARIANT_GPU", "TPU": "VARIANT_TPU"}
_PUBLIC_VARIANT_IN = {
    "VARIANT_UNSPECIFIED": "DEFAULT",
    "VARIANT_CPU": "DEFAULT",
    "VARIANT_GPU": "GPU",
    "VARIANT_TPU": "TPU",
}
_GAPI_TIER = {
    "FREE": "SUBSCRIPTION_TIER_NONE",
    "PRO": "SUBSCRIPTION_TIER_PRO",
    "PRO_PLUS": "SUBSCRIPTION_TIER_PRO_PLUS",
}
_PUBLIC_TIER = {
    "FREE": "SUBSCRIPTION_TIER_FREE",
    "PRO": "SUBSCRIPTION_TIER_PRO",
    "PRO_PLUS": "SUBSCRIPTION_TIER_PRO_PLUS",
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


def _number(seconds: float) -> int | float:
    return int(seconds) if float(seconds).is_integer() else seconds


def _rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1e6):06d}Z"


class BaseHandler(RedactedLogs, tornado.web.RequestHandler):
    """Logging, fault injection, JSON replies and bearer-token checks."""

    emulator: ColabEmulator
    role = "colab"  # colab, gapi, public or oauth: decides XSSI and the error body form

    def initialize(self, emulator: ColabEmulator) -> None:
        self.emulator = emulator

    def check_xsrf_cookie(self) -> None:
        return None

    def _request_summary(self) -> str:
        # What tornado writes to its logs: no query string, which may hold tokens or codes.
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def on_finish(self) -> None:
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

    def send(self, body: Any, status: int = 200) -> None:
        """A JSON reply, XSSI-prefixed on the v1 roles ({COLAB}, {GAPI})."""
        self._reply(status, body, xssi=self.role in ("colab", "gapi"))

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
        raise HTTPRefusal(status, body, xssi=self.role in ("colab", "gapi"))

    def bearer(self) -> AccessToken:
        """The request's valid access token, or a 401 refusal."""
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            self.error(401, "Request is missing required authentication credential.")
        token = self.emulator._access_tokens.get(value.strip())
        if token is None or not token.valid:
            self.error(401, "Request had invalid authentication credentials.")
        assert token is not None
        return token

    def colab_user(self) -> AccessToken:
        """Auth for {COLAB} paths: a valid token with the e-mail scope (401 otherwise)."""
        self.check_authuser()
        token = self.bearer()
        if EMAIL_SCOPE not in token.scopes:
            self.error(401, "The access token lacks the userinfo.email scope.")
        if self.emulator.colab_requires_colaboratory_scope and COLAB_SCOPE not in token.scopes:
            self.insufficient_scopes()
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

    def check_authuser(self) -> None:
        values = self.get_query_arguments("authuser")
        if not values:
            if self.emulator.require_authuser:
                self.error(400, "authuser is required")
            return
        if len(values) > 1 or not values[0].isdigit():
            self.error(400, "bad authuser")
        if int(values[0]) != 0:
            self.error(401, f"no signed-in account with authuser={values[0]}")

    def single(self, name: str) -> str | None:
        """A query parameter that must appear at most once (400 otherwise)."""
        values = self.get_query_arguments(name)
        if len(values) > 1:
            self.error(400, f"parameter {name} given more than once")
        return values[0] if values else None

    def owned_runtime(self, token: AccessToken, endpoint: str) -> Runtime:
        rt = self.emulator._by_endpoint.get(endpoint)
        if rt is None or rt.released or rt.email != token.email:
            self.error(404, f"no assignment {endpoint}")
        assert rt is not None
        return rt

    def xsrf_issue(self, token: AccessToken) -> str:
        value = new_secret("emu-xsrf-", 18)
        self.emulator._xsrf[value] = XsrfToken(
            value, token.email, self.request.path, time.time() + 3600
        )
        return value

    def xsrf_check(self, token: AccessToken) -> None:
        value = self.request.headers.get("X-Goog-Colab-Token", "")
        entry = self.emulator._xsrf.get(value) if value else None
        if (
            entry is None
            or entry.email != token.email
            or entry.path != self.request.path
            or time.time() > entry.expires
        ):
            self.error(403, "missing or invalid XSRF token (X-Goog-Colab-Token)")


# --- {COLAB} ----------------------------------------------------------------------------------


class AssignHandler(BaseHandler):
    """``/tun/m/assign``: Shape A (XSRF token) then POST; Shape B once assigned for the nbh."""

    def _request(self) -> tuple[str, str, str, bool, str]:
        nbh = self.single("nbh")
        if nbh is None or not NBH_PATTERN.match(nbh):
            self.error(400, "nbh must match ^[a-zA-Z0-9\\-_.]{44}$")
        assert nbh is not None
        variant = (self.single("variant") or "DEFAULT").upper()
        if variant not in VARIANTS:
            self.error(400, f"unknown variant {variant}")
        accelerator = (self.single("accelerator") or "NONE").upper()
        shape = self.single("shape")
        if shape not in (None, "hm"):
            self.error(400, f"unknown shape {shape}")
        version = self.single("runtime_version_label") or ""
        return nbh, variant, accelerator, shape == "hm", version

    def get(self) -> None:
        token = self.colab_user()
        nbh, variant, accelerator, _, _ = self._request()
        rt = self.emulator._by_nbh.get((token.email, nbh))
        if rt is not None and not rt.released:
            self.send(self.emulator._assignment_body(rt, with_outcome=False))
            return
        self.send(
            {
                "acc": accelerator,
                "nbh": nbh,
                "p": False,
                "token": self.xsrf_issue(token),
                "variant": variant,
            }
        )

    async def post(self) -> None:
        token = self.colab_user()
        self.xsrf_check(token)
        nbh, variant, accelerator, high_mem, version = self._request()
        emu = self.emulator
        rt = emu._by_nbh.get((token.email, nbh))
        if rt is None or rt.released:
            fault = emu.faults.take_assign()
            if fault is not None and fault.status is not None:
                self.error(fault.status, "injected assign failure")
            if fault is not None and fault.outcome is not None:
                self.send({"outcome": fault.outcome})
                return
            refusal = emu._refusal(token.email, variant, accelerator, high_mem)
            if refusal is not None:
                self.error(refusal[0], refusal[1])
            rt = emu._create_runtime(token.email, nbh, variant, accelerator, high_mem, version)
        if emu.faults.assign_delay > 0:
            await asyncio.sleep(emu.faults.assign_delay)
        self.send(emu._assignment_body(rt, with_outcome=True))


class UnassignHandler(BaseHandler):
    def get(self, endpoint: str) -> None:
        token = self.colab_user()
        self.owned_runtime(token, endpoint)
        self.send({"token": self.xsrf_issue(token)})

    async def post(self, endpoint: str) -> None:
        token = self.colab_user()
        self.xsrf_check(token)
        rt = self.owned_runtime(token, endpoint)
        await self.emulator._release(rt, "unassigned")
        self.set_status(200)
        self.finish()


class KeepAliveHandler(BaseHandler):
    async def get(self, endpoint: str) -> None:
        token = self.colab_user()
        if self.request.headers.get("X-Colab-Tunnel") != "Google":
            self.error(400, "missing X-Colab-Tunnel: Google")
        rt = self.owned_runtime(token, endpoint)
        rt.last_alive = time.monotonic()
        self.emulator._keepalives[endpoint] = self.emulator._keepalives.get(endpoint, 0) + 1
        hang = self.emulator.faults.take_hang()
        if hang > 0:
            await asyncio.sleep(hang)
        self.set_status(200)
        self.finish()


class CredentialsPropagationHandler(BaseHandler):
    """Drive credentials: dry run, consent URL, real propagation (per user, endpoint, type)."""

    def _params(self) -> tuple[str, bool]:
        authtype = self.single("authtype") or ""
        if authtype not in ("dfs_ephemeral", "auth_user_ephemeral"):
            self.error(400, f"unknown authtype {authtype}")
        dryrun = (self.single("dryrun") or "").lower()
        if dryrun not in ("true", "false"):
            self.error(400, "dryrun must be true or false")
        if self.single("version") != "2" or self.single("propagate") != "true":
            self.error(400, "version=2 and propagate=true are required")
        return authtype, dryrun == "true"

    def get(self, endpoint: str) -> None:
        token = self.colab_user()
        self.owned_runtime(token, endpoint)
        self._params()
        self.send({"token": self.xsrf_issue(token)})

    def post(self, endpoint: str) -> None:
        token = self.colab_user()
        self.xsrf_check(token)
        rt = self.owned_runtime(token, endpoint)
        authtype, dryrun = self._params()
        emu = self.emulator
        key = (token.email, rt.endpoint, authtype)
        authorized = emu.drive_authorized_by_default or key in emu._drive_authorized
        if authorized:
            if not dryrun:
                emu._propagations.append(key)
            self.send({"success": True})
            return
        if not dryrun:
            self.send({"success": False})
            return
        grant = new_secret("", 12)
        emu._drive_grants[grant] = key
        self.send(
            {
                "success": False,
                "unauthorized_redirect_uri": (
                    f"{emu.url}/tun/m/authorize-for-drive-credentials-ephem?grant={grant}"
                ),
            }
        )


class DriveConsentHandler(BaseHandler):
    """The consent page a user opens for Drive credentials: fetching it grants them."""

    def get(self) -> None:
        key = self.emulator._drive_grants.pop(self.get_query_argument("grant", ""), None)
        if key is None:
            self.set_status(400)
            self.finish("unknown or used grant")
            return
        self.emulator._drive_authorized.add(key)
        self.set_header("Content-Type", "text/html")
        self.finish("<p>Drive access granted. You can close this tab.</p>")


class TunAssignmentsHandler(BaseHandler):
    """``/tun/m/assignments``: integer enums and a fresh proxy token per call (as the CLI uses)."""

    def get(self) -> None:
        token = self.colab_user()
        emu = self.emulator
        out = []
        for rt in emu._live_runtimes(token.email):
            proxy_token, ttl = rt.issue_proxy_token(emu.proxy_token_ttl)
            out.append(
                {
                    "accelerator": rt.accelerator,
                    "endpoint": rt.endpoint,
                    "variant": rt.variant_int,
                    "machineShape": int(rt.high_mem),
                    "runtimeProxyInfo": {
                        "token": proxy_token,
                        "tokenExpiresInSeconds": _number(ttl),
                        "url": rt.url,
                    },
                }
            )
        self.send({"assignments": out})


class CcuInfoHandler(BaseHandler):
    def get(self) -> None:
        token = self.colab_user()
        emu = self.emulator
        rate = emu._consumption_rate(token.email)
        body: dict[str, Any] = {
            "currentBalance": emu.compute_units,
            "consumptionRateHourly": rate,
            "assignmentsCount": len(emu._live_runtimes(token.email)),
            "eligibleGpus": emu.eligible_accelerators.get("GPU", []),
            "ineligibleGpus": emu.ineligible_accelerators.get("GPU", []),
            "eligibleTpus": emu.eligible_accelerators.get("TPU", []),
            "ineligibleTpus": emu.ineligible_accelerators.get("TPU", []),
            "freeCcuQuotaInfo": {
                "remainingTokens": str(emu.free_ccu_milli),
                "nextRefillTimestampSec": int(time.time()) + 86400,
            },
        }
        self.send(body)


class ExperimentStateHandler(BaseHandler):
    """Works signed out; with an Authorization header the token must be valid."""

    def get(self) -> None:
        self.check_authuser()
        if "Authorization" in self.request.headers:
            self.bearer()
        self.send({"experiments": dict(self.emulator.experiments), "selectedIds": [1]})


# --- {GAPI} -----------------------------------------------------------------------------------


class GapiAssignmentsHandler(BaseHandler):
    role = "gapi"

    def get(self) -> None:
        token = self.api_user()
        emu = self.emulator
        out = []
        for rt in emu._live_runtimes(token.email):
            proxy_token, ttl = rt.issue_proxy_token(emu.proxy_token_ttl)
            entry: dict[str, Any] = {
                "endpoint": rt.endpoint,
                "accelerator": rt.accelerator,
                "variant": _GAPI_VARIANT[rt.variant],
                "machineShape": "SHAPE_HIGH_MEM" if rt.high_mem else "SHAPE_DEFAULT",
                "runtimeProxyInfo": {
                    "token": proxy_token,
                    "tokenTtl": duration(ttl),
                    "url": rt.url,
                },
            }
            if rt.version:
                entry["runtimeVersionLabel"] = rt.version
            if rt.nbh:
                entry["notebookIdHash"] = rt.nbh
            out.append(entry)
        self.send({"assignments": out} if out else {})


class RuntimeProxyTokenHandler(BaseHandler):
    role = "gapi"

    def get(self) -> None:
        token = self.api_user()
        endpoint = self.single("endpoint") or ""
        port = self.single("port")
        if port not in (None, "8080"):
            self.error(400, "only port 8080 is proxied")
        rt = self.owned_runtime(token, endpoint)
        proxy_token, ttl = rt.issue_proxy_token(self.emulator.proxy_token_ttl)
        self.send({"token": proxy_token, "tokenTtl": duration(ttl), "url": rt.url})


class UserInfoHandler(BaseHandler):
    role = "gapi"

    def get(self) -> None:
        token = self.api_user()
        emu = self.emulator
        body: dict[str, Any] = {
            "subscriptionTier": _GAPI_TIER[emu.subscription_tier],
            "eligibleAccelerators": [
                {"variant": _GAPI_VARIANT[v], "models": list(m)}
                for v, m in emu.eligible_accelerators.items()
            ],
            "ineligibleAccelerators": [
                {"variant": _GAPI_VARIANT[v], "models": list(m)}
                for v, m in emu.ineligible_accelerators.items()
            ],
        }
        if self.get_query_argument("get_ccu_consumption_info", "") == "true":
            body.update(
                {
                    "paidComputeUnitsBalance": emu.compute_units,
                    "consumptionRateHourly": emu._consumption_rate(token.email),
                    "assignmentsCount": len(emu._live_runtimes(token.email)),
                    "freeCcuQuotaInfo": {
                        "remainingTokens": str(emu.free_ccu_milli),
                        "nextRefillTimestampSec": int(time.time()) + 86400,
                    },
                }
            )
        self.send(body)


# --- {PUBLIC} ---------------------------------------------------------------------------------


class PublicHandler(BaseHandler):
    role = "public"

    def runtime_body(self, rt: Runtime) -> dict[str, Any]:
        proxy_token, ttl = rt.issue_proxy_token(self.emulator.proxy_token_ttl)
        body: dict[str, Any] = {
            "name": f"runtimes/{rt.runtime_id}",
            "runtimeSpec": {
                "variant": _PUBLIC_VARIANT[rt.variant],
                "accelerator": rt.accelerator,
                "shape": "SHAPE_HIGHMEM" if rt.high_mem else "SHAPE_STANDARD",
            },
            "connectionInfo": {
                "endpoint": rt.endpoint,
                "url": rt.url,
                "token": proxy_token,
                "expireTime": _rfc3339(time.time() + ttl),
            },
        }
        if rt.version:
            body["version"] = rt.version
        return body

    def operation_body(self, op: Operation) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": f"operations/{op.op_id}",
            "done": op.done,
            "metadata": {
                "@type": "type.googleapis.com/google.colab.v1beta.CreateRuntimeMetadata",
                "runtime": f"runtimes/{op.runtime_id}",
            },
        }
        if op.done and op.error is not None:
            body["error"] = op.error
        elif op.done and op.runtime is not None:
            body["response"] = {
                "@type": "type.googleapis.com/google.colab.v1beta.Runtime",
                **self.runtime_body(op.runtime),
            }
        return body

    def own_runtime(self, token: AccessToken, runtime_id: str) -> Runtime:
        rt = self.emulator._by_runtime_id.get(runtime_id)
        if rt is None or rt.released or rt.email != token.email:
            self.error(404, f"Runtime runtimes/{runtime_id} not found.")
        assert rt is not None
        return rt

    def own_operation(self, token: AccessToken, op_id: str) -> Operation:
        op = self.emulator._operations.get(op_id)
        if op is None or op.email != token.email:
            self.error(404, f"Operation operations/{op_id} not found.")
        assert op is not None
        return op


class RuntimeSpecsHandler(PublicHandler):
    def get(self) -> None:
        self.api_user(read_only=True)
        emu = self.emulator
        pro = emu.subscription_tier != "FREE"
        specs: list[dict[str, Any]] = []

        def add(variant: str, accelerator: str, eligible: bool) -> None:
            shapes = ["SHAPE_STANDARD", "SHAPE_HIGHMEM"] if pro else ["SHAPE_STANDARD"]
            if accelerator in HIGH_MEM_ONLY:
                shapes = ["SHAPE_HIGHMEM"]
            for shape in shapes:
                key = {"variant": _PUBLIC_VARIANT[variant], "accelerator": accelerator}
                specs.append({"key": {**key, "shape": shape}, "eligible": eligible})

        add("DEFAULT", "NONE", True)
        for variant, models in emu.eligible_accelerators.items():
            for model in models:
                add(variant, model, True)
        for variant, models in emu.ineligible_accelerators.items():
            for model in models:
                add(variant, model, False)
        self.send({"runtimeSpecs": specs})


class RuntimesHandler(PublicHandler):
    def get(self) -> None:
        token = self.api_user(read_only=True)
        runtimes = [self.runtime_body(rt) for rt in self.emulator._live_runtimes(token.email)]
        self.send({"runtimes": runtimes} if runtimes else {})

    def post(self) -> None:
        token = self.api_user()
        emu = self.emulator
        request_id = self.single("requestId")
        runtime_id = self.single("runtimeId")
        if request_id is not None:
            for existing in emu._operations.values():
                if existing.request_id == request_id and existing.email == token.email:
                    self.send(self.operation_body(existing))
                    return
        try:
            body = json.loads(self.request.body or b"{}")
            spec = body.get("runtimeSpec") or {}
            variant = _PUBLIC_VARIANT_IN[spec.get("variant", "VARIANT_UNSPECIFIED")]
            accelerator = str(spec.get("accelerator", "NONE")).upper()
            shape = spec.get("shape", "SHAPE_UNSPECIFIED")
            if shape not in ("SHAPE_UNSPECIFIED", "SHAPE_STANDARD", "SHAPE_HIGHMEM"):
                raise ValueError(shape)
            version = str(body.get("version") or "")
        except (ValueError, KeyError, AttributeError, TypeError):
            self.error(400, "Invalid Runtime in request body.")
        if runtime_id is not None and not RUNTIME_ID_PATTERN.match(runtime_id):
            self.error(400, "runtimeId must match [a-z]([a-z0-9-]{0,61}[a-z0-9])?")
        op = Operation(
            op_id=secrets.token_hex(8),
            email=token.email,
            runtime_id=runtime_id or ("emu-" + secrets.token_hex(6)),
            request_id=request_id,
            done_at=time.monotonic() + emu.create_runtime_delay,
        )
        emu._operations[op.op_id] = op
        clash = emu._by_runtime_id.get(op.runtime_id)
        if clash is not None and not clash.released:
            emu._finish_operation(op, error=(6, "ALREADY_EXISTS", "Runtime already exists."))
        else:
            emu._pending_creates[op.op_id] = (
                variant,
                accelerator,
                shape == "SHAPE_HIGHMEM",
                version,
            )
            if emu.create_runtime_delay <= 0:
                emu._complete_operation(op)
        self.send(self.operation_body(op))


class RuntimeHandler(PublicHandler):
    def get(self, runtime_id: str) -> None:
        token = self.api_user(read_only=True)
        self.send(self.runtime_body(self.own_runtime(token, runtime_id)))

    async def delete(self, runtime_id: str) -> None:
        token = self.api_user()
        rt = self.own_runtime(token, runtime_id)
        await self.emulator._release(rt, "deleted")
        self.send({})


class SubscriptionHandler(PublicHandler):
    def get(self) -> None:
        self.api_user(read_only=True)
        tier = self.emulator.subscription_tier
        self.send({"name": "subscription", "tier": _PUBLIC_TIER[tier]})


class OperationsHandler(PublicHandler):
    def get(self) -> None:
        token = self.api_user(read_only=True)
        ops = [op for op in self.emulator._operations.values() if op.email == token.email]
        try:
            size = int(self.get_query_argument("pageSize", "50") or 50)
            start = int(self.get_query_argument("pageToken", "0") or 0)
        except ValueError:
            self.error(400, "bad pageSize or pageToken")
        page = ops[start : start + size]
        body: dict[str, Any] = {"operations": [self.operation_body(op) for op in page]}
        if start + size < len(ops):
            body["nextPageToken"] = str(start + size)
        self.send(body)


class OperationHandler(PublicHandler):
    def get(self, op_id: str) -> None:
        token = self.api_user(read_only=True)
        self.send(self.operation_body(self.own_operation(token, op_id)))


class WaitOperationHandler(PublicHandler):
    async def get(self, op_id: str) -> None:
        token = self.api_user(read_only=True)
        op = self.own_operation(token, op_id)
        raw = self.get_query_argument("timeout", "") or ""
        try:
            timeout = float(raw[:-1]) if raw.endswith("s") else self.emulator.wait_operation_cap
        except ValueError:
            self.error(400, f"bad timeout {raw}")
        deadline = time.monotonic() + min(timeout, self.emulator.wait_operation_cap)
        while not op.done and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.send(self.operation_body(op))


# --- OAuth ------------------------------------------------------------------------------------


def _loopback(uri: str) -> bool:
    parsed = urllib.parse.urlsplit(uri)
    return parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "localhost", "::1")


class OAuthHandler(BaseHandler):
    role = "oauth"

    def oauth_error(self, status: int, error: str, description: str) -> NoReturn:
        raise HTTPRefusal(status, {"error": error, "error_description": description})


class AuthorizeHandler(OAuthHandler):
    """Auto-approves as the configured test user and redirects with ``code`` and ``state``."""

    def get(self) -> None:
        emu = self.emulator
        arg = self.get_query_argument
        client = emu._clients.get(arg("client_id", "") or "")
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
            assert client is not None
            if arg("include_granted_scopes", "") == "true":
                scopes |= emu._granted.get((emu.user_email, client.client_id), frozenset())
            emu._granted[(emu.user_email, client.client_id)] = scopes
            code = new_secret("4/emu-")
            emu._codes[code] = AuthCode(
                code=code,
                client_id=client.client_id,
                redirect_uri=redirect_uri,
                scopes=scopes,
                email=emu.user_email,
                offline=arg("access_type", "") == "offline",
                challenge=challenge,
                challenge_method=(method or "plain") if challenge else None,
                expires=time.time() + 600,
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
        client = emu._clients.get(client_id)
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
        code = emu._codes.pop(form.get("code", ""), None)
        if code is None or code.client_id != client_id or time.time() > code.expires:
            self.oauth_error(400, "invalid_grant", "Malformed auth code.")
        assert code is not None
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
            emu._refresh_tokens[refresh.token] = refresh
        access = emu._mint(code.email, client_id, code.scopes, refresh)
        self.send(self._token_body(access, refresh))

    def _refresh_grant(self, form: dict[str, str], client_id: str) -> None:
        emu = self.emulator
        refresh = emu._refresh_tokens.get(form.get("refresh_token", ""))
        if emu.faults.refresh_invalid_grant > 0:
            emu.faults.refresh_invalid_grant -= 1
            self.oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        if refresh is None or refresh.revoked or refresh.client_id != client_id:
            self.oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
        assert refresh is not None
        scopes = refresh.scopes
        if form.get("scope"):
            requested = normalize_scopes(form["scope"])
            if not requested <= scopes:
                self.oauth_error(400, "invalid_scope", "Scope not granted.")
            scopes = requested
        access = emu._mint(refresh.email, client_id, scopes, refresh)
        self.send(self._token_body(access, None))

    def _token_body(self, access: AccessToken, refresh: RefreshToken | None) -> dict[str, Any]:
        header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        claims = {
            "iss": self.emulator.url,
            "aud": access.client_id,
            "sub": self.emulator._user(access.email).id,
            "email": access.email,
            "iat": int(time.time()),
            "exp": int(access.expires),
        }
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        body: dict[str, Any] = {
            "access_token": access.token,
            "expires_in": max(1, round(access.expires - time.time())),
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
        if not self.emulator._revoke(value):
            self.oauth_error(400, "invalid_token", "Token expired or revoked")
        self.send({})


class UserinfoHandler(OAuthHandler):
    def get(self) -> None:
        token = self.bearer()
        self.send(self.emulator._user(token.email).info())


class TokenInfoHandler(OAuthHandler):
    def get(self) -> None:
        value = self.get_query_argument("access_token", "") or ""
        token = self.emulator._access_tokens.get(value)
        if token is None or not token.valid:
            self.oauth_error(400, "invalid_token", "Invalid Value")
        assert token is not None
        self.send(
            {
                "aud": token.client_id,
                "azp": token.client_id,
                "email": token.email,
                "email_verified": "true",
                "expires_in": str(max(0, int(token.expires - time.time()))),
                "scope": " ".join(sorted(token.scopes)),
            }
        )


def routes(emulator: ColabEmulator) -> list[Any]:
    kw = {"emulator": emulator}
    return [
        (r"/tun/m/assign", AssignHandler, kw),
        (r"/tun/m/unassign/([^/]+)", UnassignHandler, kw),
        (r"/tun/m/credentials-propagation/([^/]+)", CredentialsPropagationHandler, kw),
        (r"/tun/m/authorize-for-drive-credentials-ephem", DriveConsentHandler, kw),
        (r"/tun/m/assignments", TunAssignmentsHandler, kw),
        (r"/tun/m/ccu-info", CcuInfoHandler, kw),
        (r"/tun/m/([^/]+)/keep-alive/", KeepAliveHandler, kw),
        (r"/vscode/experiment-state", ExperimentStateHandler, kw),
        (r"/v1/assignments", GapiAssignmentsHandler, kw),
        (r"/v1/runtime-proxy-token", RuntimeProxyTokenHandler, kw),
        (r"/v1/user-info", UserInfoHandler, kw),
        (r"/v1beta/runtimespecs", RuntimeSpecsHandler, kw),
        (r"/v1beta/runtimes", RuntimesHandler, kw),
        (r"/v1beta/runtimes/([^/]+)", RuntimeHandler, kw),
        (r"/v1beta/subscription", SubscriptionHandler, kw),
        (r"/v1/operations", OperationsHandler, kw),
        (r"/v1/operations/([^/:]+):wait", WaitOperationHandler, kw),
        (r"/v1/operations/([^/:]+)", OperationHandler, kw),
        (r"/o/oauth2/v2/auth", AuthorizeHandler, kw),
        (r"/o/oauth2/auth", AuthorizeHandler, kw),
        (r"/oauth/paste", PasteHandler, kw),
        (r"/token", TokenHandler, kw),
        (r"/revoke", RevokeHandler, kw),
        (r"/oauth2/v2/userinfo", UserinfoHandler, kw),
        (r"/tokeninfo", TokenInfoHandler, kw),
        (r"/oauth2/v3/tokeninfo", TokenInfoHandler, kw),
    ]


__all__ = ["TIERS", "HTTPRefusal", "duration", "routes"]
