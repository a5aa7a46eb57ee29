"""The v1beta Colab API (``/v1beta/runtimes``): create, get, list and delete runtimes, and specs.

Access is by allowlist, so the ``/tun/m`` control plane stays the default; this client is for
accounts that have it. Its conventions differ from v1: no ``authuser``, no XSSI prefix, no retry
after a 401 (the cached access token is still dropped), and creation is a long-running operation
polled until done.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any
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
    QuotaExceeded,
    RuntimeGone,
    TooManyRuntimes,
)
from ._http import OwnsHttpClient, colab_error, sign_in_again
from .control import resolve_kind
from .endpoints import ColabEndpoints
from .models import Accelerator, Runtime, RuntimeSpec, SubscriptionTier, Variant

__all__ = ["PublicApi", "operation_error"]

_FAILED_PRECONDITION = 9
_WAIT = "200s"  # the backend's assignment deadline is 180 s; WaitOperation may return sooner


def operation_error(status: Mapping[str, Any], accelerator: str, doing: str) -> ColabError:
    """The colabremote error for a failed operation's ``google.rpc.Status``."""
    code = status.get("code")
    message = str(status.get("message") or "")
    details = status.get("details")
    reason = next(
        (
            d["reason"]
            for d in (details if isinstance(details, list) else [])
            if isinstance(d, Mapping) and isinstance(d.get("reason"), str)
        ),
        None,
    )
    if reason == "TOO_MANY_ACTIVE_RUNTIMES":
        return TooManyRuntimes(
            f"{doing}: Colab refused a new runtime: {message or 'too many are active'}. "
            "Release one (`colabremote runtimes release`) and try again."
        )
    if reason == "DENYLISTED":
        return AccountBlocked(
            f"{doing}: Colab has blocked this account (suspected abuse); see "
            "https://research.google.com/colaboratory/faq.html#limitations-and-restrictions."
        )
    if reason == "QUOTA_EXCEEDED_USAGE_TIME":
        return QuotaExceeded(
            f"{doing}: the account's Colab usage limits are reached. Wait until they reset, or "
            "get compute units or a paid plan at https://colab.research.google.com/signup."
        )
    if code == _FAILED_PRECONDITION and accelerator != "NONE":
        return AcceleratorUnavailable(
            f"{doing}: no Colab machine with accelerator {accelerator} is free now "
            f"({reason or 'FAILED_PRECONDITION'}). Try again later or ask for another one."
        )
    return ColabError(
        f"{doing}: the operation failed with code {code}, reason {reason or 'UNKNOWN'}"
        + (f": {message}" if message else "")
    )


