"""The Colab control-plane client against an in-memory double of the service (httpx.MockTransport).

Pure protocol logic only: query strings, headers, XSRF, assign's outcomes, errors and
reconciliation, the 401 retry, XSSI, keep-alive, and secrets kept out of every text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import httpx
import pytest

from colabremote import _retry as retry
from colabremote._colab.control import ControlPlane, assign_query, new_nbh, parse_json, strip_xssi
from colabremote._colab.endpoints import ColabEndpoints
from colabremote._colab.models import (
    Accelerator,
    Assignment,
    CcuInfo,
    MachineShape,
    Outcome,
    RuntimeProxyInfo,
    SubscriptionState,
    SubscriptionTier,
    UserInfo,
    Variant,
    parse_duration,
)
from colabremote._colab.public_api import PublicApi
from colabremote.exceptions import (
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

retry.set_wait_scale(0)

T = TypeVar("T")
NBH = "1b4e28ba_2fa1_41d2_883f_0016d3cca427........"
SECRET_PROXY = "proxy-SECRET-token"
ACCESS = "ya29.ACCESS-SECRET"
XSSI = b")]}'\n"

ASSIGNED = {
    "accelerator": "t4",
    "endpoint": "m-s-foo",
    "fit": 30,
    "allowedCredentials": True,
    "sub": 1,
    "subTier": 0,
    "outcome": 4,
    "variant": 1,
    "machineShape": 0,
    "runtimeProxyInfo": {
        "token": SECRET_PROXY,
        "tokenExpiresInSeconds": 3600,
        "url": "https://8080-m-s-foo.prod.colab.dev",
    },
}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def body(data: object, status: int = 200, *, prefix: bool = True) -> httpx.Response:
    return httpx.Response(status, content=(XSSI if prefix else b"") + json.dumps(data).encode())


Handler = Callable[[httpx.Request], httpx.Response]


class Service:
    """Plays Colab: answers by (method, path) from queues of responses, and records requests."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], list[httpx.Response | Exception | Handler]] = {}

    def on(self, method: str, path: str, *answers: httpx.Response | Exception | Handler) -> None:
        self.routes.setdefault((method, path), []).extend(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(599, text=f"unexpected {request.method} {request.url.path}")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    def sent(self, method: str | None = None, path: str | None = None) -> list[httpx.Request]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or r.url.path == path)
        ]


def plane(
    service: Service,
    *,
    endpoints: ColabEndpoints | None = None,
    tokens: list[str] | None = None,
    **options: Any,
) -> tuple[ControlPlane, list[int]]:
    """A ControlPlane on ``service``; the list counts calls of the credentials' ``invalidate``."""
    credentials = QueuedTokens(tokens or [ACCESS])
    client = httpx.AsyncClient(transport=httpx.MockTransport(service))
    options.setdefault("assign_backoff", 0.0)
    control = ControlPlane(
        credentials,
        endpoints=endpoints or ColabEndpoints.at("https://emulator.test"),
        client=client,
        **options,
    )
    return control, credentials.invalidated


class QueuedTokens:
    """Credentials that hand out ``tokens`` in turn (the last one for good)."""

    def __init__(self, tokens: list[str]) -> None:
        self.queue = list(tokens)
        self.invalidated: list[int] = []

    async def token(self) -> str:
        return self.queue.pop(0) if len(self.queue) > 1 else self.queue[0]

    def invalidate(self) -> None:
        self.invalidated.append(1)


def shape_a(token: str = "xsrf-1") -> httpx.Response:
    return body({"acc": "NONE", "nbh": NBH, "p": False, "token": token, "variant": "DEFAULT"})


# -- query strings -------------------------------------------------------------------------


def test_new_nbh_is_a_padded_uuid() -> None:
    nbh = new_nbh()
    assert len(nbh) == 44 and nbh.endswith("." * 8) and "-" not in nbh
    assert new_nbh() != nbh


def test_assign_query_order_and_values() -> None:
    query = assign_query(
        NBH, accelerator="t4", variant="GPU", high_memory=True, runtime_version="2026.04"
    )
    assert query == [
        ("nbh", NBH),
        ("variant", "GPU"),
        ("accelerator", "T4"),
        ("shape", "hm"),
        ("runtime_version_label", "2026.04"),
    ]
    assert assign_query(NBH) == [("nbh", NBH), ("variant", "DEFAULT"), ("accelerator", "NONE")]
    assert assign_query(NBH, accelerator=Accelerator.V28)[1:] == [
        ("variant", "TPU"),
        ("accelerator", "V28"),
    ]
    assert ("runtime_version_label", "") not in assign_query(NBH, runtime_version="")


