"""The HTTP seam on its own: the bearer Auth, the error mapping, the retry rule and policy, and
the Credentials base class. Pure logic, over ``httpx.MockTransport``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import httpx
import pytest

from colabremote import _retry
from colabremote._colab.auth import Credentials
from colabremote._http import BearerAuth, display_url, mapped_errors, refusal, scrub
from colabremote.exceptions import (
    AuthenticationError,
    ColabError,
    ColabRemoteError,
    ConnectionLost,
    QuotaExceeded,
    ServerError,
)

T = TypeVar("T")

SECRET = "ya29.very-secret-access-token"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Tokens:
    """Hands out ``first`` until invalidated, then ``second``; counts the invalidations."""

    def __init__(self, first: str = "tok-1", second: str = "tok-2") -> None:
        self.current, self.next = first, second
        self.invalidated = 0

    async def token(self) -> str:
        return self.current

    def invalidate(self) -> None:
        self.invalidated += 1
        self.current = self.next


def client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def serve(*statuses: int) -> tuple[list[httpx.Request], Callable[[httpx.Request], httpx.Response]]:
    """A handler answering ``statuses`` in turn (the last one for good), and what it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(statuses[min(len(seen), len(statuses)) - 1])

    return seen, handler


async def get(auth: httpx.Auth, handler: Callable[[httpx.Request], httpx.Response]) -> int:
    async with client(handler) as http:
        return (await http.get("http://service.test/x", auth=auth)).status_code


# -- BearerAuth ------------------------------------------------------------------------------


def test_bearer_auth_refreshes_once_after_a_401() -> None:
    tokens = Tokens()
    seen, handler = serve(401, 200)
    assert run(get(BearerAuth(tokens), handler)) == 200
    assert [r.headers["Authorization"] for r in seen] == ["Bearer tok-1", "Bearer tok-2"]
    assert tokens.invalidated == 1


