"""{GAPI} handlers: ``/v1/assignments``, ``/v1/runtime-proxy-token`` and ``/v1/user-info``, as
colab.pa.googleapis.com serves them (XSSI prefix; enums spelled as strings).

A third-party OAuth client gets 403 ``USER_PROJECT_DENIED`` here (``gapi_allowed = False``).
"""

from __future__ import annotations

from typing import Any

from .common import BaseHandler, duration

_VARIANT = {"DEFAULT": "VARIANT_UNSPECIFIED", "GPU": "VARIANT_GPU", "TPU": "VARIANT_TPU"}
_TIER = {
    "FREE": "SUBSCRIPTION_TIER_NONE",
    "PRO": "SUBSCRIPTION_TIER_PRO",
    "PRO_PLUS": "SUBSCRIPTION_TIER_PRO_PLUS",
}


class GapiHandler(BaseHandler):
    role = "gapi"


class GapiAssignmentsHandler(GapiHandler):
    def get(self) -> None:
        token = self.api_user()
        emu = self.emulator
        out = []
        for rt in emu._live_runtimes(token.email):
            proxy_token, ttl = rt.issue_proxy_token(emu.proxy_token_ttl, emu.clock.time())
            entry: dict[str, Any] = {
                "endpoint": rt.endpoint,
                "accelerator": rt.accelerator,
                "variant": _VARIANT[rt.variant],
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


class RuntimeProxyTokenHandler(GapiHandler):
    """A proxy token and URL for one port: 8080 (the default) is the runtime's Jupyter server;
    any other port gets a proxy of its own (see ``_ports.py``) and a token valid there only."""

    async def get(self) -> None:
        token = self.api_user()
        endpoint = self.single("endpoint") or ""
        port = self.single("port") or "8080"
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            self.error(400, f"port {port!r} is not a TCP port")
        rt = self.owned_runtime(token, endpoint)
        emu = self.emulator
        if port == "8080":
            proxy_token, ttl = rt.issue_proxy_token(emu.proxy_token_ttl, emu.clock.time())
            self.send({"token": proxy_token, "tokenTtl": duration(ttl), "url": rt.url})
            return
        proxy = await emu._port_proxy(rt, int(port))
        proxy_token, ttl = rt.issue_port_token(int(port), emu.proxy_token_ttl, emu.clock.time())
        self.send({"token": proxy_token, "tokenTtl": duration(ttl), "url": proxy.url})


class UserInfoHandler(GapiHandler):
    def get(self) -> None:
        token = self.api_user()
        emu = self.emulator
        body: dict[str, Any] = {
            "subscriptionTier": _TIER[emu.subscription_tier],
            "eligibleAccelerators": [
                {"variant": _VARIANT[v], "models": list(m)}
                for v, m in emu.eligible_accelerators.items()
            ],
            "ineligibleAccelerators": [
                {"variant": _VARIANT[v], "models": list(m)}
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
                        "nextRefillTimestampSec": int(emu.clock.time()) + 86400,
                    },
                }
            )
        self.send(body)


ROUTES: list[tuple[str, type[BaseHandler]]] = [
    (r"/v1/assignments", GapiAssignmentsHandler),
    (r"/v1/runtime-proxy-token", RuntimeProxyTokenHandler),
    (r"/v1/user-info", UserInfoHandler),
]
