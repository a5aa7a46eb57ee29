"""What messages say, without a server: a server's reason out of its error body, the package
to install for a missing module, and the tier check's rule."""

from __future__ import annotations

import importlib.metadata
import json
from typing import Any

import httpx
import pytest

from colabremote._backends.colab import _free
from colabremote._colab.models import SubscriptionTier
from colabremote._http import refusal, server_reason
from colabremote._kernel.wire import ItemStatus
from colabremote._serialization import LocalModules, install_hint, pip_name, rebuild_exception

SECRET = "s3cr3t-t0ken-value-1234"


# -- a server's own reason -----------------------------------------------------------------------


def test_jupyter_servers_json_message() -> None:
    body = json.dumps({"message": "Unhandled error", "reason": None, "traceback": "Trace..."})
    assert server_reason(500, "Internal Server Error", "application/json", body) == (
        "Unhandled error"
    )


def test_enterprise_gateways_reason_in_the_status_line_and_the_body_is_said_once() -> None:
    why = "User 'root' is not authorized to start kernel 'Python 3'. Ensure KERNEL_USERNAME is set"
    body = json.dumps({"reason": why, "message": ""}).encode()
    assert server_reason(403, why, "application/json", body) == why


def test_a_body_that_only_repeats_the_status_gives_no_reason() -> None:
    assert server_reason(403, "Forbidden", "application/json", '{"message": "Forbidden"}') == ""
    page = "<html><title>403: Forbidden</title><body>403: Forbidden</body></html>"
    assert server_reason(403, "Forbidden", "text/html", page) == ""
    assert server_reason(502, "Bad Gateway", "text/plain", "  \n") == ""


def test_an_html_page_gives_its_text_not_its_markup_or_token() -> None:
    page = (
        f'<html><head><title>Jupyter Server</title></head><body data-token="{SECRET}">'
        "<noscript>Jupyter Server requires JavaScript.</noscript>"
        '<div class="error"><h1>404 : Not Found</h1><p>Kernel &amp; friends are gone</p></div>'
        f"<script>var token = '{SECRET}';</script></body></html>"
    )
    assert server_reason(404, "Not Found", "text/html", page, SECRET) == "Kernel & friends are gone"


def test_the_reason_is_scrubbed_before_it_is_cut() -> None:
    text = "x" * 190 + f" {SECRET} and the rest"
    reason = server_reason(400, "Bad Request", "text/plain", text, SECRET)
    assert SECRET[:6] not in reason and reason.endswith("...") and len(reason) == 200
    assert "token=***" in server_reason(400, None, "text/plain", f"bad token={SECRET}")


def test_two_lines_at_most() -> None:
    text = "first\nsecond\nthird"
    assert server_reason(500, "Internal Server Error", "text/plain", text) == "first / second"


def test_googles_error_object() -> None:
    body = {"error": {"code": 403, "message": "The caller does not have permission"}}
    reason = server_reason(403, "Forbidden", "application/json; charset=UTF-8", json.dumps(body))
    assert reason == "The caller does not have permission"


def test_refusal_shows_the_standard_phrase_not_the_servers_words() -> None:
    request = httpx.Request("POST", "http://h.test/api/kernels")
    answer = httpx.Response(403, request=request, extensions={"reason_phrase": SECRET.encode()})
    message = refusal(answer, "starting a kernel", detail="why")
    assert message.endswith("answered HTTP 403 Forbidden: why") and SECRET not in message


# -- the package to install ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "package"),
    [
        ("sklearn", "scikit-learn"),
        ("sklearn.linear_model", "scikit-learn"),
        ("cv2", "opencv-python"),
        ("PIL", "pillow"),
        ("yaml", "pyyaml"),
        ("bs4", "beautifulsoup4"),
        ("torch", "torch"),
    ],
)
def test_well_known_import_names(
    module: str, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.metadata, "packages_distributions", dict)  # none installed here
    assert pip_name(module) == package


def test_a_distribution_installed_here_names_the_package() -> None:
    assert pip_name("httpx") == "httpx"
    assert pip_name("_pytest").lower() == "pytest"  # an import name unlike its package's


def test_among_a_namespaces_distributions_the_one_named_after_the_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = {"google": ["google-auth", "google-cloud-storage", "protobuf"]}
    monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda: found)
    assert pip_name("google.cloud.storage.blob") == "google-cloud-storage"
    assert pip_name("google.auth") == "google-auth"


def test_the_hint_is_the_command() -> None:
    hint = install_hint("colabremote_absent_pkg")
    assert hint.startswith("No module named 'colabremote_absent_pkg' on the kernel.")
    assert 's.exec("%pip install colabremote_absent_pkg")' in hint


# -- the tier ------------------------------------------------------------------------------------


def test_pay_as_you_go_is_not_free() -> None:
    assert _free(SubscriptionTier.FREE, None) and _free(SubscriptionTier.FREE, 0.0)
    assert not _free(SubscriptionTier.FREE, 12.5)  # compute units bought
    assert not _free(SubscriptionTier.PRO, 0.0) and not _free(SubscriptionTier.PRO_PLUS, None)


def test_a_maps_alike_failures_are_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def distributions() -> dict[str, list[str]]:
        calls.append(1)
        return {}

    monkeypatch.setattr(importlib.metadata, "packages_distributions", distributions)
    payload = {"etype": "builtins.ModuleNotFoundError", "evalue": "No module named 'sklearn'"}
    outcomes: list[tuple[str, Any]] = [(ItemStatus.ERROR, dict(payload)) for _ in range(200)]
    outcomes.append((ItemStatus.OK, 5))
    explained = LocalModules().explain_missing(outcomes)
    assert len(calls) == 1 and explained[-1] == (ItemStatus.OK, 5)
    error = rebuild_exception(explained[0][1])
    assert isinstance(error, ModuleNotFoundError) and error.name == "sklearn"
    assert "%pip install scikit-learn" in str(error)
