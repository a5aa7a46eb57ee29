"""Kernels on Google Colab: a runtime assigned through the control plane, its Jupyter server
reached through Colab's runtime proxy.

The backend keeps what Colab needs while the session is open:

- a keep-alive ping every 60 s (kernel traffic alone does not keep a runtime), a read time-out
  counting as success;
- a fresh runtime proxy token 5 minutes before the old one expires (half its lifetime before,
  for tokens that live less than 10 minutes; never more often than every 5 s), and at once when
  the proxy answers 404 or 401 (which after expiry means "refresh", never "runtime lost");
  requests that fail together share one refresh;
- the release of the runtime when the session closes, unless it attached to a runtime that
  was already there (``endpoint=``); a runtime that cannot be released is never left behind in
  silence (:class:`~colabremote.exceptions.RuntimeNotReleasedWarning`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import warnings
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httpx

from .._colab.control import ControlPlane
from .._colab.endpoints import ColabEndpoints
from .._colab.images import (
    DEFAULT_IMAGE_PYTHON,
    MATCH,
    check_runtime_version,
    choose_image,
    python_label,
)
from .._colab.models import (
    Assignment,
    RuntimeProxyInfo,
    SubscriptionState,
    SubscriptionTier,
    check_accelerator,
)
from .._colab.public_api import PublicApi
from .._http import TokenSource
from .._info import RuntimeInfo
from .._validation import seconds, text
from .._workspace.secrets import secret_reply
from ..exceptions import (
    AuthError,
    ColabError,
    ColabRemoteError,
    ColabTermsWarning,
    ConfigurationError,
    ConnectionLost,
    RuntimeGone,
    RuntimeNotReleasedWarning,
    ServerError,
)
from .base import PortRoute, Progress
from .jupyter import JupyterBackend

if TYPE_CHECKING:
    from .._workspace.terminal import Channel

log = logging.getLogger("colabremote.colab")

#: What ``allow_credentials=`` names, and the Colab auth type each one lets the runtime ask for.
CREDENTIAL_KINDS = {"drive": "dfs_ephemeral", "google": "auth_user_ephemeral"}
_KIND_OF = {auth_type: kind for kind, auth_type in CREDENTIAL_KINDS.items()}
_WHAT = {
    "drive": "your Google Drive (drive.mount())",
    "google": "your Google account's credentials (google.colab.auth.authenticate_user())",
}

KEEP_ALIVE_SECONDS = 60.0
#: The shortest keep-alive interval a session may ask for: more often only loads Colab.
MIN_KEEP_ALIVE_SECONDS = 1.0
#: How long an assign POST may take before it is given up and reconciled (Colab's can be slow).
ASSIGN_TIMEOUT = 200.0
#: Refresh the runtime proxy token this long before it expires (at most half its lifetime).
PROXY_REFRESH_MARGIN = 300.0
#: Scheduled proxy token refreshes are at least this far apart, however short the lifetime.
PROXY_REFRESH_MIN_INTERVAL = 5.0
CLIENT_AGENT = "colabremote"
#: The longest the plan check at open may take; past it, the session opens without a notice.
PLAN_CHECK_SECONDS = 10.0
#: Where Colab states what runtimes may be used for.
COLAB_FAQ = "https://research.google.com/colaboratory/faq.html"
COLAB_TERMS = "https://colab.research.google.com/terms"


def proxy_refresh_delay(lifetime: float | None, left: float | None) -> float:
    """Seconds until the scheduled refresh of a proxy token that lived ``lifetime`` seconds when
    issued and has ``left`` seconds to go (``None``: unknown). The margin is 5 minutes, or half
    the lifetime when that is shorter, so a short-lived token is not refreshed in a loop."""
    if left is None:
        return 600.0
    return max(PROXY_REFRESH_MIN_INTERVAL, left - _margin(lifetime))


@runtime_checkable
class _WithFallback(Protocol):
    """Credentials made for this backend alone (``_LazyCredentials``): they know others to try
    when theirs stop working, and the backend closes them with itself."""

    def fallback(self) -> Any: ...

    async def aclose(self) -> None: ...


class ColabBackend(JupyterBackend):
    """A Colab runtime: assigned (or attached to) at start, released at close."""

    name = "colab"
    use_v1 = False  # Colab's proxy speaks the legacy kernel WebSocket protocol
    releases_at_exit = True  # an assigned runtime is billed until it is released
    kernel_path = "content"  # kernels work in /content, as in Colab notebooks

    def __init__(
        self,
        *,
        credentials: TokenSource,
        gpu: str | None = None,
        tpu: str | None = None,
        high_memory: bool = False,
        runtime_version: str | None = None,
        endpoint: str | None = None,
        release: bool | None = None,
        endpoints: ColabEndpoints | None = None,
        keep_alive_seconds: float = KEEP_ALIVE_SECONDS,
        assign_timeout: float = ASSIGN_TIMEOUT,
        control: ControlPlane | None = None,
        api: str = "v1",
        allow_credentials: Iterable[str] = (),
    ) -> None:
        text("gpu", gpu, what="a GPU model", example="'T4'", optional=True)
        text("tpu", tpu, what="a TPU model", example="'V5E1'", optional=True)
        text(
            "runtime_version", runtime_version, what="a version", example="'2025.07'", optional=True
        )
        text(
            "endpoint",
            endpoint,
            what="a runtime's endpoint",
            example="'gpu-t4-s-abc'",
            optional=True,
        )
        for name, flag in (("high_memory", high_memory), ("release", release)):
            if not isinstance(flag, bool) and not (name == "release" and flag is None):
                raise ConfigurationError(f"{name}={flag!r} is not a bool; pass True or False")
        keep_alive = seconds(
            "keep_alive_seconds",
            keep_alive_seconds,
            minimum=MIN_KEEP_ALIVE_SECONDS,
            optional=False,
            example="60",
        )
        assign_limit = seconds("assign_timeout", assign_timeout, optional=False, example="300")
        gpu, tpu = check_accelerator(gpu, tpu)  # a typo fails here, not after assigning
        if isinstance(allow_credentials, str):
            allow_credentials = (allow_credentials,)
        unknown = sorted(set(allow_credentials) - set(CREDENTIAL_KINDS))
        if unknown:
            raise ConfigurationError(
                f"allow_credentials={unknown!r} names unknown credentials; use any of "
                f"{sorted(CREDENTIAL_KINDS)}"
            )
        #: Credentials the user let code on the runtime ask for; others need a yes on a terminal.
        self.allowed_credentials = set(allow_credentials)
        if api not in ("v1", "v1beta"):
            raise ConfigurationError(
                f"api={api!r} is unknown; use 'v1' (Colab's /tun/m calls, the default) or "
                "'v1beta' (the public runtimes API)"
            )
        self.api = api
        self.gpu = gpu.upper() if gpu else None
        self.tpu = tpu.upper() if tpu else None
        self.high_memory = high_memory
        #: As given: an image label, "match", or None (the default image).
        self.runtime_version = check_runtime_version(runtime_version)
        self.endpoint = endpoint
        #: Release the runtime at close: yes for one we assigned, no for one we attached to.
        self.release = (endpoint is None) if release is None else release
        self.keep_alive_seconds = keep_alive
        # Both clients sign requests with the credentials; after a 401 they drop the cached
        # access token, so the retry signs in with a new one.
        self.control = control or ControlPlane(
            credentials,
            endpoints=endpoints or ColabEndpoints.production(),
            assign_timeout=assign_limit,
        )
        self.public = PublicApi(credentials, endpoints=self.control.endpoints)
        self._credentials = credentials
        self.runtime_id: str | None = None
        #: Set when Colab says the runtime is no longer ours (released elsewhere, reclaimed).
        self.gone: RuntimeGone | None = None
        self.assignment: Assignment | None = None
        self._proxy: RuntimeProxyInfo | None = None
        self._proxy_lifetime: float | None = None  # seconds the current token had when issued
        self._tasks: list[asyncio.Task[None]] = []
        self._refresh_lock = asyncio.Lock()
        #: Forwarded ports: each one's proxy URL and token, and the token's lifetime when issued.
        self._ports: dict[int, tuple[RuntimeProxyInfo, float | None]] = {}
        self._closed = False
        # The Jupyter side is filled in once the runtime's proxy URL is known.
        super().__init__("http://colab.invalid")

    # -- the runtime -----------------------------------------------------------------------

    @property
    def accelerator_label(self) -> str:
        return self.gpu or self.tpu or "CPU"

    async def start(self, progress: Progress) -> None:
        self.public.endpoints = self.control.endpoints
        await self.control.sign_in()  # no sign-in: one SignInRequired, before any request
        if self.api == "v1beta":
            await self._start_v1beta(progress)
        elif self.endpoint is not None:
            progress(f"attaching to Colab runtime {self.endpoint}")
            self.assignment = await self._find_assignment(self.endpoint)
            self._proxy = await self.control.refresh_proxy_token(self.endpoint)
        else:
            image = await self._choose_image(progress)
            progress(f"assigning a Colab runtime ({self.accelerator_label})")
            variant = "GPU" if self.gpu else "TPU" if self.tpu else None
            assignment, _new = await self.control.assign(
                variant=variant,
                accelerator=self.gpu or self.tpu,
                high_memory=self.high_memory,
                runtime_version=image,
            )
            if assignment.runtime_version is None and image is not None:
                assignment = replace(assignment, runtime_version=image)  # v1 does not echo it
            self.assignment = assignment
            self.endpoint = assignment.endpoint
            self._proxy = assignment.proxy
            if self._proxy is None or self._proxy.needs_refresh(margin=0):
                self._proxy = await self.control.refresh_proxy_token(assignment.endpoint)
        if self._proxy is None:
            raise ColabError(f"Colab gave runtime {self.endpoint} no proxy address")
        self._use_proxy(self._proxy)
        self._tasks = [
            asyncio.get_running_loop().create_task(self._keep_alive_forever()),
            asyncio.get_running_loop().create_task(self._refresh_forever()),
        ]
        progress(f"Colab runtime {self.endpoint} assigned ({self.accelerator_label})")
        try:
            await self._note_free_tier()
            await self._start_kernel(progress)
        except BaseException:
            await self.close()
            raise

    async def _choose_image(self, progress: Progress) -> str | None:
        """The image label to ask for: ``runtime_version=`` checked against the labels Colab
        offers (its live list; colabremote's table when that cannot be read), "match" resolved
        to the image that runs this Python."""
        if self.runtime_version is None:
            return None
        try:
            offered: list[str] | None = await self.control.runtime_versions()
        except ColabError as exc:
            log.info("could not read the runtime versions Colab offers (%s); using the table", exc)
            offered = None
        image = choose_image(self.runtime_version, offered)
        if self.runtime_version == MATCH:
            local = python_label(sys.version_info)
            if image is not None:
                progress(f"runtime_version='match': image {image} runs Python {local}")
            elif sys.version_info[:2] == DEFAULT_IMAGE_PYTHON:
                progress(f"runtime_version='match': the default image runs Python {local}")
            else:
                progress(
                    f"runtime_version='match': no image Colab offers runs Python {local}; "
                    "using the default image"
                )
        return image

    async def _note_free_tier(self) -> None:
        """Say once, at open, when the account runs Colab free of charge: Colab's terms
        restrict what such runtimes may do. It never blocks the session: a plan Colab does not
        tell within PLAN_CHECK_SECONDS is taken as paid."""
        try:
            free = await asyncio.wait_for(self._runs_free(), PLAN_CHECK_SECONDS)
        except (ColabRemoteError, asyncio.TimeoutError) as exc:
            log.debug("could not tell the account's Colab plan: %r", exc)
            return
        if not free:
            return
        message = (
            f"Colab runtime {self.endpoint}: this account uses Colab's free tier (no Pro or "
            "Pro+ subscription, no paid compute units). Colab's terms restrict what free "
            "runtimes may be used for, remote control and proxies among them: see "
            f"{COLAB_FAQ} and the Colab Additional Terms of Service, {COLAB_TERMS}. The "
            "Colab backend is meant for paid plans: Colab Pro, Pro+ or Pay As You Go."
        )
        log.info("%s", message)
        warnings.warn(message, ColabTermsWarning, stacklevel=2)

    async def _runs_free(self) -> bool:
        """Whether the account is on the free tier without paid compute units (Pay As You Go
        is paid). The assignment's tier answers for Pro and Pro+ without a request; otherwise
        the v1beta subscription (with ``api="v1beta"``) or user info, with the balance."""
        assigned = self.assignment.subscription_tier if self.assignment else None
        if assigned is not None and assigned.is_paid:
            return False
        if self.api == "v1beta":
            tier = await self.public.subscription_tier()
            return not tier.is_paid and _free(tier, await self._paid_balance())
        try:
            info = await self.control.user_info(consumption=True)
        except (ColabError, AuthError) as exc:  # Colab may refuse it to other OAuth clients
            log.debug("user info is not available to this client: %s", exc)
        else:
            if info.subscription_tier is not SubscriptionTier.UNSPECIFIED:
                return _free(info.subscription_tier, info.paid_compute_units_balance)
        # The assignment's subTier 0 also means "unknown": free for an unsubscribed account.
        state = self.assignment.subscription_state if self.assignment else None
        unsubscribed = state in (None, SubscriptionState.UNSUBSCRIBED)
        if assigned is not SubscriptionTier.FREE or not unsubscribed:
            return False
        return _free(assigned, (await self.control.ccu_info()).current_balance)

    async def _paid_balance(self) -> float | None:
        """The compute units bought: from user info, else from /tun/m/ccu-info."""
        try:
            return (await self.control.user_info(consumption=True)).paid_compute_units_balance
        except (ColabError, AuthError):
            return (await self.control.ccu_info()).current_balance

    async def _start_v1beta(self, progress: Progress) -> None:
        """Create (or find, with ``endpoint=``) a runtime through the public v1beta API."""
        if self.endpoint is not None:
            progress(f"attaching to Colab runtime {self.endpoint}")
            found = [r for r in await self.public.list_runtimes() if r.endpoint == self.endpoint]
            if not found:
                raise RuntimeGone(f"no Colab runtime {self.endpoint!r} is assigned to this account")
            runtime = found[0]
        else:
            image = await self._choose_image(progress)
            progress(f"creating a Colab runtime ({self.accelerator_label}) with the v1beta API")
            runtime = await self.public.create_runtime(
                variant="GPU" if self.gpu else "TPU" if self.tpu else None,
                accelerator=self.gpu or self.tpu,
                high_memory=self.high_memory,
                version=image,
            )
        if runtime.endpoint is None:
            raise ColabError(f"Colab runtime {runtime.runtime_id} has no endpoint yet")
        self.runtime_id = runtime.runtime_id
        self.endpoint = runtime.endpoint
        self.assignment = Assignment(
            endpoint=runtime.endpoint,
            accelerator=runtime.accelerator,
            variant=runtime.variant,
            machine_shape=runtime.shape,
            proxy=runtime.proxy,
            runtime_version=runtime.version,
        )
        self._proxy = runtime.proxy or (await self.public.get_runtime(runtime.runtime_id)).proxy

    async def _find_assignment(self, endpoint: str) -> Assignment:
        for assignment in await self.control.list_assignments():
            if assignment.endpoint == endpoint:
                return assignment
        raise RuntimeGone(
            f"no Colab runtime {endpoint!r} is assigned to this account "
            "(`colabremote runtimes` lists the ones that are)"
        )

    def _use_proxy(self, proxy: RuntimeProxyInfo) -> None:
        """Point the Jupyter client at the proxy, with the current token in every request."""
        self._proxy = proxy
        self._proxy_lifetime = proxy.seconds_left()
        self.url = proxy.url.rstrip("/")
        self._headers = {
            "X-Colab-Runtime-Proxy-Token": proxy.token,
            "X-Colab-Client-Agent": CLIENT_AGENT,
        }
        self._http.base_url = httpx.URL(self.url)
        self._http.headers.update(self._headers)

    async def refresh_proxy(self, stale: str | None = None) -> None:
        """Get a new runtime proxy token (one refresh at a time). With ``stale``, the token a
        request failed with: if another refresh replaced it meanwhile, that one is used."""
        assert self.endpoint is not None
        async with self._refresh_lock:
            if stale is not None and self._proxy is not None and self._proxy.token != stale:
                return
            if self.runtime_id is not None:
                proxy = (await self.public.get_runtime(self.runtime_id)).proxy
                if proxy is None:
                    raise RuntimeGone(f"Colab runtime {self.runtime_id} has no connection info")
            else:
                proxy = await self.control.refresh_proxy_token(self.endpoint)
            self._use_proxy(proxy)
            log.info("refreshed the runtime proxy token of %s", self.endpoint)

    async def _refresh_forever(self) -> None:
        while True:
            proxy = self._proxy
            left = proxy.seconds_left() if proxy is not None else None
            await asyncio.sleep(proxy_refresh_delay(self._proxy_lifetime, left))
            try:
                await self.refresh_proxy()
            except RuntimeGone as exc:
                self._lost(exc)
                return
            except Exception as exc:  # noqa: BLE001 - try again soon; the 404 path also refreshes
                log.warning("refreshing the runtime proxy token failed: %s", exc)
                await asyncio.sleep(30)

    async def port_route(self, port: int, *, fresh: bool = False) -> PortRoute:
        """Colab's proxy for ``port``: a URL and token of its own (``runtime-proxy-token`` with
        ``port=``), refreshed as the Jupyter port's is, before it expires (or when refused)."""
        assert self.endpoint is not None
        async with self._refresh_lock:
            held = self._ports.get(port)
            if held is not None and not fresh:
                info, lifetime = held
                if not info.needs_refresh(margin=_margin(lifetime)):
                    return _route(info)
            info = await self.control.port_proxy_token(self.endpoint, port)
            self._ports[port] = (info, info.seconds_left())
            if held is not None:
                log.info("refreshed the proxy token of port %d on %s", port, self.endpoint)
            return _route(info)

    def _lost(self, exc: RuntimeGone) -> None:
        log.warning("Colab runtime %s is gone: %s", self.endpoint, exc)
        self.gone = RuntimeGone(
            f"Colab runtime {self.endpoint} is no longer assigned to this account (released "
            "elsewhere, or reclaimed by Colab); open a new session for a new runtime"
        )

    async def restart(self, progress: Progress) -> None:
        if self.gone is not None:
            raise self.gone
        await super().restart(progress)

    async def _keep_alive_forever(self) -> None:
        assert self.endpoint is not None
        while True:
            try:
                await self.control.keep_alive(self.endpoint)
            except RuntimeGone as exc:
                self._lost(exc)
                return
            except Exception as exc:  # noqa: BLE001 - one missed ping is not fatal
                log.warning("keep-alive for %s failed: %s", self.endpoint, exc)
            await asyncio.sleep(self.keep_alive_seconds)

    # -- requests from code on the runtime -------------------------------------------------

    async def answer_colab_request(self, msg: Any) -> dict[str, Any]:
        """Answer a ``colab_request`` the way Colab's own clients do: ``userdata.get(name)``
        (``GetSecret``) from the session's ``secrets=``; ``drive.mount()`` and ephemeral Google
        auth by propagating the user's credentials to the runtime.

        Code on the runtime is not trusted with the user's Google credentials by default: the
        kind asked for must be in ``allow_credentials=``, or the user says yes on a terminal
        (once per session). Then a dry run says whether Google's consent page is needed; if so
        it is shown, and once the user confirms, the credentials are propagated. The reply's
        value is ``{}`` on success; a failure raises, and the kernel client answers with the
        error.
        """
        content = getattr(msg, "content", {}) or {}
        metadata = getattr(msg, "metadata", {}) or {}
        request = content.get("request") or {}
        if metadata.get("colab_request_type") == "GetSecret":
            # The user named these secrets for this session: no consent to ask for.
            return {"data": secret_reply(self.secrets, request)}
        auth_type = request.get("authType") if isinstance(request, dict) else None
        if metadata.get("colab_request_type") != "request_auth" or auth_type not in (
            "dfs_ephemeral",
            "auth_user_ephemeral",
        ):
            raise ColabError(f"this client does not handle the request {request!r}")
        assert self.endpoint is not None
        await self._permit(_KIND_OF[auth_type])
        check = await self.control.credentials_propagation(self.endpoint, auth_type, dry_run=True)
        if not check.success:
            if check.unauthorized_redirect_uri is None:
                raise ColabError("Colab refused to propagate credentials to the runtime")
            await asyncio.to_thread(self.consent, check.unauthorized_redirect_uri)
        done = await self.control.credentials_propagation(self.endpoint, auth_type, dry_run=False)
        if not done.success:
            raise ColabError("Colab did not propagate credentials to the runtime")
        return {}

    async def _permit(self, kind: str) -> None:
        """Refuse unless the user allowed this kind of credentials for this session."""
        if kind in self.allowed_credentials:
            return
        if await asyncio.to_thread(self.ask, kind):
            self.allowed_credentials.add(kind)
            return
        raise ColabError(
            f"code on the runtime asked for {_WHAT[kind]}, which this session does not allow; "
            f"if you trust the code you run there, open the session with "
            f"allow_credentials={{{kind!r}}}"
        )

    def ask(self, kind: str) -> bool:
        """Ask the user on the terminal whether the runtime may have these credentials."""
        import sys

        if not sys.stdin or not sys.stdin.isatty():
            return False
        sys.stderr.write(
            f"colabremote: code on Colab runtime {self.endpoint} asks for {_WHAT[kind]}.\n"
            "colabremote: anything running there could then use them. Allow it for this "
            "session? [y/N] "
        )
        sys.stderr.flush()
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    def consent(self, url: str) -> None:
        """Ask the user to grant access in a browser, then wait for them (terminal only)."""
        import sys

        if not sys.stdin or not sys.stdin.isatty():
            raise ColabError(
                "the runtime asked for Google Drive access, which needs consent in a browser: "
                f"open {url}, grant access, and run the call again"
            )
        sys.stderr.write(f"colabremote: grant the runtime access in your browser:\n  {url}\n")
        sys.stderr.write("colabremote: press Enter when done... ")
        sys.stderr.flush()
        sys.stdin.readline()

    # -- the Jupyter server behind the proxy -----------------------------------------------

    async def _request(self, method: str, path: str, doing: str, **kwargs: Any) -> httpx.Response:
        """A request through the proxy; an expired token (404/401) is refreshed once first."""
        sent = self._proxy.token if self._proxy is not None else None
        try:
            return await super()._request(method, path, doing, **kwargs)
        except ServerError as exc:
            if exc.status not in (401, 404):
                raise
        await self.refresh_proxy(stale=sent)
        return await super()._request(method, path, doing, **kwargs)

    async def is_alive(self) -> bool:
        """Whether the kernel is there, asked through the proxy (refreshing an expired token)."""
        if self.kernel_id is None or self.gone is not None:
            return False
        try:
            response = await self._request("GET", self._kernel_path(), "checking the kernel")
        except RuntimeGone as exc:
            self._lost(exc)
            return False
        except (ServerError, ConnectionLost):
            return False
        state: Any = response.json().get("execution_state")
        return bool(state != "dead")

    async def connect(self) -> Any:
        sent = self._proxy.token if self._proxy is not None else None
        try:
            return await super().connect()
        except (ServerError, ConnectionLost) as exc:
            if isinstance(exc, ServerError) and exc.status not in (401, 404):
                raise
        await self.refresh_proxy(stale=sent)
        return await super().connect()

    async def open_terminal(self) -> Channel:
        """The runtime's ``/colab/tty`` (a shell inside tmux), at the proxy's origin with the
        proxy token in the header, as Colab's own extension opens it."""
        from .._workspace.terminal import ColabTtyChannel, colab_tty_url

        sent = self._proxy.token if self._proxy is not None else None
        try:
            return await ColabTtyChannel.open(colab_tty_url(self.url), self._headers)
        except ServerError as exc:
            if exc.status not in (401, 404):
                raise
        await self.refresh_proxy(stale=sent)
        return await ColabTtyChannel.open(colab_tty_url(self.url), self._headers)

    def keep_kernel(self) -> bool:
        self.release = False
        return super().keep_kernel()

    async def close(self) -> None:
        if self._closed:
            return  # a failed start closes at once, and the session's teardown again
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        endpoint = self.endpoint if self.release and self.assignment is not None else None
        if endpoint is not None:
            self._owns_kernel = False  # releasing the runtime ends its kernel; no DELETE first
        failure: Exception | None = None
        try:
            with contextlib.suppress(Exception):  # the kernel (if any) and the HTTP client
                await asyncio.wait_for(super().close(), 15)
        finally:
            try:
                if endpoint is not None:
                    try:
                        await self._release(endpoint)
                    except Exception as exc:  # noqa: BLE001 - said out loud below
                        failure = exc
            finally:
                await self.control.aclose()
                await self.public.aclose()
                if isinstance(self._credentials, _WithFallback):
                    await self._credentials.aclose()
        if endpoint is not None and failure is not None:
            _not_released(endpoint, failure)

    async def _release(self, endpoint: str) -> None:
        """Give the runtime back. A 401 is retried with a fresh access token first (BearerAuth),
        which recovers every kind of credentials that can be refreshed; when the sign-in still
        fails (a token from the environment), with the stored sign-in, if there is one."""
        try:
            await self._release_with(self.control, self.public, endpoint)
        except AuthError:
            credentials = self._credentials
            fresh = credentials.fallback() if isinstance(credentials, _WithFallback) else None
            if fresh is None:
                raise
            log.info("releasing Colab runtime %s with the stored sign-in", endpoint)
            control = ControlPlane(fresh, endpoints=self.control.endpoints)
            public = PublicApi(fresh, endpoints=self.control.endpoints)
            try:
                await self._release_with(control, public, endpoint)
            finally:
                await control.aclose()
                await public.aclose()
                await fresh.aclose()
        log.info("released Colab runtime %s", endpoint)

    async def _release_with(self, control: ControlPlane, public: PublicApi, endpoint: str) -> None:
        if self.runtime_id is not None:
            await public.delete_runtime(self.runtime_id)
        else:
            await control.unassign(endpoint)

    def runtime_info(self) -> RuntimeInfo:
        d = self.describe()
        return RuntimeInfo(
            endpoint=str(d["endpoint"]),
            accelerator=str(d["accelerator"]),
            variant=d["variant"],
            machine_shape=d["machine_shape"],
            runtime_version=d["runtime_version"],
            idle_timeout=d["idle_timeout"],
            proxy_url=d["proxy_url"],
            release_on_close=bool(d["release_on_close"]),
        )

    def describe(self) -> dict[str, Any]:
        """What the runtime is; never the proxy token."""
        assignment = self.assignment
        proxy = self._proxy
        expires = proxy.expires_at if proxy is not None else None
        return {
            "backend": self.name,
            "endpoint": self.endpoint,
            "accelerator": assignment.accelerator if assignment else self.accelerator_label,
            "variant": assignment.variant.value if assignment else None,
            "machine_shape": assignment.machine_shape.value if assignment else None,
            "runtime_version": assignment.runtime_version if assignment else None,
            "idle_timeout": assignment.idle_timeout if assignment else None,
            "proxy_url": proxy.url if proxy else None,
            "proxy_token_expires": expires.astimezone(timezone.utc).isoformat()
            if isinstance(expires, datetime)
            else None,
            "kernel_id": self.kernel_id,
            "release_on_close": self.release,
            "api": self.api,
        }


