"""ColabEmulator: the Colab service on 127.0.0.1, for tests without a Google account.

```python
with ColabEmulator() as emu:
    emu.url            # http://127.0.0.1:<port>: {COLAB}, {GAPI}, {PUBLIC} and OAuth at once
    emu.client_id      # a registered OAuth client (emu.write_client_secrets(path) for the JSON)
    emu.faults         # switches for the failures the real service shows
    emu.requests       # what clients sent, secrets redacted
```

It is a real server, not a mock: a tornado application on its own thread and event loop, speaking
the control-plane protocol of shared/colab-protocol.md and shared/colab-cli-findings.md. Every
assigned runtime gets a runtime proxy on its own port, in front of a real jupyter_server (started
on first use) whose kernels can ``from google.colab import drive; drive.mount(...)``.

``ColabEmulator(clock=ManualClock())`` puts every expiry, TTL and idle timer on a clock the test
moves with ``clock.advance(seconds)``; ``emu.tick()`` then releases what went idle and completes
due operations at once (see ``_clock.py``). The default is the real clock.

Module map: ``_server.py`` serves from a thread of its own; ``handlers/`` answers the main origin,
one module per service role; ``_proxy.py`` is a runtime's proxy; ``_model.py`` the state,
``_accounts.py`` the sign-in state, ``_faults.py`` the fault switches, ``_redact.py`` what keeps
secrets out of logs, ``_clock.py`` the clock; ``backend.py`` is ``Session(backend="emulator")``.

``ColabEmulator(verbose=True)`` logs every request it serves, and request errors, on stderr;
by default it is quiet. ``ColabEmulator(python="/path/to/python3.13")`` runs the default image's
kernels in that interpreter (it needs ipykernel and cloudpickle), as Colab's own Python version
differs from yours. ``images={"2025.07": "/path/to/python3.11", ...}`` are the pinned runtime
images it offers (the ``runtime_version_names`` experiment flag; a runtime asked for with
``runtime_version_label``/``version``) and the interpreter each one's kernels run (None: the one
running the emulator). By default it offers Colab's labels (``_colab/images.py``), all run by the
emulator's own interpreter; a label it does not offer gets the default image, as the service's
answer to one is not known.

A runtime's files (its kernels' working directory, the contents API's root) are in ``/content``,
as on Colab, when the emulator can create that folder: it never takes one that existed, one
runtime on the machine has it at a time, and it is deleted when the runtime is released. Other
runtimes get a temp folder, with an INFO line on ``colabremote.emulator`` saying why (see
``_content.py``). ``content_root="temp"`` always uses temp folders, and an absolute path stands
in for ``/content``; the default comes from ``COLABREMOTE_EMULATOR_CONTENT_ROOT`` ("auto").

Settings (plain attributes; change them at any time):

- ``access_token_ttl``: lifetime of OAuth access tokens, seconds.
- ``proxy_token_ttl``: lifetime of runtime proxy tokens, seconds (expired ones get 404).
- ``idle_timeout``: release a runtime after this many seconds without a keep-alive (None: never);
  ``emu.runtime(endpoint).idle_timeout`` overrides it for one runtime.
- ``activity_counts_as_liveness``: proxied traffic resets the idle timer too (0.7.5 CLI model).
- ``max_assignments``: assignments per user; one more gets 412.
- ``subscription_tier`` (``FREE``, ``PRO``, ``PRO_PLUS``), ``eligible_accelerators``,
  ``ineligible_accelerators``: what a user may assign (others get 400, no entitlement).
- ``unavailable_accelerators``: models with no free machine now (assign gets 503).
- ``create_runtime_delay``: seconds a v1beta CreateRuntime operation takes.
- ``wait_operation_cap``: the longest a WaitOperation call blocks, seconds.
- ``require_authuser``: refuse {COLAB} calls without ``authuser`` (400).
- ``colab_requires_colaboratory_scope``: also require the colaboratory scope on ``/tun/m``.
- ``drive_authorized_by_default``: credentials propagation succeeds without a consent step.
- ``gapi_allowed`` / ``public_api_allowed``: False makes every {GAPI} / {PUBLIC} call answer 403
  (``USER_PROJECT_DENIED`` / not allowlisted), as for a third-party OAuth client; ``/tun/m``
  keeps working, so clients can test their fallback to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from ..._colab.images import IMAGE_PYTHONS
from .._jupyter import JupyterServer
from ._accounts import Accounts
from ._clock import Clock, ManualClock, SystemClock
from ._content import COLAB_CONTENT, HeldRoot, claim, content_root_setting, explain_fallback
from ._faults import Faults
from ._kernel_site import write_kernel_site
from ._logs import VerboseLogs
from ._model import (
    HIGH_MEM_ONLY,
    AccessToken,
    Operation,
    RefreshToken,
    RequestRecord,
    Runtime,
    User,
    XsrfToken,
    normalize_scopes,
)
from ._ports import PortProxy
from ._proxy import RuntimeProxy
from ._server import ServerThread
from .handlers import application

__all__ = ["Clock", "ColabEmulator", "Faults", "ManualClock", "RequestRecord", "Runtime"]


class ColabEmulator:
    """The Colab control plane, public API, OAuth and runtime proxies on 127.0.0.1."""

    def __init__(
        self,
        *,
        user_email: str = "test.user@example.com",
        user_name: str = "Test User",
        access_token_ttl: float = 3600.0,
        proxy_token_ttl: float = 3600.0,
        idle_timeout: float | None = None,
        max_assignments: int = 3,
        subscription_tier: str = "PRO",
        clock: Clock | None = None,
        verbose: bool = False,
        python: str | None = None,
        images: Mapping[str, str | None] | None = None,
        content_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self._content_root_setting = content_root_setting(content_root)
        #: The access log and request errors on stderr (quiet by default).
        self.verbose = verbose
        #: The default image's kernel interpreter (it needs ipykernel); None: this one.
        self.python = python
        #: The pinned images offered, label -> their kernels' interpreter (None: this one).
        self.images: dict[str, str | None] = (
            dict.fromkeys(IMAGE_PYTHONS) if images is None else dict(images)
        )
        self._verbose_logs = VerboseLogs()
        #: What every expiry, TTL and idle decision reads (a ManualClock in tests).
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.user_email = user_email
        self.user_name = user_name
        self.access_token_ttl = access_token_ttl
        self.proxy_token_ttl = proxy_token_ttl
        self.idle_timeout = idle_timeout
        self.activity_counts_as_liveness = False
        self.max_assignments = max_assignments
        self.subscription_tier = subscription_tier
        self.eligible_accelerators: dict[str, list[str]] = {
            "GPU": ["T4", "L4", "A100"],
            "TPU": ["V28", "V5E1", "V6E1"],
        }
        self.ineligible_accelerators: dict[str, list[str]] = {"GPU": ["H100"], "TPU": []}
        self.unavailable_accelerators: set[str] = set()
        self.compute_units = 100.0
        self.free_ccu_milli = 0
        self.create_runtime_delay = 0.3
        self.wait_operation_cap = 10.0
        self.require_authuser = False
        self.colab_requires_colaboratory_scope = False
        self.drive_authorized_by_default = False
        self.gapi_allowed = self.public_api_allowed = True
        #: Experiment flags; ``runtime_version_names`` is added from ``images`` when served.
        self.experiments: dict[str, Any] = {"enable_public_api_vscode": False}
        self.faults = Faults()

        self.accounts = Accounts(self.clock)
        self._xsrf: dict[str, XsrfToken] = {}
        self._runtimes: list[Runtime] = []
        self._proxies: dict[str, RuntimeProxy] = {}
        self._by_endpoint: dict[str, Runtime] = {}
        self._by_nbh: dict[tuple[str, str], Runtime] = {}
        self._by_runtime_id: dict[str, Runtime] = {}
        self._operations: dict[str, Operation] = {}
        self._pending_creates: dict[str, tuple[str, str, bool, str]] = {}
        self._keepalives: dict[str, int] = {}
        self._drive_grants: dict[str, tuple[str, str, str]] = {}
        self._drive_authorized: set[tuple[str, str, str]] = set()
        self._propagations: list[tuple[str, str, str]] = []
        self._log: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._jupyters: list[JupyterServer] = []
        self._jupyter_lock = threading.Lock()
        self._held_roots: dict[str, HeldRoot] = {}  # by endpoint: /content or content_root

        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._site_dir = ""
        self._server = ServerThread("colab-emulator")
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def content_root(self) -> str:
        """Where new runtimes keep their files: "auto" (/content when it can be made), "temp",
        or an absolute path used as /content would be. The constructor's None reads
        $COLABREMOTE_EMULATOR_CONTENT_ROOT."""
        return self._content_root_setting

    @content_root.setter
    def content_root(self, value: str | os.PathLike[str]) -> None:
        self._content_root_setting = content_root_setting(value)

    @property
    def port(self) -> int:
        """The port of the main origin (0 until started)."""
        return self._server.port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: every service, OAuth included ("" until started)."""
        return self._server.url

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> ColabEmulator:
        """Bind 127.0.0.1 on a free port and serve from a background thread."""
        if self._server.running:
            return self
        self._tmp = tempfile.TemporaryDirectory(prefix="colabremote-emulator-")
        self._site_dir = write_kernel_site(self._tmp.name)
        if self.verbose:
            self._verbose_logs.attach()

        def start_ticker(loop: asyncio.AbstractEventLoop) -> None:
            self._ticker = loop.create_task(self._tick())

        try:
            self._server.start(lambda: application(self), start_ticker)
        except BaseException:
            self._verbose_logs.detach()
            self._tmp.cleanup()
            self._tmp = None
            raise
        return self

    def stop(self) -> None:
        """Release every runtime, stop every jupyter_server and the server itself."""
        if not self._server.running:
            return
        try:
            self._server.stop(self._shutdown)
        finally:
            with self._jupyter_lock:
                servers, self._jupyters = self._jupyters, []
            with concurrent.futures.ThreadPoolExecutor(max(1, len(servers))) as pool:
                list(pool.map(lambda s: s.stop(), servers))
            for endpoint in list(self._held_roots):
                self._free_root(endpoint)
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
            self._verbose_logs.detach()

    async def _shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for rt in list(self._runtimes):
            await self._release(rt, "emulator stopped", stop_jupyter=False)
        for proxy in self._proxies.values():
            await proxy.close()
        for rt in self._runtimes:
            for port_proxy in rt.port_proxies.values():
                await port_proxy.stop()

    def __enter__(self) -> ColabEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url or "not started"
        return f"<ColabEmulator {state} runtimes={len(self.runtimes)}>"

    # --- OAuth --------------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self.accounts.client.client_id

    @property
    def client_secret(self) -> str:
        return self.accounts.client.client_secret

    @property
    def paste_redirect_uri(self) -> str:
        """The redirect URI of the paste flow: a page that shows the code."""
        return f"{self.url}/oauth/paste"

    def client_config(self) -> dict[str, Any]:
        """Google's installed-application client JSON, pointing at this emulator."""
        return {
            "installed": {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "project_id": "colab-emulator",
                "auth_uri": f"{self.url}/o/oauth2/v2/auth",
                "token_uri": f"{self.url}/token",
                "revoke_uri": f"{self.url}/revoke",
                "redirect_uris": ["http://127.0.0.1"],
            }
        }

    def write_client_secrets(self, path: str | os.PathLike[str]) -> str:
        """Write :meth:`client_config` as JSON (mode 0600) and return the path."""
        fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.client_config(), f, indent=2)
        return os.fspath(path)

    def mint_access_token(
        self,
        scopes: tuple[str, ...] | list[str] = (
            "email",
            "profile",
            "https://www.googleapis.com/auth/colaboratory",
        ),
        *,
        email: str | None = None,
        ttl: float | None = None,
    ) -> str:
        """An access token for the test user, without the browser dance."""

        def mint() -> str:
            token = self.accounts.mint(
                email or self.user_email,
                self.client_id,
                normalize_scopes(scopes),
                None,
                self.access_token_ttl if ttl is None else ttl,
            )
            return token.token

        return self._server.on_loop(mint)

    def token_scopes(self, access_token: str) -> frozenset[str]:
        """The scopes recorded for an access token (empty when unknown)."""
        token = self.accounts.access_tokens.get(access_token)
        return token.scopes if token is not None else frozenset()

    def _mint(
        self, email: str, client_id: str, scopes: frozenset[str], refresh: RefreshToken | None
    ) -> AccessToken:
        """An access token with the emulator's current ``access_token_ttl``."""
        return self.accounts.mint(email, client_id, scopes, refresh, self.access_token_ttl)

    def _user(self, email: str) -> User:
        """The user behind ``email``: the configured test user, or one named after the address."""
        name = self.user_name if email == self.user_email else email.partition("@")[0]
        return self.accounts.user(email, name)

    def issued_secrets(self) -> frozenset[str]:
        """Every secret the emulator has issued so far: OAuth client secrets, authorization codes,
        access and refresh tokens, runtime proxy tokens and each runtime's Jupyter token (spent,
        expired, revoked and released ones included).

        For tests that check no secret reaches a log line, an exception message or a repr.
        """

        def collect() -> frozenset[str]:
            found = self.accounts.secrets()
            for rt in self._runtimes:
                found.update(rt.proxy_tokens)
                found.update(rt.port_tokens)
                if rt.jupyter_token:
                    found.add(rt.jupyter_token)
            return frozenset(found)

        return self._server.on_loop(collect)

    # --- runtimes -----------------------------------------------------------------------------

    @property
    def runtimes(self) -> list[Runtime]:
        """Runtimes currently assigned (any user)."""
        return [rt for rt in self._runtimes if not rt.released]

    def runtime(self, endpoint: str) -> Runtime:
        """The runtime at ``endpoint``, released or not (KeyError when there was none)."""
        return self._by_endpoint[endpoint]

    def assigned_endpoints(self) -> set[str]:
        """The endpoints of runtimes assigned now (any user): for "nothing leaked" checks."""
        return {rt.endpoint for rt in self.runtimes}

    def keepalive_count(self, endpoint: str) -> int:
        return self._keepalives.get(endpoint, 0)

    @property
    def propagations(self) -> list[tuple[str, str, str]]:
        """(user, endpoint, authtype) of every real (not dry-run) credentials propagation."""
        return list(self._propagations)

    # --- events: what happens to a running session (the switches are in ``faults``) -----------

    def expire_proxy_tokens(self, endpoint: str | None = None) -> None:
        """Make every proxy token issued so far expired (the proxy then answers 404)."""

        def expire() -> None:
            now = self.clock.time() - 1
            for rt in self._runtimes:
                if endpoint is None or rt.endpoint == endpoint:
                    for token in rt.proxy_tokens:
                        rt.proxy_tokens[token] = now
                    for token, (port, _expiry) in rt.port_tokens.items():
                        rt.port_tokens[token] = (port, now)

        self._server.on_loop(expire)

    def revoke_access_tokens(self) -> None:
        """Make every OAuth access token issued so far stop working before its expiry (as after
        a password change); refresh tokens still work, so clients that refresh recover."""
        self._server.on_loop(self.accounts.revoke_access_tokens)

    def release(self, endpoint: str, reason: str = "released") -> None:
        """Take a runtime away, as when it is unassigned from Colab web."""
        self._server.call(self._release(self._by_endpoint[endpoint], reason))

    def drop_websockets(self, *, abrupt: bool = True) -> int:
        """Close every open kernel WebSocket on every proxy; return how many were closed.

        ``abrupt`` drops the TCP connection without a close frame, like a network failure;
        otherwise the sockets get close code 1012.
        """

        async def drop() -> int:
            return sum(proxy.drop_websockets(abrupt) for proxy in self._proxies.values())

        return self._server.call(drop())

    def restart_kernel(self, endpoint: str, kernel_id: str | None = None) -> None:
        """Restart a runtime's kernel from elsewhere, as Colab's "Restart session" does: a
        ``POST /api/kernels/{id}/restart`` through the runtime's proxy. Without ``kernel_id``,
        the runtime's only kernel. Returns once the kernel has restarted."""
        runtime = self._by_endpoint[endpoint]
        if runtime.released:
            raise ValueError(f"the runtime {endpoint} was released; it has no kernel to restart")
        token, _ = self._server.on_loop(
            lambda: runtime.issue_proxy_token(self.proxy_token_ttl, self.clock.time())
        )
        headers = {"X-Colab-Runtime-Proxy-Token": token}
        with httpx.Client(base_url=runtime.url, headers=headers, timeout=120) as http:
            if kernel_id is None:
                kernels = http.get("/api/kernels").raise_for_status().json()
                if len(kernels) != 1:
                    raise ValueError(
                        f"the runtime {endpoint} has {len(kernels)} kernels; name one with "
                        "kernel_id="
                    )
                kernel_id = str(kernels[0]["id"])
            http.post(f"/api/kernels/{kernel_id}/restart").raise_for_status()

    # --- assignment -------------------------------------------------------------------------

    def _live_runtimes(self, email: str) -> list[Runtime]:
        return [rt for rt in self._runtimes if rt.email == email and not rt.released]

    def _consumption_rate(self, email: str) -> float:
        rates = {"DEFAULT": 0.07, "GPU": 1.76, "TPU": 1.71}
        return round(sum(rates[rt.variant] for rt in self._live_runtimes(email)), 2)

    def _refusal(
        self, email: str, variant: str, accelerator: str, high_mem: bool
    ) -> tuple[int, str] | None:
        """Why this user may not have this machine now: (HTTP status, message), or None."""
        if variant == "DEFAULT":
            if accelerator != "NONE":
                return 400, f"accelerator {accelerator} needs a GPU or TPU variant"
        elif accelerator not in self.eligible_accelerators.get(variant, []):
            return 400, f"no entitlement for {variant} {accelerator}"
        if high_mem and self.subscription_tier == "FREE":
            return 400, "no entitlement for the high-memory shape"
        if accelerator in self.unavailable_accelerators:
            return 503, f"no {accelerator} machines available"
        if len(self._live_runtimes(email)) >= self.max_assignments:
            return 412, "too many assignments"
        return None

    def _create_runtime(
        self,
        email: str,
        nbh: str | None,
        variant: str,
        accelerator: str,
        high_mem: bool,
        version: str,
        runtime_id: str | None = None,
    ) -> Runtime:
        assert self._tmp is not None
        endpoint = "m-s-emu-" + secrets.token_hex(6)
        root = self._content_root(endpoint)
        if accelerator in HIGH_MEM_ONLY:
            high_mem = False  # single-shape machines
        rt = Runtime(
            endpoint=endpoint,
            email=email,
            runtime_id=runtime_id or ("emu-" + secrets.token_hex(6)),
            nbh=nbh,
            variant=variant,
            accelerator=accelerator,
            high_mem=high_mem,
            version=version,
            created=self.clock.time(),
            root_dir=root,
            last_alive=self.clock.monotonic(),
        )
        proxy = RuntimeProxy(rt, self)
        rt.url = proxy.url
        self._proxies[endpoint] = proxy
        self._runtimes.append(rt)
        self._by_endpoint[endpoint] = rt
        self._by_runtime_id[rt.runtime_id] = rt
        if nbh is not None:
            self._by_nbh[(email, nbh)] = rt
        return rt

    def _content_root(self, endpoint: str) -> str:
        """The new runtime's root: the folder ``content_root`` names when this runtime can
        have it, else a temp folder of its own."""
        assert self._tmp is not None
        wanted = COLAB_CONTENT if self.content_root == "auto" else self.content_root
        held = claim(wanted) if wanted != "temp" else None
        if isinstance(held, HeldRoot):
            self._held_roots[endpoint] = held
            return held.path
        root = os.path.join(self._tmp.name, "runtimes", endpoint, "content")
        os.makedirs(root)
        if held is not None:  # why this runtime cannot have the folder it wanted
            explain_fallback(endpoint, wanted, held, root)
        return root

    def _free_root(self, endpoint: str) -> None:
        """Delete a released runtime's held folder (its kernels have stopped)."""
        held = self._held_roots.pop(endpoint, None)
        if held is not None:
            held.remove()

    def _assignment_body(self, rt: Runtime, *, with_outcome: bool) -> dict[str, Any]:
        token, ttl = rt.issue_proxy_token(self.proxy_token_ttl, self.clock.time())
        tier = {"FREE": 0, "PRO": 1, "PRO_PLUS": 2}[self.subscription_tier]
        body: dict[str, Any] = {
            "accelerator": rt.accelerator,
            "endpoint": rt.endpoint,
            "fit": int(self.idle_timeout) if self.idle_timeout else 5400,
            "allowedCredentials": True,
            "sub": 1 if tier == 0 else 2,
            "subTier": tier,
            "variant": rt.variant_int,
            "machineShape": int(rt.high_mem),
            "runtimeProxyInfo": {
                "token": token,
                "tokenExpiresInSeconds": int(ttl) if float(ttl).is_integer() else ttl,
                "url": rt.url,
            },
        }
        if with_outcome:
            body["outcome"] = 4
        return body

    async def _release(self, rt: Runtime, reason: str, *, stop_jupyter: bool = True) -> None:
        if rt.released:
            return
        rt.released = True
        rt.release_reason = reason
        if rt.nbh is not None and self._by_nbh.get((rt.email, rt.nbh)) is rt:
            del self._by_nbh[(rt.email, rt.nbh)]
        while rt.port_proxies:
            await rt.port_proxies.popitem()[1].stop()
        proxy = self._proxies.get(rt.endpoint)
        if proxy is None:
            return
        jupyter = await proxy.retire()
        if jupyter is not None and stop_jupyter:
            with self._jupyter_lock:
                if jupyter in self._jupyters:
                    self._jupyters.remove(jupyter)
            await asyncio.get_running_loop().run_in_executor(None, jupyter.stop)
        if stop_jupyter and rt.endpoint in self._held_roots:  # else stop() frees it, later
            await asyncio.get_running_loop().run_in_executor(None, self._free_root, rt.endpoint)

    def image_python(self, label: str) -> str | None:
        """The interpreter that runs the kernels of image ``label`` ("": the default image;
        None: the emulator's own)."""
        if label and label in self.images:
            return self.images[label]
        return self.python

    async def _port_proxy(self, rt: Runtime, port: int) -> PortProxy:
        """The proxy of ``port`` on ``rt``, started on first use (on the server's loop)."""
        proxy = rt.port_proxies.get(port)
        if proxy is None:
            proxy = PortProxy(rt, self, port)
            await proxy.start()
            rt.port_proxies[port] = proxy
        return proxy

    def _start_jupyter(self, rt: Runtime) -> JupyterServer:
        """Start the runtime's jupyter_server (blocking; run in a worker thread)."""
        server = JupyterServer(
            nodelay=True,
            root_dir=rt.root_dir,
            extra_args=(
                "--ServerApp.kernel_spec_manager_class="
                "colabremote.testing._emulator._kernelspec.ColabSiteKernelSpecManager",
                f"--ColabSiteKernelSpecManager.colab_site={self._site_dir}",
                *(
                    [f"--ColabSiteKernelSpecManager.kernel_python={python}"]
                    if (python := self.image_python(rt.version))
                    else []
                ),
            ),
        )
        rt.jupyter_token = server.token
        server.start()
        with self._jupyter_lock:
            self._jupyters.append(server)
        return server

    # --- v1beta operations --------------------------------------------------------------------

    def _finish_operation(self, op: Operation, *, error: tuple[int, str, str] | None) -> None:
        op.done = True
        if error is not None:
            code, reason, message = error
            op.error = {
                "code": code,
                "message": message,
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": reason,
                        "domain": "colab.googleapis.com",
                    }
                ],
            }
        op.finished.set()

    def _complete_operation(self, op: Operation) -> None:
        variant, accelerator, high_mem, version = self._pending_creates.pop(op.op_id)
        fault = self.faults.take_assign()
        if fault is not None:
            status, outcome = fault.status, fault.outcome
            errors = {
                412: (9, "TOO_MANY_ACTIVE_RUNTIMES", "Too many active runtimes."),
                503: (9, "NO_RUNTIMES", f"No {accelerator} runtimes are available."),
                400: (7, "NOT_ENTITLED", f"Not entitled to {accelerator}."),
            }
            by_outcome = {
                1: (9, "QUOTA_EXCEEDED_USAGE_TIME", "Usage quota exceeded."),
                2: (9, "QUOTA_EXCEEDED_USAGE_TIME", "Usage quota exceeded."),
                5: (7, "DENYLISTED", "This account is blocked."),
            }
            error = errors.get(status or 0) or by_outcome.get(outcome or 0)
            self._finish_operation(op, error=error or (13, "INTERNAL", "Injected failure."))
            return
        refusal = self._refusal(op.email, variant, accelerator, high_mem)
        if refusal is not None:
            status, message = refusal
            reason = {412: "TOO_MANY_ACTIVE_RUNTIMES", 503: "NO_RUNTIMES"}.get(status)
            self._finish_operation(
                op, error=(9, reason, message) if reason else (7, "NOT_ENTITLED", message)
            )
            return
        op.runtime = self._create_runtime(
            op.email, None, variant, accelerator, high_mem, version, runtime_id=op.runtime_id
        )
        self._finish_operation(op, error=None)

    # --- housekeeping -------------------------------------------------------------------------

    def tick(self) -> None:
        """Do now what the emulator does ten times a second, and wait until it is done: complete
        the v1beta operations that are due and release the runtimes idle past their limit.

        With a :class:`ManualClock`, call it after ``clock.advance(...)`` to see the outcome.
        """

        async def run() -> None:
            self._housekeeping()
            await asyncio.gather(*self._tasks)

        self._server.call(run(), timeout=60)

    async def _tick(self) -> None:
        """Complete due operations and reclaim idle runtimes, ten times a second."""
        while True:
            await asyncio.sleep(0.1)
            try:
                self._housekeeping()
            except Exception:  # noqa: BLE001 - a bug here must not stop the emulator
                continue

    def _housekeeping(self) -> None:
        now = self.clock.monotonic()
        for op_id in list(self._pending_creates):
            op = self._operations[op_id]
            if now >= op.done_at:
                self._complete_operation(op)
        for rt in list(self._runtimes):
            limit = rt.idle_timeout if rt.idle_timeout is not None else self.idle_timeout
            if limit is not None and not rt.released and now - rt.last_alive > limit:
                task = asyncio.ensure_future(self._release(rt, "idle"))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        wall = self.clock.time()
        expired = [k for k, v in self._xsrf.items() if wall > v.expires]
        for key in expired:
            del self._xsrf[key]

    def _record(
        self,
        server: str,
        method: str,
        path: str,
        query: dict[str, list[str]],
        status: int,
        headers: dict[str, str],
    ) -> None:
        with self._log_lock:
            self._log.append(RequestRecord(server, method, path, query, status, headers))

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request so far (control plane and proxies), secrets redacted."""
        with self._log_lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()