@pytest.mark.parametrize("model", ["L4", "V28", "V5E1", "V6E1", "l4"])
def test_no_shape_for_high_memory_only_accelerators(model: str) -> None:
    query = assign_query(NBH, accelerator=model, high_memory=True)
    assert all(key != "shape" for key, _ in query)


def test_shape_hm_for_other_accelerators_and_cpu() -> None:
    assert ("shape", "hm") in assign_query(NBH, accelerator="A100", high_memory=True)
    assert ("shape", "hm") in assign_query(NBH, high_memory=True)
    assert ("shape", "hm") not in assign_query(NBH, accelerator="A100")


def test_assign_query_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="notebook hash"):
        assign_query("short")
    with pytest.raises(ConfigurationError, match="variant='GPU'"):
        assign_query(NBH, accelerator="X9")
    with pytest.raises(ConfigurationError, match="does not come with"):
        assign_query(NBH, accelerator="T4", variant="TPU")
    with pytest.raises(ConfigurationError, match="machine kind"):
        assign_query(NBH, variant="QPU")
    assert assign_query(NBH, accelerator="X9", variant="gpu")[1:] == [
        ("variant", "GPU"),
        ("accelerator", "X9"),
    ]


# -- assign --------------------------------------------------------------------------------


def test_assign_get_then_post_with_xsrf_token() -> None:
    service = Service()
    service.on("GET", "/tun/m/assign", shape_a("xsrf-1"))
    service.on("POST", "/tun/m/assign", body(ASSIGNED))
    control, _ = plane(service)

    assignment, is_new = run(
        control.assign(accelerator="T4", high_memory=True, runtime_version="2026.04", nbh=NBH)
    )

    assert is_new
    get, post = service.requests
    expected = (
        f"nbh={NBH}&variant=GPU&accelerator=T4&shape=hm&runtime_version_label=2026.04&authuser=0"
    )
    assert get.url.query.decode() == expected and post.url.query.decode() == expected
    assert "X-Goog-Colab-Token" not in get.headers
    assert post.headers["X-Goog-Colab-Token"] == "xsrf-1"
    assert post.content == b""
    for request in (get, post):
        assert request.headers["Authorization"] == f"Bearer {ACCESS}"
        assert request.headers["Accept"] == "application/json"
        assert request.headers["X-Colab-Client-Agent"] == "vscode"
        assert request.headers["X-Colab-VS-Code-App-Name"] == "colabremote"
        assert request.headers["X-Colab-VS-Code-Extension-Version"]
    assert assignment.endpoint == "m-s-foo" and assignment.nbh == NBH
    assert assignment.accelerator == "T4"
    assert assignment.variant is Variant.GPU
    assert assignment.machine_shape is MachineShape.STANDARD
    assert assignment.idle_timeout == 30
    assert assignment.subscription_state is SubscriptionState.UNSUBSCRIBED
    assert assignment.subscription_tier is SubscriptionTier.FREE
    assert assignment.allowed_credentials is True
    assert assignment.proxy is not None and assignment.proxy.token == SECRET_PROXY
    left = assignment.proxy.seconds_left()
    assert left is not None and 3590 < left <= 3600


def test_assign_shape_b_returns_existing_without_post() -> None:
    service = Service()
    service.on("GET", "/tun/m/assign", body(ASSIGNED))
    control, _ = plane(service)
    assignment, is_new = run(control.assign(nbh=NBH))
    assert (assignment.endpoint, is_new) == ("m-s-foo", False)
    assert not service.sent("POST")


@pytest.mark.parametrize(
    ("outcome", "error"),
    [(1, QuotaExceeded), (2, QuotaExceeded), (3, QuotaExceeded), (5, AccountBlocked)],
)
def test_assign_refusing_outcomes(outcome: int, error: type[ColabError]) -> None:
    service = Service()
    service.on("GET", "/tun/m/assign", shape_a())
    service.on("POST", "/tun/m/assign", body({"outcome": outcome}))
    control, _ = plane(service)
    with pytest.raises(error) as caught:
        run(control.assign(accelerator="T4"))
    assert not caught.value.retryable
    assert len(service.sent("POST")) == 1