def _margin(lifetime: float | None) -> float:
    """How long before expiry a token is refreshed: 5 minutes, or half its lifetime if shorter."""
    return PROXY_REFRESH_MARGIN if lifetime is None else min(PROXY_REFRESH_MARGIN, lifetime / 2)


def _route(info: RuntimeProxyInfo) -> PortRoute:
    return PortRoute(
        info.url.rstrip("/"),
        {"X-Colab-Runtime-Proxy-Token": info.token, "X-Colab-Client-Agent": CLIENT_AGENT},
    )


def _not_released(endpoint: str, exc: BaseException) -> None:
    """Say, once and loudly, that a runtime we assigned is still assigned (and billed), and how
    to release it. Our errors' messages are secret-free; others are named by type only."""
    why = str(exc) if isinstance(exc, ColabRemoteError) else type(exc).__name__
    message = (
        f"Colab runtime {endpoint} could not be released ({why}); it stays assigned, and "
        f"billed, until it is. Release it with: colabremote runtimes release {endpoint}"
    )
    log.error("%s", message)
    warnings.warn(message, RuntimeNotReleasedWarning, stacklevel=2)


def _free(tier: SubscriptionTier, paid_balance: float | None) -> bool:
    """The free tier, without compute units bought (which make it Pay As You Go)."""
    return tier is SubscriptionTier.FREE and not (paid_balance or 0) > 0
