"""{PUBLIC} handlers: the v1beta runtimes API (``/v1beta/...``) and its long-running operations
(``/v1/operations...``), as colab.googleapis.com serves them: plain JSON, Google error bodies.

A CreateRuntime operation completes ``create_runtime_delay`` seconds later on the emulator's
clock (the housekeeping tick finishes it); WaitOperation blocks, in real time, until then or
for at most ``wait_operation_cap`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import Any

from .._model import HIGH_MEM_ONLY, RUNTIME_ID_PATTERN, AccessToken, Operation, Runtime
from .common import BaseHandler, rfc3339

_VARIANT = {"DEFAULT": "VARIANT_CPU", "GPU": "VARIANT_GPU", "TPU": "VARIANT_TPU"}
_VARIANT_IN = {
    "VARIANT_UNSPECIFIED": "DEFAULT",
    "VARIANT_CPU": "DEFAULT",
    "VARIANT_GPU": "GPU",
    "VARIANT_TPU": "TPU",
}
_TIER = {
    "FREE": "SUBSCRIPTION_TIER_FREE",
    "PRO": "SUBSCRIPTION_TIER_PRO",
    "PRO_PLUS": "SUBSCRIPTION_TIER_PRO_PLUS",
}


class PublicHandler(BaseHandler):
    """Bodies of runtimes and operations, and lookups that answer 404 for other users' ones."""

    role = "public"

    def runtime_body(self, rt: Runtime) -> dict[str, Any]:
        now = self.emulator.clock.time()
        proxy_token, ttl = rt.issue_proxy_token(self.emulator.proxy_token_ttl, now)
        body: dict[str, Any] = {
            "name": f"runtimes/{rt.runtime_id}",
            "runtimeSpec": {
                "variant": _VARIANT[rt.variant],
                "accelerator": rt.accelerator,
                "shape": "SHAPE_HIGHMEM" if rt.high_mem else "SHAPE_STANDARD",
            },
            "connectionInfo": {
                "endpoint": rt.endpoint,
                "url": rt.url,
                "token": proxy_token,
                "expireTime": rfc3339(now + ttl),
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
        return rt

    def own_operation(self, token: AccessToken, op_id: str) -> Operation:
        op = self.emulator._operations.get(op_id)
        if op is None or op.email != token.email:
            self.error(404, f"Operation operations/{op_id} not found.")
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
                key = {"variant": _VARIANT[variant], "accelerator": accelerator}
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
            variant = _VARIANT_IN[spec.get("variant", "VARIANT_UNSPECIFIED")]
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
            done_at=emu.clock.monotonic() + emu.create_runtime_delay,
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
        self.send({"name": "subscription", "tier": _TIER[tier]})


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
        # Real time, not the emulator's clock: this bounds how long the answer is held.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(
                op.finished.wait(), min(timeout, self.emulator.wait_operation_cap)
            )
        self.send(self.operation_body(op))


ROUTES: list[tuple[str, type[BaseHandler]]] = [
    (r"/v1beta/runtimespecs", RuntimeSpecsHandler),
    (r"/v1beta/runtimes", RuntimesHandler),
    (r"/v1beta/runtimes/([^/]+)", RuntimeHandler),
    (r"/v1beta/subscription", SubscriptionHandler),
    (r"/v1/operations", OperationsHandler),
    (r"/v1/operations/([^/:]+):wait", WaitOperationHandler),
    (r"/v1/operations/([^/:]+)", OperationHandler),
]