@pytest.mark.parametrize("outcome", [0, 4, "SUCCESS", None])
def test_assign_success_outcomes(outcome: object) -> None:
    answer = {k: v for k, v in ASSIGNED.items() if k != "outcome"}
    if outcome is not None:
        answer["outcome"] = outcome
    service = Service()
    service.on("GET", "/tun/m/assign", shape_a())
    service.on("POST", "/tun/m/assign", body(answer))
    control, _ = plane(service)
    assert run(control.assign())[0].endpoint == "m-s-foo"


def test_assign_412_is_too_many_runtimes() -> None:
    service = Service()
    service.on("GET", "/tun/m/assign", shape_a())
    service.on("POST", "/tun/m/assign", httpx.Response(412))
    control, _ = plane(service)
    with pytest.raises(TooManyRuntimes, match="Release one") as caught:
        run(control.assign(accelerator="T4"))
    assert caught.value.status == 412
    assert len(service.sent("POST")) == 1


def test_assign_400_with_accelerator_is_not_entitled() -> None:
    service = Service()
    service.on("GET", "/tun/m/assign", shape_a())
    service.on("POST", "/tun/m/assign", httpx.Response(400))
    control, _ = plane(service)
    with pytest.raises(NotEntitled, match="A100"):
        run(control.assign(accelerator="A100"))
    with pytest.raises(ColabError) as caught:
        run(control.assign())
    assert type(caught.value) is ColabError and caught.value.status == 400


def test_assign_503_everywhere_is_accelerator_unavailable() -> None:
    service = Service()
    service.on("GET", "/tun/m/assign", shape_a())
    service.on("POST", "/tun/m/assign", httpx.Response(503))
    control, _ = plane(service, assign_retries=2)
    with pytest.raises(AcceleratorUnavailable, match="T4") as caught:
        run(control.assign(accelerator="T4", nbh=NBH))
    assert caught.value.status == 503
    assert len(service.sent("POST")) == 3
    gets = service.sent("GET")
    assert len(gets) == 4  # the first, one before each retry, one last look
    assert {g.url.params["nbh"] for g in gets} == {NBH}


@pytest.mark.parametrize(
    "failure",
    [httpx.Response(503), httpx.Response(504), httpx.ReadTimeout("slow")],
    ids=["503", "504", "read-timeout"],
)
def test_assign_reconciles_with_same_nbh_get(failure: httpx.Response | Exception) -> None:
    service = Service()
    service.on("GET", "/tun/m/assign", shape_a("xsrf-1"), body(ASSIGNED))
    service.on("POST", "/tun/m/assign", failure)
    control, _ = plane(service)
    assignment, is_new = run(control.assign(accelerator="T4", nbh=NBH))
    assert (assignment.endpoint, is_new) == ("m-s-foo", True)
    assert len(service.sent("POST")) == 1  # never a second POST
    assert [g.url.params["nbh"] for g in service.sent("GET")] == [NBH, NBH]


def test_assign_retry_uses_the_fresh_xsrf_token() -> None:
    service = Service()
    service.on("GET", "/tun/m/assign", shape_a("xsrf-1"), shape_a("xsrf-2"))
    service.on("POST", "/tun/m/assign", httpx.Response(502), body(ASSIGNED))
    control, _ = plane(service)
    assert run(control.assign(nbh=NBH))[1] is True
    assert [p.headers["X-Goog-Colab-Token"] for p in service.sent("POST")] == ["xsrf-1", "xsrf-2"]


def test_assign_gives_up_after_timeouts_naming_the_nbh() -> None:
    service = Service()
    service.on("GET", "/tun/m/assign", shape_a())
    service.on("POST", "/tun/m/assign", httpx.ReadTimeout("slow"))
    control, _ = plane(service, assign_retries=1)
    with pytest.raises(ColabError, match=NBH.replace(".", r"\.")):
        run(control.assign(nbh=NBH))
    assert len(service.sent("POST")) == 2


