"""The forward's pure parts: port numbers checked where they are passed, request heads parsed
and rewritten for the proxy (its host, prefix and token in; the caller's proxy credentials
out), and the Colab backend's refresh margin for a port's token."""

from __future__ import annotations

import pytest

from colabremote._backends.base import PortRoute
from colabremote._backends.colab import _margin, proxy_refresh_delay
from colabremote._workspace.ports import (
    build_head,
    check_port,
    closing,
    parse_head,
    status_of,
    upstream_head,
)
from colabremote.exceptions import ConfigurationError


@pytest.mark.parametrize("bad", [0, -1, 65536, "6006", True, 1.5, None])
def test_a_port_must_be_a_tcp_port_number(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"port=.* is not a TCP port; pass a number"):
        check_port("port", bad)


def test_local_port_zero_means_any_free_port() -> None:
    assert check_port("local_port", 0, zero_ok=True) == 0
    assert check_port("port", 6006) == 6006
    with pytest.raises(ConfigurationError, match="0: any free port"):
        check_port("local_port", -1, zero_ok=True)


def test_heads_parse_and_build_back() -> None:
    head = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Thing:  two words \r\n\r\n"
    first, fields = parse_head(head)
    assert first == "GET /a?b=1 HTTP/1.1"
    assert fields == [("Host", "x"), ("X-Thing", "two words")]
    rebuilt = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Thing: two words\r\n\r\n"
    assert build_head(first, fields) == rebuilt
    with pytest.raises(ValueError, match="malformed"):
        parse_head(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
    assert status_of(b"HTTP/1.1 404 Not Found\r\n\r\n") == 404
    assert status_of(b"garbage\r\n\r\n") == 0


def test_the_upstream_head_carries_the_route_and_not_the_callers_proxy_credentials() -> None:
    route = PortRoute(
        "https://6006-m-s-abc.prod.colab.dev/prefix/",
        {"X-Colab-Runtime-Proxy-Token": "fresh", "X-Colab-Client-Agent": "colabremote"},
    )
    fields = [
        ("Host", "127.0.0.1:5000"),
        ("X-Colab-Runtime-Proxy-Token", "smuggled"),
        ("Proxy-Authorization", "Basic abc"),
        ("Connection", "keep-alive"),
        ("Accept", "text/html"),
    ]
    first, out = parse_head(upstream_head(route, "GET /x?y=1 HTTP/1.1", fields, upgrade=False))
    assert first == "GET /prefix/x?y=1 HTTP/1.1"
    assert out == [
        ("Host", "6006-m-s-abc.prod.colab.dev"),
        ("Accept", "text/html"),
        ("X-Colab-Runtime-Proxy-Token", "fresh"),
        ("X-Colab-Client-Agent", "colabremote"),
        ("Connection", "close"),
    ]
    upgrade = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    _, out = parse_head(upstream_head(route, "GET /ws HTTP/1.1", upgrade, upgrade=True))
    assert ("Upgrade", "websocket") in out and out[-1] == ("Connection", "Upgrade")


def test_the_answer_says_the_connection_closes() -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nA: b\r\n\r\n"
    assert closing(answer) == b"HTTP/1.1 200 OK\r\nA: b\r\nConnection: close\r\n\r\n"


def test_the_route_repr_hides_its_headers() -> None:
    route = PortRoute("http://127.0.0.1:1", {"X-Colab-Runtime-Proxy-Token": "s3cret"})
    assert "s3cret" not in repr(route)


def test_port_tokens_refresh_with_the_jupyter_ports_margin() -> None:
    assert _margin(None) == 300.0
    assert _margin(3600.0) == 300.0
    assert _margin(4.0) == 2.0  # half of a short lifetime, so it is not refreshed in a loop
    assert proxy_refresh_delay(3600.0, 3600.0) == 3300.0
