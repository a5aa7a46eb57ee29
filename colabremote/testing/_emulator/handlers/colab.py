"""{COLAB} handlers: ``/tun/m/...`` and ``/vscode/experiment-state``, as colab.research.google.com
serves them to the VS Code extension and the CLI.

Bodies carry the XSSI prefix; every call takes ``authuser``; each POST needs an XSRF token that a
GET on the same path issued (``X-Goog-Colab-Token``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._model import (
    COLAB_SCOPE,
    EMAIL_SCOPE,
    NBH_PATTERN,
    VARIANTS,
    AccessToken,
    XsrfToken,
    new_secret,
)
from .common import BaseHandler, number

#: How long an XSRF token that a GET issued stays good for the matching POST.
XSRF_TTL = 3600.0


class ColabHandler(BaseHandler):
    """The {COLAB} role's auth: ``authuser``, the e-mail scope, and XSRF tokens."""

    role = "colab"

    def colab_user(self) -> AccessToken:
        """Auth for {COLAB} paths: a valid token with the e-mail scope (401 otherwise)."""
        self.check_authuser()
        token = self.bearer()
        if EMAIL_SCOPE not in token.scopes:
            self.error(401, "The access token lacks the userinfo.email scope.")
        if self.emulator.colab_requires_colaboratory_scope and COLAB_SCOPE not in token.scopes:
            self.insufficient_scopes()
        return token

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

    def xsrf_issue(self, token: AccessToken) -> str:
        value = new_secret("emu-xsrf-", 18)
        expires = self.emulator.clock.time() + XSRF_TTL
        self.emulator._xsrf[value] = XsrfToken(value, token.email, self.request.path, expires)
        return value

    def xsrf_check(self, token: AccessToken) -> None:
        value = self.request.headers.get("X-Goog-Colab-Token", "")
        entry = self.emulator._xsrf.get(value) if value else None
        if (
            entry is None
            or entry.email != token.email
            or entry.path != self.request.path
            or self.emulator.clock.time() > entry.expires
        ):
            self.error(403, "missing or invalid XSRF token (X-Goog-Colab-Token)")


class AssignHandler(ColabHandler):
    """``/tun/m/assign``: Shape A (XSRF token) then POST; Shape B once assigned for the nbh."""

    def _request(self) -> tuple[str, str, str, bool, str]:
        nbh = self.single("nbh")
        if nbh is None or not NBH_PATTERN.match(nbh):
            self.error(400, "nbh must match ^[a-zA-Z0-9\\-_.]{44}$")
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


class UnassignHandler(ColabHandler):
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


class KeepAliveHandler(ColabHandler):
    async def get(self, endpoint: str) -> None:
        token = self.colab_user()
        if self.request.headers.get("X-Colab-Tunnel") != "Google":
            self.error(400, "missing X-Colab-Tunnel: Google")
        rt = self.owned_runtime(token, endpoint)
        rt.last_alive = self.emulator.clock.monotonic()
        self.emulator._keepalives[endpoint] = self.emulator._keepalives.get(endpoint, 0) + 1
        hang = self.emulator.faults.take_hang()
        if hang > 0:
            await asyncio.sleep(hang)
        self.set_status(200)
        self.finish()


class CredentialsPropagationHandler(ColabHandler):
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


class DriveConsentHandler(ColabHandler):
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


class TunAssignmentsHandler(ColabHandler):
    """``/tun/m/assignments``: integer enums and a fresh proxy token per call (as the CLI uses)."""

    def get(self) -> None:
        token = self.colab_user()
        emu = self.emulator
        out = []
        for rt in emu._live_runtimes(token.email):
            proxy_token, ttl = rt.issue_proxy_token(emu.proxy_token_ttl, emu.clock.time())
            out.append(
                {
                    "accelerator": rt.accelerator,
                    "endpoint": rt.endpoint,
                    "variant": rt.variant_int,
                    "machineShape": int(rt.high_mem),
                    "runtimeProxyInfo": {
                        "token": proxy_token,
                        "tokenExpiresInSeconds": number(ttl),
                        "url": rt.url,
                    },
                }
            )
        self.send({"assignments": out})


class CcuInfoHandler(ColabHandler):
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
                "nextRefillTimestampSec": int(emu.clock.time()) + 86400,
            },
        }
        self.send(body)


class ExperimentStateHandler(ColabHandler):
    """Works signed out; with an Authorization header the token must be valid."""

    def get(self) -> None:
        self.check_authuser()
        if "Authorization" in self.request.headers:
            self.bearer()
        experiments = {
            "runtime_version_names": list(self.emulator.images),
            **self.emulator.experiments,
        }
        self.send({"experiments": experiments, "selectedIds": [1]})


ROUTES: list[tuple[str, type[BaseHandler]]] = [
    (r"/tun/m/assign", AssignHandler),
    (r"/tun/m/unassign/([^/]+)", UnassignHandler),
    (r"/tun/m/credentials-propagation/([^/]+)", CredentialsPropagationHandler),
    (r"/tun/m/authorize-for-drive-credentials-ephem", DriveConsentHandler),
    (r"/tun/m/assignments", TunAssignmentsHandler),
    (r"/tun/m/ccu-info", CcuInfoHandler),
    (r"/tun/m/([^/]+)/keep-alive/", KeepAliveHandler),
    (r"/vscode/experiment-state", ExperimentStateHandler),
]