def test_assign_does_not_retry_other_errors() -> None:
    service = Service()
    service.on("GET", "/tun/m/assign", shape_a())
    service.on("POST", "/tun/m/assign", httpx.Response(501), body(ASSIGNED))
    control, _ = plane(service)
    with pytest.raises(ColabError) as caught:
        run(control.assign())
    assert caught.value.status == 501
    assert len(service.sent("POST")) == 1


def test_assign_get_is_retried_but_a_refused_connection_on_post_is_not() -> None:
    service = Service()
    service.on("GET", "/tun/m/assign", httpx.Response(502), shape_a())
    service.on("POST", "/tun/m/assign", httpx.ConnectError("refused"), body(ASSIGNED))
    control, _ = plane(service)
    with pytest.raises(ColabError, match="cannot reach Colab"):
        run(control.assign(nbh=ControlPlane.new_nbh()))
    assert len(service.sent("GET")) == 2 and len(service.sent("POST")) == 1


def test_high_memory_cpu_400_is_not_entitled() -> None:
    service = Service()
    service.on("GET", "/tun/m/assign", shape_a())
    service.on("POST", "/tun/m/assign", httpx.Response(400))
    control, _ = plane(service)
    with pytest.raises(NotEntitled, match="high memory"):
        run(control.assign(high_memory=True))


def test_own_client_is_closed() -> None:
    async def scenario() -> bool:
        async with ControlPlane(QueuedTokens([ACCESS])) as control:
            client = control._http
        return client.is_closed

    assert run(scenario())


# -- 401, XSSI, authuser -------------------------------------------------------------------


def test_401_asks_for_a_new_token_and_retries_once() -> None:
    service = Service()
    service.on("GET", "/tun/m/assignments", httpx.Response(401), body({}))
    control, hook = plane(service, tokens=["old-token", "new-token"])
    assert run(control.list_assignments()) == []
    assert [r.headers["Authorization"] for r in service.requests] == [
        "Bearer old-token",
        "Bearer new-token",
    ]
    assert hook == [1]


def test_second_401_is_an_auth_error() -> None:
    service = Service()
    service.on("GET", "/tun/m/assignments", httpx.Response(401))
    control, hook = plane(service)
    with pytest.raises(AuthError, match="Sign in again"):
        run(control.list_assignments())
    assert len(service.requests) == 2 and hook == [1]


def test_403_scope_error_is_missing_scopes() -> None:
    service = Service()
    text = '[7,"Request had insufficient authentication scopes.",[]]'
    service.on("GET", "/tun/m/assignments", httpx.Response(403, text=text))
    control, _ = plane(service)
    with pytest.raises(MissingScopes):
        run(control.list_assignments())


def test_xssi_prefix_is_stripped_when_present() -> None:
    assert strip_xssi(b")]}'\n{}") == b"{}"
    assert strip_xssi(b"{}") == b"{}"
    assert parse_json(b")]}'\n", "x") is None
    assert parse_json(b'{"a": 1}', "x") == {"a": 1}
    with pytest.raises(ColabError, match="not JSON"):
        parse_json(b")]}'\nnope", "x")
    listing = {"assignments": [{"endpoint": "e1", "accelerator": "NONE", "variant": 0}]}
    for prefix in (True, False):
        service = Service()
        service.on("GET", "/tun/m/assignments", body(listing, prefix=prefix))
        control, _ = plane(service)
        assert [a.endpoint for a in run(control.list_assignments())] == ["e1"]


def test_authuser_only_on_colab_host_requests() -> None:
    service = Service()
    service.on("GET", "/tun/m/assignments", body({}))
    service.on("GET", "/v1/assignments", body({}))
    service.on("GET", "/v1/user-info", body({"subscriptionTier": "SUBSCRIPTION_TIER_PRO"}))
    service.on("GET", "/tun/m/m-s-foo/keep-alive/", httpx.Response(200))
    service.on("GET", "/tun/m/ccu-info", body(ccu_body()))
    production = ColabEndpoints.production()
    control, _ = plane(service, endpoints=production)
    gapi, _ = plane(service, endpoints=production, prefer_gapi=True)

    async def calls() -> None:
        await control.list_assignments()
        await gapi.list_assignments()
        await control.user_info()
        await control.keep_alive("m-s-foo")
        await control.ccu_info()

    run(calls())
    for request in service.requests:
        on_colab = request.url.host == "colab.research.google.com"
        assert (request.url.params.get("authuser") == "0") is on_colab, request.url
        assert request.url.params.get_list("authuser") in (["0"], [])
    assert {r.url.host for r in service.requests} == {
        "colab.research.google.com",
        "colab.pa.googleapis.com",
    }