def test_bearer_auth_resends_the_body() -> None:
    """The resent request streams its body again, as a real transport reads it."""

    class Streaming(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.bodies: list[bytes] = []

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            assert isinstance(request.stream, httpx.AsyncByteStream)
            self.bodies.append(b"".join([chunk async for chunk in request.stream]))
            return httpx.Response(401 if len(self.bodies) == 1 else 200)

    async def main(transport: Streaming) -> int:
        async with httpx.AsyncClient(transport=transport) as http:
            response = await http.post(
                "http://h.test/", content=b"payload", auth=BearerAuth(Tokens())
            )
            return response.status_code

    transport = Streaming()
    assert run(main(transport)) == 200
    assert transport.bodies == [b"payload", b"payload"]


def test_bearer_auth_gives_up_after_the_second_401() -> None:
    tokens = Tokens()
    seen, handler = serve(401)
    assert run(get(BearerAuth(tokens), handler)) == 401
    assert len(seen) == 2


def test_bearer_auth_without_resend_still_drops_the_token() -> None:
    tokens = Tokens()
    seen, handler = serve(401)
    assert run(get(BearerAuth(tokens, retry_on_401=False), handler)) == 401
    assert len(seen) == 1 and tokens.invalidated == 1


def test_bearer_auth_with_credentials_that_cannot_invalidate() -> None:
    class Fixed:
        async def token(self) -> str:
            return "same"

    seen, handler = serve(401, 200)
    assert run(get(BearerAuth(Fixed()), handler)) == 200
    assert [r.headers["Authorization"] for r in seen] == ["Bearer same", "Bearer same"]


def test_bearer_auth_plain_string_and_empty_token() -> None:
    seen, handler = serve(200)
    run(get(BearerAuth("abc"), handler))
    run(get(BearerAuth(""), handler))
    assert seen[0].headers["Authorization"] == "Bearer abc"
    assert "Authorization" not in seen[1].headers


def test_bearer_auth_remembers_sent_tokens_and_hides_them() -> None:
    tokens = Tokens(SECRET, SECRET + "-2")
    auth = BearerAuth(tokens)
    _, handler = serve(401, 200)
    run(get(auth, handler))
    assert list(auth.sent_tokens) == [SECRET, SECRET + "-2"]
    assert SECRET not in repr(auth)


def test_bearer_auth_is_async_only() -> None:
    with (
        httpx.Client(transport=httpx.MockTransport(serve(200)[1])) as http,
        pytest.raises(RuntimeError, match="AsyncClient"),
    ):
        http.get("http://service.test/", auth=BearerAuth("abc"))


# -- the error mapping -----------------------------------------------------------------------


def raise_in(exc: Exception, **options: Any) -> ColabRemoteError:
    with (
        pytest.raises(ColabRemoteError) as caught,
        mapped_errors("doing it", where="the service", **options),
    ):
        raise exc
    assert caught.value.__cause__ is exc  # the cause survives
    return caught.value


def test_transport_failures_are_mapped_with_their_cause() -> None:
    def lost(message: str, status: int | None) -> ConnectionLost:
        return ConnectionLost(message)

    timeout = raise_in(httpx.ReadTimeout("slow"), error=lost)
    assert isinstance(timeout, ConnectionLost)
    assert str(timeout) == "doing it: the service did not answer in time (ReadTimeout)"
    refused = raise_in(
        httpx.ConnectError(f"refused for http://h/?token={SECRET}&x=1 Bearer {SECRET}"),
        error=lambda message, status: ColabError(message, status=status),
    )
    assert isinstance(refused, ColabError) and refused.status is None
    assert str(refused).startswith("doing it: cannot reach the service (ConnectError: refused")
    assert SECRET not in str(refused)


def test_status_errors_keep_their_status() -> None:
    request = httpx.Request("GET", "http://h/x?access_token=" + SECRET)
    response = httpx.Response(503, request=request)
    error = raise_in(
        httpx.HTTPStatusError("503", request=request, response=response),
        error=lambda message, status: ServerError(message, status=status),
    )
    assert isinstance(error, ServerError) and error.status == 503 and error.retryable
    assert "answered HTTP 503; try again later" in str(error)


def test_hidden_values_are_blotted_out() -> None:
    error = raise_in(
        httpx.ConnectError(f"echo {SECRET}"),
        error=lambda message, status: ColabError(message),
        hide=[SECRET],
    )
    assert SECRET not in str(error) and "***" in str(error)


def test_scrub_and_display_url() -> None:
    text = f"GET /api?token={SECRET}&code=4/abc Authorization: token {SECRET}x Bearer {SECRET}y"
    cleaned = scrub(text)
    assert SECRET not in cleaned and "4/abc" not in cleaned
    assert "token=***" in cleaned and "code=***" in cleaned
    assert scrub("a refresh 1//abcd here", "1//abcd") == "a refresh *** here"
    assert (
        display_url(f"https://user:pw@h.test:8/p/q?token={SECRET}#frag") == "https://h.test:8/p/q"
    )


def test_refusal_names_method_url_and_status() -> None:
    request = httpx.Request("POST", f"http://h.test/run?authuser=0&token={SECRET}")
    message = refusal(httpx.Response(404, request=request), "doing it", detail="gone")
    assert message == "doing it: POST http://h.test/run answered HTTP 404 Not Found: gone"


# -- one retryable rule ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ServerError, ColabError])
def test_one_retryable_rule_for_statuses(kind: type[ServerError] | type[ColabError]) -> None:
    assert kind("x", status=429).retryable and kind("x", status=502).retryable
    assert not kind("x", status=404).retryable
    assert not kind("x", status=None).retryable  # no HTTP status applies: not retried


def test_classes_that_decide_for_themselves() -> None:
    assert ConnectionLost("x").retryable  # a transport failure that may pass
    assert not AuthenticationError("x", status=503).retryable
    assert not QuotaExceeded("x").retryable


# -- one retry policy --------------------------------------------------------------------------


def test_retrying_logs_each_retry_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="colabremote.retry")
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise httpx.ConnectError(f"refused ?token={SECRET}")
        return "ok"

    assert run(_retry.retrying(flaky, what="reading the thing")) == "ok"
    lines = [r.getMessage() for r in caplog.records if r.name == "colabremote.retry"]
    assert len(lines) == 2 and all(r.levelno == logging.INFO for r in caplog.records)
    assert lines[0].startswith("retrying reading the thing after ConnectError (attempt 1 of 5")
    assert "attempt 2 of 5" in lines[1]
    assert SECRET not in caplog.text