class PublicApi(OwnsHttpClient):
    """An async client of the v1beta runtimes API for one signed-in account."""

    def __init__(
        self,
        credentials: TokenSource,
        *,
        endpoints: ColabEndpoints | None = None,
        client: httpx.AsyncClient | None = None,
        client_agent: str = "vscode",
        timeout: float = 30.0,
        verify: bool = True,
    ) -> None:
        self.endpoints = endpoints or ColabEndpoints.production()
        self._credentials = credentials
        self._auth = BearerAuth(credentials, retry_on_401=False)
        self._owns_http = client is None
        self._http = client or httpx.AsyncClient(
            verify=verify_setting(verify), follow_redirects=False
        )
        self._http_agent = client_agent
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"PublicApi(public={self.endpoints.public!r})"

    async def _once(
        self,
        method: str,
        path: str,
        doing: str,
        *,
        params: tuple[tuple[str, str], ...] = (),
        json: object = None,
        runtime: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        headers = {"X-Colab-Client-Agent": self._http_agent, "Accept": "application/json"}
        response = await self._http.request(
            method,
            f"{self.endpoints.public}{path}",
            params=params,
            headers=headers,
            json=json,
            timeout=httpx.Timeout(timeout if timeout is not None else self._timeout),
            auth=self._auth,
        )
        status = response.status_code
        if status == 401:
            raise AuthError(
                f"{doing}: Colab did not accept the sign-in (HTTP 401). "
                + sign_in_again(
                    self._credentials, "the colaboratory scope (and v1beta an allowlisted account)"
                )
            )
        if status == 404 and runtime is not None:
            raise RuntimeGone(f"{doing}: Colab has no runtime {runtime!r} (HTTP 404).", status=404)
        if status >= 400:
            try:
                error = response.json().get("error", {})
                message = str(error.get("message", "")) if isinstance(error, Mapping) else ""
            except (ValueError, AttributeError):
                message = ""
            detail = scrub(message, *self._auth.sent_tokens)
            raise ColabError(refusal(response, doing, detail=detail), status=status)
        if not response.content.strip():
            return {}
        try:
            body = response.json()
        except ValueError:
            raise ColabError(f"{doing}: Colab answered with a body that is not JSON") from None
        if not isinstance(body, Mapping):
            raise ColabError(f"{doing}: Colab answered with JSON that is not an object")
        return body

    async def _request(self, method: str, path: str, doing: str, **options: Any) -> Any:
        """A request, retried (every call here is idempotent), httpx errors translated."""
        with mapped_errors(doing, where="Colab", error=colab_error, hide=self._auth.sent_tokens):
            return await retrying(lambda: self._once(method, path, doing, **options), what=doing)
        raise AssertionError("unreachable")  # pragma: no cover

    async def list_runtime_specs(self) -> list[RuntimeSpec]:
        """Every kind of runtime, with ``eligible`` saying which this account may create."""
        body = await self._request("GET", "/v1beta/runtimespecs", "listing Colab runtime specs")
        return [RuntimeSpec.from_wire(item) for item in body.get("runtimeSpecs") or []]

    async def list_runtimes(self) -> list[Runtime]:
        """The account's runtimes (entries without a name or connection details are skipped)."""
        body = await self._request("GET", "/v1beta/runtimes", "listing Colab runtimes")
        return [
            Runtime.from_wire(item)
            for item in body.get("runtimes") or []
            if isinstance(item, Mapping) and item.get("name") and item.get("connectionInfo")
        ]

    async def get_runtime(self, runtime_id: str) -> Runtime:
        """One runtime, with a fresh proxy token; :class:`RuntimeGone` if it no longer exists."""
        runtime_id = runtime_id.removeprefix("runtimes/")
        body = await self._request(
            "GET",
            f"/v1beta/runtimes/{quote(runtime_id, safe='')}",
            f"reading Colab runtime {runtime_id!r}",
            runtime=runtime_id,
        )
        return Runtime.from_wire(body)

    async def delete_runtime(self, runtime_id: str, *, missing_ok: bool = True) -> bool:
        """Release a runtime; ``False`` if it was already gone (and ``missing_ok``)."""
        runtime_id = runtime_id.removeprefix("runtimes/")
        try:
            await self._request(
                "DELETE",
                f"/v1beta/runtimes/{quote(runtime_id, safe='')}",
                f"releasing Colab runtime {runtime_id!r}",
                runtime=runtime_id,
            )
        except RuntimeGone:
            if not missing_ok:
                raise
            return False
        return True

    async def subscription_tier(self) -> SubscriptionTier:
        """The account's plan (an unspecified tier is an error, as in Colab's own client)."""
        body = await self._request("GET", "/v1beta/subscription", "reading the Colab plan")
        tier = SubscriptionTier.parse(body.get("tier"))
        if tier is SubscriptionTier.UNSPECIFIED:
            raise ColabError("reading the Colab plan: Colab answered without a subscription tier")
        return tier

    async def create_runtime(
        self,
        *,
        variant: Variant | str | None = None,
        accelerator: Accelerator | str | None = None,
        high_memory: bool = False,
        version: str | None = None,
        deadline: float = 600.0,
    ) -> Runtime:
        """Create a runtime and wait (up to ``deadline`` seconds) until it is ready.

        A fixed ``requestId`` makes the create safe to retry: Colab does it at most once.
        """
        kind, model = resolve_kind(variant, accelerator)
        model = model or "NONE"
        doing = f"creating a Colab runtime (accelerator {model if model != 'NONE' else 'CPU'})"
        spec = {
            "variant": "VARIANT_CPU" if kind is Variant.DEFAULT else f"VARIANT_{kind.value}",
            "accelerator": model,
            "shape": "SHAPE_HIGHMEM" if high_memory else "SHAPE_STANDARD",
        }
        payload: dict[str, Any] = {"runtimeSpec": spec}
        if version:
            payload["version"] = version
        operation = await self._request(
            "POST",
            "/v1beta/runtimes",
            doing,
            params=(("requestId", str(uuid.uuid4())),),
            json=payload,
        )
        give_up = time.monotonic() + deadline
        while not operation.get("done"):
            name = str(operation.get("name") or "")
            if not name.startswith("operations/"):
                raise ColabError(f"{doing}: Colab answered an operation without a name")
            if time.monotonic() >= give_up:
                raise ColabError(
                    f"{doing}: the runtime was not ready after {deadline:.0f} s ({name}); it may "
                    "still appear in list_runtimes()"
                )
            operation = await self._request(
                "GET",
                f"/v1/{name}:wait",
                doing,
                params=(("timeout", _WAIT),),
                timeout=230.0,
            )
        error = operation.get("error")
        if isinstance(error, Mapping):
            raise operation_error(error, model, doing)
        response = operation.get("response")
        if not isinstance(response, Mapping):
            raise ColabError(f"{doing}: Colab finished the operation without a runtime")
        runtime = Runtime.from_wire(response)
        if runtime.proxy is None:
            raise ColabError(f"{doing}: Colab created the runtime without connection details")
        return runtime