# -- keep-alive and the other calls --------------------------------------------------------


def test_keep_alive_sends_the_tunnel_header() -> None:
    service = Service()
    service.on("GET", "/tun/m/m-s-foo/keep-alive/", httpx.Response(200))
    control, _ = plane(service)
    run(control.keep_alive("m-s-foo"))
    (request,) = service.requests
    assert request.headers["X-Colab-Tunnel"] == "Google"
    assert request.url.path.endswith("/keep-alive/")
    assert request.url.params["authuser"] == "0"


def test_keep_alive_read_timeout_is_success() -> None:
    service = Service()
    service.on("GET", "/tun/m/m-s-foo/keep-alive/", httpx.ReadTimeout("no answer"))
    control, _ = plane(service)
    run(control.keep_alive("m-s-foo"))
    assert len(service.requests) == 1


def test_keep_alive_errors() -> None:
    service = Service()
    service.on("GET", "/tun/m/gone/keep-alive/", httpx.Response(404))
    service.on("GET", "/tun/m/down/keep-alive/", httpx.ConnectError("refused"))
    service.on("GET", "/tun/m/flaky/keep-alive/", httpx.Response(502), httpx.Response(200))
    control, _ = plane(service)
    with pytest.raises(RuntimeGone):
        run(control.keep_alive("gone"))
    with pytest.raises(ColabError, match="cannot reach Colab"):
        run(control.keep_alive("down"))
    assert len(service.sent(path="/tun/m/down/keep-alive/")) == 5  # retried, then given up
    run(control.keep_alive("flaky"))


def test_unassign_get_then_post() -> None:
    service = Service()
    service.on("GET", "/tun/m/unassign/m-s-foo", body({"token": "xsrf-u"}))
    service.on("POST", "/tun/m/unassign/m-s-foo", httpx.Response(204))
    service.on("GET", "/tun/m/unassign/gone", httpx.Response(404))
    control, _ = plane(service)
    assert run(control.unassign("m-s-foo")) is True
    post = service.sent("POST")[0]
    assert post.headers["X-Goog-Colab-Token"] == "xsrf-u"
    assert post.url.query.decode() == "authuser=0"
    assert run(control.unassign("gone")) is False
    with pytest.raises(RuntimeGone):
        run(control.unassign("gone", missing_ok=False))


def test_credentials_propagation_query() -> None:
    service = Service()
    path = "/tun/m/credentials-propagation/m-s-foo"
    service.on("GET", path, body({"token": "xsrf-c"}))
    service.on(
        "POST",
        path,
        body({"success": False, "unauthorized_redirect_uri": "https://consent.test/x"}),
    )
    control, _ = plane(service)
    result = run(control.credentials_propagation("m-s-foo", "dfs_ephemeral", dry_run=True))
    assert result.success is False
    assert result.unauthorized_redirect_uri == "https://consent.test/x"
    expected = "authtype=dfs_ephemeral&version=2&dryrun=true&propagate=true&record=false&authuser=0"
    assert [r.url.query.decode() for r in service.requests] == [expected, expected]
    assert service.sent("POST")[0].headers["X-Goog-Colab-Token"] == "xsrf-c"
    with pytest.raises(ConfigurationError):
        run(control.credentials_propagation("m-s-foo", "nope", dry_run=True))  # type: ignore[arg-type]


def test_refresh_proxy_token_from_the_listing() -> None:
    listing = {
        "assignments": [
            {
                "endpoint": "m-s-foo",
                "accelerator": "A100",
                "variant": "VARIANT_GPU",
                "machineShape": "SHAPE_HIGH_MEM",
                "runtimeProxyInfo": {"token": "new", "tokenTtl": "60s", "url": "https://u"},
            }
        ]
    }
    service = Service()
    service.on("GET", "/tun/m/assignments", body(listing))
    control, _ = plane(service)
    proxy = run(control.refresh_proxy_token("m-s-foo"))
    assert (proxy.url, proxy.token) == ("https://u", "new")
    with pytest.raises(RuntimeGone):
        run(control.refresh_proxy_token("other"))