def test_retrying_stops_at_attempts_and_reraises() -> None:
    calls: list[int] = []

    async def failing() -> None:
        calls.append(1)
        raise ColabError("down", status=503)

    with pytest.raises(ColabError, match="down"):
        run(_retry.retrying(failing, what="x", attempts=3))
    assert len(calls) == 3


def test_retrying_does_not_retry_what_is_not_retryable() -> None:
    calls: list[int] = []

    async def refused() -> None:
        calls.append(1)
        raise ColabError("no", status=400)

    with pytest.raises(ColabError):
        run(_retry.retrying(refused, what="x"))
    assert len(calls) == 1


def test_retrying_honours_the_deadline() -> None:
    calls: list[int] = []

    async def failing() -> None:
        calls.append(1)
        raise httpx.ConnectError("refused")

    with pytest.raises(httpx.ConnectError):
        run(_retry.retrying(failing, what="x", attempts=10, deadline=0))
    assert len(calls) == 1  # no wait may end past the deadline


def test_retry_after_is_honoured(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="colabremote.retry")
    request = httpx.Request("GET", "http://h.test/")
    busy = httpx.Response(429, headers={"Retry-After": "7"}, request=request)
    calls: list[int] = []

    async def throttled() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.HTTPStatusError("429", request=request, response=busy)
        return "ok"

    scale = _retry.wait_scale()
    _retry.set_wait_scale(0.001)
    try:
        assert run(_retry.retrying(throttled, what="x")) == "ok"
    finally:
        _retry.set_wait_scale(scale)
    assert "after HTTP 429" in caplog.text and "waiting 0.007 s" in caplog.text


# -- the Credentials base class ----------------------------------------------------------------


class Counting(Credentials):
    source = "test"

    def __init__(self, clock: Callable[[], datetime], lifetime: timedelta | None) -> None:
        super().__init__(clock=clock)
        self.refreshes = 0
        self.lifetime = lifetime

    async def _refresh(self) -> tuple[str, datetime | None]:
        self.refreshes += 1
        await asyncio.sleep(0)  # let concurrent callers queue up behind the lock
        expiry = self._clock() + self.lifetime if self.lifetime is not None else None
        return f"token-{self.refreshes}", expiry


def test_credentials_refresh_within_the_margin_and_after_invalidate() -> None:
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    creds = Counting(lambda: now[0], timedelta(minutes=30))

    async def main() -> list[str]:
        first = await creds.token()
        now[0] += timedelta(minutes=24)  # 6 minutes left: outside the 5-minute margin
        second = await creds.token()
        now[0] += timedelta(minutes=2)  # 4 minutes left: refresh
        third = await creds.token()
        creds.invalidate()
        return [first, second, third, await creds.token()]

    assert run(main()) == ["token-1", "token-1", "token-2", "token-3"]


def test_credentials_refresh_once_for_concurrent_callers() -> None:
    creds = Counting(lambda: datetime.now(timezone.utc), None)

    async def main() -> list[str]:
        return await asyncio.gather(*(creds.token() for _ in range(10)))

    assert run(main()) == ["token-1"] * 10 and creds.refreshes == 1
    assert run(creds.token()) == "token-1"  # no expiry: good until invalidated
