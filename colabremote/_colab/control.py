"""The Colab control plane: get, list, keep alive and release runtimes (``/tun/m`` and ``/v1``).

One :class:`ControlPlane` speaks the private protocol Colab's own clients use: the headers,
``authuser=0`` on Colab-web requests, XSSI-prefixed JSON, the XSRF GET-then-POST dance, one
retry after a 401 with a fresh access token (:class:`~colabremote._http.BearerAuth`), and
assign's retry-then-reconcile path that never assigns two VMs for one request. httpx errors
become colabremote errors through :func:`~colabremote._http.mapped_errors`.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Literal
from urllib.parse import quote

import httpx

from .._http import BearerAuth, TokenSource, mapped_errors, refusal, scrub
from .._retry import retrying
from .._tls import verify_setting
from ..exceptions import (
    AcceleratorUnavailable,
    AccountBlocked,
    AuthError,
    ColabError,
    ConfigurationError,
    MissingScopes,
    NotEntitled,
    QuotaExceeded,
    RuntimeGone,
    TooManyRuntimes,
)
from ._http import OwnsHttpClient, colab_error, sign_in_again
from .endpoints import ColabEndpoints
from .models import (
    HIGH_MEMORY_ONLY,
    Accelerator,
    Assignment,
    CcuInfo,
    CredentialsPropagationResult,
    Outcome,
    RuntimeProxyInfo,
    UserInfo,
    Variant,
)

__all__ = [
    "AuthType",
    "ControlPlane",
    "assign_query",
    "resolve_kind",
    "new_nbh",
    "parse_json",
    "strip_xssi",
]

AuthType = Literal["dfs_ephemeral", "auth_user_ephemeral"]

try:
    _VERSION = importlib.metadata.version("colabremote")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
    _VERSION = "0+unknown"

XSSI_PREFIX = b")]}'"
_NBH = re.compile(r"^[a-zA-Z0-9\-_.]{44}$")
_RECONCILE_STATUSES = frozenset({500, 502, 503, 504})
_SCOPE_MARKERS = ("SCOPE_NOT_PERMITTED", "insufficient authentication scopes")
_QUOTA_HINT = (
    "Wait until Colab's usage limits reset, or get compute units or a paid plan at "
    "https://colab.research.google.com/signup."
)
_BLOCKED_HINT = (
    "Colab suspects abuse on this account; see "
    "https://research.google.com/colaboratory/faq.html#limitations-and-restrictions."
)


def strip_xssi(content: bytes) -> bytes:
    """The body without Colab's anti-XSSI prefix (``)]}'`` and a newline), if it has one."""
    if content.startswith(XSSI_PREFIX):
        newline = content.find(b"\n")
        return content[newline + 1 :] if newline >= 0 else b""
    return content


def parse_json(content: bytes, doing: str) -> Any:
    """JSON from a v1 body, XSSI prefix stripped; ``None`` for an empty body."""
    text = strip_xssi(content).strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise ColabError(f"{doing}: Colab answered with a body that is not JSON") from None


def new_nbh() -> str:
    """A fresh notebook hash: a new nbh asks Colab for a new VM (re-using one returns its VM).

    Like Colab's own clients: a UUID4 with ``-`` turned into ``_``, padded with ``.`` to 44.
    """
    return str(uuid.uuid4()).replace("-", "_").ljust(44, ".")


def resolve_kind(
    variant: Variant | str | None, accelerator: Accelerator | str | None
) -> tuple[Variant, str | None]:
    """The variant and accelerator a request means, checked (``None``: no particular model)."""
    chosen: Variant | None = None
    if variant is not None:
        chosen = Variant.parse(variant.value if isinstance(variant, Variant) else variant)
        if chosen is Variant.UNKNOWN:
            raise ConfigurationError(
                f"variant={variant!r} is not a Colab machine kind; use 'GPU', 'TPU' or 'DEFAULT' "
                "(CPU only)"
            )
    model: str | None = None
    if accelerator is not None:
        model = (accelerator.value if isinstance(accelerator, Accelerator) else accelerator).upper()
        model = model.strip() or None
    if model is None or model == "NONE":
        return (chosen or Variant.DEFAULT), None
    implied = Accelerator(model).variant if model in Accelerator.__members__ else None
    if chosen is None:
        if implied is None:
            raise ConfigurationError(
                f"accelerator={model!r} is not one colabremote knows; say which kind it is with "
                "variant='GPU' or variant='TPU'"
            )
        chosen = implied
    if chosen is Variant.DEFAULT or (implied is not None and implied is not chosen):
        raise ConfigurationError(
            f"accelerator={model!r} does not come with variant={chosen.value!r}; "
            f"use variant={(implied or Variant.GPU).value!r} or leave variant out"
        )
    return chosen, model


def assign_query(
    nbh: str,
    *,
    variant: Variant | str | None = None,
    accelerator: Accelerator | str | None = None,
    high_memory: bool = False,
    runtime_version: str | None = None,
) -> list[tuple[str, str]]:
    """The assign query, in Colab's order (``authuser`` is added last, when it is sent).

    CPU is asked for as ``variant=DEFAULT&accelerator=NONE`` (the form the CLI uses live).
    ``shape=hm`` is left out for accelerators that exist only in a high-memory shape.
    """
    if not _NBH.match(nbh):
        raise ConfigurationError(
            f"nbh={nbh!r} is not a notebook hash (44 characters of letters, digits, '-', '_', "
            "'.'); use new_nbh() for a new runtime"
        )
    kind, model = resolve_kind(variant, accelerator)
    params = [("nbh", nbh), ("variant", kind.value)]
    if model is not None:
        params.append(("accelerator", model))
    elif kind is Variant.DEFAULT:
        params.append(("accelerator", "NONE"))
    if high_memory and model not in HIGH_MEMORY_ONLY:
        params.append(("shape", "hm"))
    if runtime_version:
        params.append(("runtime_version_label", runtime_version))
    return params


class ControlPlane(OwnsHttpClient):
    """An async client of Colab's control plane for one signed-in account.

    ``credentials`` hand out the OAuth access token; after a 401 their cached token is dropped
    (``invalidate()``) and the request is sent once more with a fresh one.
    ``prefer_gapi`` lists assignments and refreshes proxy tokens through the private Google API
    host instead of ``/tun/m/assignments`` (which works with any client's token).
    """

    def __init__(
        self,
        credentials: TokenSource,
        *,
        endpoints: ColabEndpoints | None = None,
        client: httpx.AsyncClient | None = None,
        client_agent: str = "vscode",
        app_name: str = "colabremote",
        app_version: str = _VERSION,
        prefer_gapi: bool = False,
        timeout: float = 30.0,
        assign_timeout: float = 200.0,
        keep_alive_timeout: float = 20.0,
        assign_retries: int = 3,
        assign_backoff: float = 10.0,
        verify: bool = True,
    ) -> None:
        self.endpoints = endpoints or ColabEndpoints.production()
        self._credentials = credentials
        self._auth = BearerAuth(credentials)
        self._owns_http = client is None
        self._http = client or httpx.AsyncClient(
            verify=verify_setting(verify), follow_redirects=False
        )
        self._headers = {
            "Accept": "application/json",
            "X-Colab-Client-Agent": client_agent,
            "X-Colab-VS-Code-App-Name": app_name,
            "X-Colab-VS-Code-Extension-Version": app_version,
        }
        self.prefer_gapi = prefer_gapi
        self._timeout = timeout
        self._assign_timeout = assign_timeout
        self._keep_alive_timeout = keep_alive_timeout
        self._assign_retries = max(0, assign_retries)
        self._assign_backoff = max(0.0, assign_backoff)

    new_nbh = staticmethod(new_nbh)

    def __repr__(self) -> str:
        return f"ControlPlane(colab={self.endpoints.colab!r}, gapi={self.endpoints.gapi!r})"

    # -- the one HTTP boundary -------------------------------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        colab: bool = False,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One request with the v1 headers and the bearer token (resent once after a 401).

        ``colab`` marks Colab-web requests, which get ``authuser=0`` (set once, last).
        Raises httpx's transport errors as they are (callers translate them).
        """
        query = [(k, v) for k, v in params if not (colab and k == "authuser")]
        if colab:
            query.append(("authuser", "0"))
        return await self._http.request(
            method,
            url,
            params=tuple(query),
            headers={**self._headers, **(headers or {})},
            timeout=httpx.Timeout(timeout if timeout is not None else self._timeout),
            auth=self._auth,
        )

    def _check(
        self, response: httpx.Response, doing: str, *, endpoint: str | None = None
    ) -> httpx.Response:
        """``response`` if it succeeded, else the colabremote error its status means."""
        status = response.status_code
        if status < 400:
            return response
        body = scrub(response.text[:500], *self._auth.sent_tokens).strip()
        if status == 401:
            raise AuthError(
                f"{doing}: Colab did not accept the sign-in (HTTP 401), even with a fresh access "
                "token. " + sign_in_again(self._credentials, "the userinfo.email scope")
            )
        if status == 403 and any(marker in body for marker in _SCOPE_MARKERS):
            raise MissingScopes(
                f"{doing}: the access token lacks scopes Colab needs (HTTP 403). Sign in again "
                "(`colabremote login`) and grant every scope asked for."
            )
        if status == 404 and endpoint is not None:
            raise RuntimeGone(
                f"{doing}: Colab no longer has runtime {endpoint!r} (HTTP 404); it was released "
                "or reclaimed when idle. Start a new one.",
                status=404,
            )
        raise ColabError(refusal(response, doing, detail=body), status=status)

    async def _call(
        self,
        method: str,
        url: str,
        doing: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        colab: bool = False,
        endpoint: str | None = None,
    ) -> Any:
        """An idempotent request (retried), and its JSON answer."""

        async def once() -> Any:
            response = await self._send(method, url, params=params, colab=colab)
            return parse_json(self._check(response, doing, endpoint=endpoint).content, doing)

        with self._errors(doing):
            return await retrying(once, what=doing)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """httpx's transport failures in the block as :class:`ColabError` (status ``None``)."""
        with mapped_errors(doing, where="Colab", error=colab_error, hide=self._auth.sent_tokens):
            yield

    # -- assign ------------------------------------------------------------------------------

    async def assign(
        self,
        *,
        variant: Variant | str | None = None,
        accelerator: Accelerator | str | None = None,
        high_memory: bool = False,
        runtime_version: str | None = None,
        nbh: str | None = None,
    ) -> tuple[Assignment, bool]:
        """A runtime for ``nbh`` (a new one with a fresh nbh) and whether it was newly assigned.

        With ``nbh`` of an existing assignment, that assignment comes back (``False``). A POST
        that fails in a way that may have succeeded on Colab (no answer, 500/502/503/504) is
        followed by a same-nbh GET that picks the VM up, so one call never assigns two VMs.
        """
        nbh = nbh or new_nbh()
        params = assign_query(
            nbh,
            variant=variant,
            accelerator=accelerator,
            high_memory=high_memory,
            runtime_version=runtime_version,
        )
        requested = dict(params).get("accelerator", "NONE")
        label = requested if requested != "NONE" else "default"
        doing = f"assigning a Colab runtime (accelerator {label})"
        url = f"{self.endpoints.colab}/tun/m/assign"

        state = await self._assign_get(url, params, doing)
        if isinstance(state, Assignment):
            return state, False
        xsrf = state
        tries = 0

        async def post() -> tuple[Assignment, bool]:
            nonlocal xsrf, tries
            tries += 1
            if tries > 1:
                state = await self._assign_get(url, params, doing)
                if isinstance(state, Assignment):
                    return state, True  # the earlier POST went through after all
                xsrf = state
            with self._errors(doing):
                try:
                    response = await self._send(
                        "POST",
                        url,
                        params=params,
                        colab=True,
                        headers={"X-Goog-Colab-Token": xsrf},
                        timeout=self._assign_timeout,
                    )
                except (httpx.ReadTimeout, httpx.RemoteProtocolError) as exc:
                    raise _Unsettled(f"no answer ({type(exc).__name__})") from exc
            if response.status_code in _RECONCILE_STATUSES:
                status = response.status_code
                raise _Unsettled(f"HTTP {status}", status=status)
            answer = self._assign_answer(response, doing, label, bool(high_memory))
            return _with_nbh(answer, params), True

        try:
            return await retrying(
                post,
                what=doing,
                attempts=1 + self._assign_retries,
                deadline=None,  # each POST has its own time-out; the attempts bound the rest
                first_wait=self._assign_backoff,
                longest_wait=math.inf,
                jitter=0.0,
                retry_if=lambda exc: isinstance(exc, _Unsettled),
            )
        except _Unsettled as exc:
            failure, failed_status = exc.what, exc.status

        # Out of attempts: one last look, in case the final POST went through on Colab.
        state = await self._assign_get(url, params, doing)
        if isinstance(state, Assignment):
            return state, True
        if failed_status == 503:
            raise AcceleratorUnavailable(
                f"No Colab machine with accelerator {label} is free now (HTTP 503, "
                f"{1 + self._assign_retries} attempts). Try again later or ask for another "
                "accelerator (ControlPlane.user_info() lists the ones the account may use).",
                status=503,
            )
        raise ColabError(
            f"{doing}: Colab did not complete the assignment after {1 + self._assign_retries} "
            f"attempts (last: {failure}). If it finishes later, assign(nbh={nbh!r}) returns "
            "that runtime instead of a new one.",
            status=failed_status,
        )

    async def _assign_get(
        self, url: str, params: Sequence[tuple[str, str]], doing: str
    ) -> Assignment | str:
        """The assign GET: the existing assignment for this nbh, or the XSRF token to POST."""
        body = await self._call("GET", url, doing, params=params, colab=True)
        if not isinstance(body, Mapping):
            raise ColabError(f"{doing}: Colab answered the assign GET without a JSON object")
        if body.get("endpoint"):
            return _with_nbh(Assignment.from_wire(body), params)
        token = body.get("token")
        if isinstance(token, str) and token:
            return token
        self._raise_outcome(body, doing)
        raise ColabError(f"{doing}: Colab answered the assign GET with neither a VM nor a token")

    def _raise_outcome(self, body: Mapping[str, Any], doing: str) -> None:
        """Raise the error a refusing ``outcome`` means; return when it means success."""
        outcome = Outcome.parse(body.get("outcome"))
        if outcome is None or outcome.is_success:
            return
        if outcome.is_quota:
            raise QuotaExceeded(
                f"{doing}: Colab refused, the account's usage limits are reached "
                f"({outcome.name}). {_QUOTA_HINT}"
            )
        if outcome is Outcome.DENYLISTED:
            raise AccountBlocked(f"{doing}: Colab has blocked this account. {_BLOCKED_HINT}")
        raise ColabError(f"{doing}: Colab refused with outcome {outcome.name}")  # pragma: no cover

    def _assign_answer(
        self, response: httpx.Response, doing: str, label: str, high_memory: bool
    ) -> Assignment:
        status = response.status_code
        if status == 412:
            raise TooManyRuntimes(
                f"{doing}: Colab refused a new runtime (HTTP 412): the account has too many "
                "runtimes assigned, or hit a temporary usage or capacity limit. Release one "
                "(`colabremote runtimes release`, or Runtime > Manage sessions in Colab) and "
                "try again.",
                status=412,
            )
        if status == 400 and (label != "default" or high_memory):
            shape = " with high memory" if high_memory else ""
            raise NotEntitled(
                f"{doing}: Colab rejected accelerator {label}{shape} (HTTP 400): the account "
                "has no quota or entitlement for it. Ask for another accelerator (or the "
                "standard shape), or upgrade at https://colab.research.google.com/signup.",
                status=400,
            )
        self._check(response, doing)
        body = parse_json(response.content, doing)
        if not isinstance(body, Mapping):
            raise ColabError(f"{doing}: Colab answered the assign POST without a JSON object")
        self._raise_outcome(body, doing)
        return Assignment.from_wire(body)

    # -- the other calls ---------------------------------------------------------------------

    async def list_assignments(self) -> list[Assignment]:
        """Every runtime assigned to the account, including ones made in Colab web.

        Each entry carries a freshly issued proxy token.
        """
        if self.prefer_gapi:
            url, colab = f"{self.endpoints.gapi}/v1/assignments", False
        else:
            url, colab = f"{self.endpoints.colab}/tun/m/assignments", True
        body = await self._call("GET", url, "listing Colab runtimes", colab=colab)
        items = body.get("assignments") if isinstance(body, Mapping) else None
        if not items:
            return []
        if not isinstance(items, list):
            raise ColabError("listing Colab runtimes: Colab answered assignments that are no list")
        return [Assignment.from_wire(item) for item in items]

    async def unassign(self, endpoint: str, *, missing_ok: bool = True) -> bool:
        """Release runtime ``endpoint``; ``False`` if it was already gone (and ``missing_ok``)."""
        doing = f"releasing Colab runtime {endpoint!r}"
        url = f"{self.endpoints.colab}/tun/m/unassign/{quote(endpoint, safe='')}"

        async def once() -> None:  # GET-then-POST is safe to repeat: releasing is idempotent
            got = self._check(await self._send("GET", url, colab=True), doing, endpoint=endpoint)
            token = _xsrf(parse_json(got.content, doing), doing)
            response = await self._send(
                "POST", url, colab=True, headers={"X-Goog-Colab-Token": token}
            )
            self._check(response, doing, endpoint=endpoint)

        try:
            with self._errors(doing):
                await retrying(once, what=doing)
        except RuntimeGone:
            if not missing_ok:
                raise
            return False
        return True

    async def keep_alive(self, endpoint: str) -> None:
        """Tell Colab the runtime is in use, so it is not reclaimed as idle.

        Colab's front door records the ping on arrival and rarely answers, so a read time-out
        counts as success. A runtime Colab no longer has raises :class:`RuntimeGone`.
        """
        doing = f"keeping Colab runtime {endpoint!r} alive"
        url = f"{self.endpoints.colab}/tun/m/{quote(endpoint, safe='')}/keep-alive/"

        async def once() -> None:
            try:
                response = await self._send(
                    "GET",
                    url,
                    colab=True,
                    headers={"X-Colab-Tunnel": "Google"},
                    timeout=self._keep_alive_timeout,
                )
            except httpx.ReadTimeout:
                return
            self._check(response, doing, endpoint=endpoint)

        with self._errors(doing):
            await retrying(once, what=doing)

    async def refresh_proxy_token(self, endpoint: str) -> RuntimeProxyInfo:
        """A new proxy token (and possibly URL) for runtime ``endpoint``.

        By default from the assignment list, which reissues tokens on every call; with
        ``prefer_gapi`` from ``/v1/runtime-proxy-token``.
        """
        doing = f"refreshing the proxy token of Colab runtime {endpoint!r}"
        if self.prefer_gapi:
            body = await self._call(
                "GET",
                f"{self.endpoints.gapi}/v1/runtime-proxy-token",
                doing,
                params=[("endpoint", endpoint), ("port", "8080")],
                endpoint=endpoint,
            )
            return RuntimeProxyInfo.from_wire(body)
        for assignment in await self.list_assignments():
            if assignment.endpoint == endpoint:
                if assignment.proxy is None:
                    raise ColabError(f"{doing}: Colab listed the runtime without proxy details")
                return assignment.proxy
        raise RuntimeGone(
            f"{doing}: Colab no longer lists runtime {endpoint!r}; it was released or reclaimed "
            "when idle. Start a new one."
        )

    async def runtime_versions(self) -> list[str]:
        """The pinned runtime image labels Colab offers this account (newest first, as listed),
        from the ``runtime_version_names`` experiment flag; the default image is not listed."""
        body = await self._call(
            "GET",
            f"{self.endpoints.colab}/vscode/experiment-state",
            "reading Colab's runtime versions",
            colab=True,
        )
        flags = body.get("experiments") if isinstance(body, Mapping) else None
        names = flags.get("runtime_version_names") if isinstance(flags, Mapping) else None
        if names is None:  # Colab leaves the flag out when it offers no pinned image
            return []
        if not isinstance(names, list):
            raise ColabError("reading Colab's runtime versions: the list is not a list")
        return [name for name in names if isinstance(name, str) and name]

    async def port_proxy_token(self, endpoint: str, port: int) -> RuntimeProxyInfo:
        """The proxy URL and token for ``port`` on runtime ``endpoint`` (each port has its own),
        from ``/v1/runtime-proxy-token`` as Colab's own client asks for them."""
        doing = f"getting a proxy token for port {port} of Colab runtime {endpoint!r}"
        body = await self._call(
            "GET",
            f"{self.endpoints.gapi}/v1/runtime-proxy-token",
            doing,
            params=[("endpoint", endpoint), ("port", str(port))],
            endpoint=endpoint,
        )
        return RuntimeProxyInfo.from_wire(body)

    async def sign_in(self) -> None:
        """Get an access token before any call, so a missing sign-in is one plain
        SignInRequired rather than an error raised inside a request and its retries."""
        await self._credentials.token()

    async def user_info(self, *, consumption: bool = False) -> UserInfo:
        """The account's plan and eligible accelerators (and compute-unit use with ``consumption``).

        Served by the private Google API host, which may refuse tokens of other OAuth clients.
        """
        params = [("get_ccu_consumption_info", "true")] if consumption else []
        body = await self._call(
            "GET", f"{self.endpoints.gapi}/v1/user-info", "reading Colab user info", params=params
        )
        return UserInfo.from_wire(body)

    async def ccu_info(self) -> CcuInfo:
        """Compute-unit balance, hourly consumption and runtime count (``/tun/m/ccu-info``)."""
        body = await self._call(
            "GET", f"{self.endpoints.colab}/tun/m/ccu-info", "reading Colab usage", colab=True
        )
        return CcuInfo.from_wire(body)

    async def credentials_propagation(
        self, endpoint: str, auth_type: AuthType, *, dry_run: bool
    ) -> CredentialsPropagationResult:
        """Ask Colab to put the user's Drive (``dfs_ephemeral``) or Google credentials on the VM.

        A dry run says whether that is possible now, or which consent page to open first.
        """
        if auth_type not in ("dfs_ephemeral", "auth_user_ephemeral"):
            raise ConfigurationError(
                f"auth_type={auth_type!r} is not one Colab knows; use 'dfs_ephemeral' or "
                "'auth_user_ephemeral'"
            )
        doing = f"propagating {auth_type} credentials to Colab runtime {endpoint!r}"
        url = f"{self.endpoints.colab}/tun/m/credentials-propagation/{quote(endpoint, safe='')}"
        params = [
            ("authtype", auth_type),
            ("version", "2"),
            ("dryrun", "true" if dry_run else "false"),
            ("propagate", "true"),
            ("record", "false"),
        ]
        body = await self._call("GET", url, doing, params=params, colab=True, endpoint=endpoint)
        token = _xsrf(body, doing)
        with self._errors(doing):
            response = await self._send(
                "POST", url, params=params, colab=True, headers={"X-Goog-Colab-Token": token}
            )
        self._check(response, doing, endpoint=endpoint)
        return CredentialsPropagationResult.from_wire(parse_json(response.content, doing))


def _with_nbh(assignment: Assignment, params: Sequence[tuple[str, str]]) -> Assignment:
    """``assignment`` knowing the nbh it was assigned for (assign answers do not echo it)."""
    return assignment if assignment.nbh else replace(assignment, nbh=dict(params)["nbh"])


def _xsrf(body: object, doing: str) -> str:
    token = body.get("token") if isinstance(body, Mapping) else None
    if not isinstance(token, str) or not token:
        raise ColabError(f"{doing}: Colab answered the GET without an XSRF token")
    return token


class _Unsettled(ColabError):
    """An assign POST whose fate is unknown: no answer came, or a 500/502/503/504 (Colab may have
    assigned the VM anyway); the next try first looks for it with a same-nbh GET. Never
    escapes :meth:`ControlPlane.assign`."""

    def __init__(self, what: str, *, status: int | None = None) -> None:
        super().__init__(f"the assign POST ended with {what}", status=status)
        self.what = what