def test_refresh_proxy_token_from_gapi() -> None:
    service = Service()
    service.on(
        "GET",
        "/v1/runtime-proxy-token",
        body({"token": "t", "tokenTtl": "3600s", "url": "https://u2"}),
    )
    control, _ = plane(service, prefer_gapi=True)
    assert run(control.refresh_proxy_token("m-s-foo")).url == "https://u2"
    assert service.requests[0].url.query.decode() == "endpoint=m-s-foo&port=8080"


def ccu_body() -> dict[str, Any]:
    return {"currentBalance": 289.81, "consumptionRateHourly": 1.54, "assignmentsCount": 1}


def test_user_info_and_ccu_info() -> None:
    service = Service()
    service.on(
        "GET",
        "/v1/user-info",
        body(
            {
                "subscriptionTier": "SUBSCRIPTION_TIER_NONE",
                "paidComputeUnitsBalance": 1,
                "consumptionRateHourly": 2,
                "assignmentsCount": 3,
                "eligibleAccelerators": [
                    {"variant": "VARIANT_GPU", "models": ["t4"]},
                    {"variant": "VARIANT_TPU"},
                ],
                "ineligibleAccelerators": [{"variant": "VARIANT_GPU", "models": ["A100"]}],
                "freeCcuQuotaInfo": {"remainingTokens": "4", "nextRefillTimestampSec": 5},
                "someNewField": {"x": 1},
            }
        ),
    )
    service.on("GET", "/tun/m/ccu-info", body(ccu_body()))
    control, _ = plane(service)
    info = run(control.user_info(consumption=True))
    assert service.requests[0].url.query.decode() == "get_ccu_consumption_info=true"
    assert info.subscription_tier is SubscriptionTier.FREE and not info.subscription_tier.is_paid
    assert info.eligible_models(Variant.GPU) == ("T4",)
    assert info.eligible_models(Variant.TPU) == ()
    assert info.paid_compute_units_balance == 1 and info.assignments_count == 3
    assert info.free_ccu_remaining_milli == 4
    assert info.next_free_refill == datetime.fromtimestamp(5, timezone.utc)
    assert run(control.ccu_info()) == CcuInfo(289.81, 1.54, 1)
    with pytest.raises(ColabError, match="currentBalance"):
        CcuInfo.from_wire({"currentBalance": 1})


def test_transport_errors_become_colab_errors() -> None:
    service = Service()
    service.on("GET", "/tun/m/assignments", httpx.ConnectError("refused"))
    control, _ = plane(service)
    with pytest.raises(ColabError, match="cannot reach Colab") as caught:
        run(control.list_assignments())
    assert isinstance(caught.value.__cause__, httpx.ConnectError)  # the cause survives


# -- models --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [("3.1415926s", 3.1415926), ("3600s", 3600), ("-100s", 3600), ("bad_data", 3600), ("", 3600)],
)
def test_token_ttl_parsing(ttl: str, seconds: float) -> None:
    assert parse_duration(ttl) == pytest.approx(seconds)


def test_enum_spellings() -> None:
    for value in (1, "1", "GPU", "gpu", "VARIANT_GPU"):
        assert Variant.parse(value) is Variant.GPU
    for value in (0, "DEFAULT", "VARIANT_UNSPECIFIED", "VARIANT_CPU"):
        assert Variant.parse(value) is Variant.DEFAULT
    assert Variant.parse("VARIANT_QPU") is Variant.UNKNOWN
    assert Variant.parse(Variant.TPU) is Variant.TPU
    assert MachineShape.parse(MachineShape.HIGH_MEM) is MachineShape.HIGH_MEM
    assert SubscriptionTier.parse(SubscriptionTier.PRO) is SubscriptionTier.PRO
    assert assign_query(NBH, variant=Variant.TPU, accelerator=Accelerator.V5E1)[1:] == [
        ("variant", "TPU"),
        ("accelerator", "V5E1"),
    ]
    for value in (1, "SHAPE_HIGH_MEM", "SHAPE_HIGHMEM", "HIGH_RAM"):
        assert MachineShape.parse(value) is MachineShape.HIGH_MEM
    for shape in (0, None, "SHAPE_DEFAULT", "SHAPE_UNSPECIFIED", "SHAPE_STANDARD"):
        assert MachineShape.parse(shape) is MachineShape.STANDARD
    assert SubscriptionTier.parse("SUBSCRIPTION_TIER_PRO_PLUS") is SubscriptionTier.PRO_PLUS
    assert SubscriptionTier.parse(2) is SubscriptionTier.PRO_PLUS
    assert SubscriptionTier.parse("SUBSCRIPTION_TIER_FREE") is SubscriptionTier.FREE
    assert Outcome.parse("DENYLISTED") is Outcome.DENYLISTED
    with pytest.raises(ColabError):
        Outcome.parse(42)


def test_assignment_from_listing_entry_is_tolerant() -> None:
    entry = {
        "endpoint": "m-s-foo-3",
        "accelerator": "v28",
        "variant": "VARIANT_TPU",
        "machineShape": "SHAPE_HIGH_MEM",
        "runtimeVersionLabel": "2026.04",
        "notebookIdHash": NBH,
        "brandNewField": [1, 2],
    }
    assignment = Assignment.from_wire(entry)
    assert (assignment.accelerator, assignment.variant) == ("V28", Variant.TPU)
    assert assignment.high_memory and assignment.runtime_version == "2026.04"
    assert assignment.nbh == NBH and assignment.proxy is None
    with pytest.raises(ColabError, match="endpoint"):
        Assignment.from_wire({"accelerator": "T4"})


def test_proxy_info_expiry_forms() -> None:
    now = datetime(2026, 11, 22, tzinfo=timezone.utc)
    ttl = RuntimeProxyInfo.from_wire({"url": "u", "token": "t", "tokenTtl": "60s"}, now=now)
    assert ttl.expires_at == now + timedelta(seconds=60)
    stamp = {"url": "u", "token": "t", "expireTime": "2026-11-22T01:00:00.123456789Z"}
    public = RuntimeProxyInfo.from_wire(stamp)
    assert public.expires_at is not None and public.expires_at.hour == 1
    assert ttl.needs_refresh(now=now) and not ttl.needs_refresh(margin=10, now=now)
    with pytest.raises(ColabError, match="url or token"):
        RuntimeProxyInfo.from_wire({"url": "u"})


# -- secrets -------------------------------------------------------------------------------


def test_no_token_in_any_repr_or_message() -> None:
    proxy = RuntimeProxyInfo(url="https://u", token=SECRET_PROXY)
    assignment = Assignment.from_wire(ASSIGNED)
    for text in (repr(proxy), str(proxy), repr(assignment), str(assignment)):
        assert SECRET_PROXY not in text
    user = UserInfo.from_wire({"subscriptionTier": "SUBSCRIPTION_TIER_PRO"})
    assert "PRO" in repr(user)

    service = Service()
    echo = f"bad request, Authorization: Bearer {ACCESS}; proxy {SECRET_PROXY}"
    service.on("GET", "/tun/m/assignments", httpx.Response(418, text=echo))
    service.on("GET", "/tun/m/assign", shape_a())
    service.on("POST", "/tun/m/assign", httpx.Response(412, text=echo))
    service.on("GET", "/tun/m/m-s-foo/keep-alive/", httpx.Response(401, text=echo))
    control, _ = plane(service)
    assert ACCESS not in repr(control)
    with pytest.raises(ColabError) as listing:
        run(control.list_assignments())
    with pytest.raises(TooManyRuntimes) as assigning:
        run(control.assign(accelerator="T4"))
    with pytest.raises(AuthError) as pinging:
        run(control.keep_alive("m-s-foo"))
    assert "***" in str(listing.value)
    for error in (listing.value, assigning.value, pinging.value):
        assert ACCESS not in str(error) and ACCESS not in repr(error)


# -- the v1beta public API -----------------------------------------------------------------

RUNTIME = {
    "name": "runtimes/rt-1",
    "runtimeSpec": {"variant": "VARIANT_GPU", "accelerator": "T4", "shape": "SHAPE_HIGHMEM"},
    "version": "2026.04",
    "connectionInfo": {
        "endpoint": "m-s-rt-1",
        "url": "https://8080-m-s-rt-1.prod.colab.dev",
        "token": SECRET_PROXY,
        "expireTime": "2026-11-22T05:00:00Z",
    },
}


def public(service: Service, token: str = ACCESS) -> PublicApi:
    return PublicApi(
        QueuedTokens([token]),
        endpoints=ColabEndpoints.at("https://emulator.test"),
        client=httpx.AsyncClient(transport=httpx.MockTransport(service)),
    )


def test_public_create_runtime_polls_the_operation() -> None:
    service = Service()
    running = httpx.Response(200, json={"name": "operations/op-1", "done": False})
    service.on("POST", "/v1beta/runtimes", running)
    service.on(
        "GET",
        "/v1/operations/op-1:wait",
        running,
        httpx.Response(200, json={"name": "operations/op-1", "done": True, "response": RUNTIME}),
    )
    api = public(service)
    runtime = run(api.create_runtime(accelerator="T4", high_memory=True, version="2026.04"))
    assert (runtime.runtime_id, runtime.endpoint, runtime.shape) == (
        "rt-1",
        "m-s-rt-1",
        MachineShape.HIGH_MEM,
    )
    assert runtime.proxy is not None and runtime.proxy.expires_at is not None
    assert SECRET_PROXY not in repr(runtime)
    create = service.sent("POST")[0]
    assert json.loads(create.content) == {
        "runtimeSpec": {"variant": "VARIANT_GPU", "accelerator": "T4", "shape": "SHAPE_HIGHMEM"},
        "version": "2026.04",
    }
    assert create.headers["Content-Type"] == "application/json"
    assert "authuser" not in create.url.params and create.url.params["requestId"]
    assert [r.url.params["timeout"] for r in service.sent("GET")] == ["200s", "200s"]


@pytest.mark.parametrize(
    ("reason", "code", "error"),
    [
        ("TOO_MANY_ACTIVE_RUNTIMES", 9, TooManyRuntimes),
        ("DENYLISTED", 9, AccountBlocked),
        ("QUOTA_EXCEEDED_USAGE_TIME", 9, QuotaExceeded),
        ("NO_RUNTIMES", 9, AcceleratorUnavailable),
    ],
)
def test_public_operation_errors(reason: str, code: int, error: type[ColabError]) -> None:
    failed = {
        "name": "operations/op-2",
        "done": True,
        "error": {"code": code, "message": "no", "details": [{"reason": reason}]},
    }
    service = Service()
    service.on("POST", "/v1beta/runtimes", httpx.Response(200, json=failed))
    with pytest.raises(error):
        run(public(service).create_runtime(accelerator="T4"))


def test_public_list_get_delete_and_specs() -> None:
    service = Service()
    service.on(
        "GET", "/v1beta/runtimes", httpx.Response(200, json={"runtimes": [RUNTIME, {"name": "x"}]})
    )
    service.on("GET", "/v1beta/runtimes/rt-1", httpx.Response(200, json=RUNTIME))
    service.on("GET", "/v1beta/runtimes/gone", httpx.Response(404, json={"error": {}}))
    service.on("DELETE", "/v1beta/runtimes/rt-1", httpx.Response(200, json={}))
    service.on(
        "GET",
        "/v1beta/runtimespecs",
        httpx.Response(
            200,
            json={
                "runtimeSpecs": [
                    {"key": {"variant": "VARIANT_CPU", "accelerator": "NONE"}, "eligible": True}
                ]
            },
        ),
    )
    service.on("GET", "/v1beta/subscription", httpx.Response(200, json={"tier": "FOO"}))
    api = public(service, token="")
    assert [r.runtime_id for r in run(api.list_runtimes())] == ["rt-1"]
    assert run(api.get_runtime("runtimes/rt-1")).version == "2026.04"
    with pytest.raises(RuntimeGone):
        run(api.get_runtime("gone"))
    assert run(api.delete_runtime("rt-1")) is True
    (spec,) = run(api.list_runtime_specs())
    assert (spec.variant, spec.accelerator, spec.eligible) == (Variant.DEFAULT, "NONE", True)
    with pytest.raises(ColabError, match="subscription tier"):
        run(api.subscription_tier())
    assert all("Authorization" not in r.headers for r in service.requests)  # empty token


def test_public_401_is_not_retried() -> None:
    service = Service()
    service.on("GET", "/v1beta/runtimes", httpx.Response(401))
    with pytest.raises(AuthError):
        run(public(service).list_runtimes())
    assert len(service.requests) == 1
