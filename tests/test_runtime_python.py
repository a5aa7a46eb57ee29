"""The runtime's Python: ``runtime_version="match"`` asks Colab for the image that runs this
Python, an image Colab does not offer is refused with the list, and a kernel of another Python
is reported once, when the session opens."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import colabremote as cr
from colabremote._colab.auth import EnvironmentToken
from colabremote._colab.images import (
    DEFAULT_IMAGE_PYTHON,
    IMAGE_PYTHONS,
    check_runtime_version,
    choose_image,
    python_label,
)
from colabremote.exceptions import ConfigurationError, PythonMismatchWarning
from colabremote.testing import ColabEmulator, drop_connection

from .conftest import other_pythons

PYTHONS = other_pythons()
LOCAL = python_label(sys.version_info)
#: Colab's default image runs this Python; the cross-version kernels may have one.
DEFAULT_PYTHON = python_label(DEFAULT_IMAGE_PYTHON)


def kernel_python() -> str:
    import sys

    return f"{sys.version_info[0]}.{sys.version_info[1]}"


# -- choosing the image (pure logic) ---------------------------------------------------------


def test_match_takes_the_newest_offered_image_of_this_python() -> None:
    offered = ["2026.07", "2026.04", "2025.07"]
    assert choose_image("match", offered, python=(3, 12)) == "2026.07"
    assert choose_image("match", ["2026.04", "2025.07"], python=(3, 12)) == "2026.04"
    assert choose_image("match", offered, python=(3, 11)) == "2025.07"
    assert choose_image("match", offered, python=DEFAULT_IMAGE_PYTHON) is None  # the default
    assert choose_image("match", ["2026.07"], python=(3, 11)) is None  # none offered: default
    assert choose_image("match", None, python=(3, 11)) == "2025.07"  # no live list: the table
    assert choose_image(None, offered) is None
    assert choose_image("2026.04", offered) == "2026.04"


def test_an_image_colab_does_not_offer_is_refused_with_the_list() -> None:
    with pytest.raises(ConfigurationError) as info:
        choose_image("2019.01", ["2026.04"])
    message = str(info.value)
    assert "'2019.01'" in message and "'2026.04' (Python 3.12)" in message
    assert "'match'" in message and "default image" in message
    assert choose_image("2019.01", None) == "2019.01"  # no live list: Colab decides


@pytest.mark.parametrize("given", ["3.12", "python3.11", "3.13.1", "py3.12"])
def test_a_python_version_where_an_image_belongs_names_match(given: str) -> None:
    with pytest.raises(ConfigurationError, match="runtime_version='match'"):
        check_runtime_version(given)
    with pytest.raises(ConfigurationError, match="is a Python version"):
        cr.Session("emulator", runtime_version=given)  # when the session is made


def test_runtime_version_values_kept_as_given() -> None:
    assert check_runtime_version(" MATCH ") == "match"
    assert check_runtime_version("2026.04") == "2026.04"
    assert check_runtime_version(None) is None
    with pytest.raises(ConfigurationError, match=r"2026\.07"):
        check_runtime_version("  ")


# -- against the emulator ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[ColabEmulator]:
    """Colab's images, each run by an interpreter of its Python where one is at hand (this one,
    or COLABREMOTE_TEST_PYTHONS); the default image by Python 3.13 when configured."""
    images: dict[str, str | None] = {}
    for label, python in IMAGE_PYTHONS.items():
        version = python_label(python)
        path = sys.executable if version == LOCAL else PYTHONS.get(version)
        if path is not None:
            images[label] = path
    default = sys.executable if LOCAL == DEFAULT_PYTHON else PYTHONS.get(DEFAULT_PYTHON)
    with ColabEmulator(images=images, python=default) as emulator:
        yield emulator


def colab(emu: ColabEmulator, **options: Any) -> cr.Session:
    token = EnvironmentToken(emu.mint_access_token())
    return cr.Session("colab", base_url=emu.url, credentials=token, progress=False, **options)


def live(emu: ColabEmulator) -> set[str]:
    return {rt.endpoint for rt in emu.runtimes if not rt.released}


@pytest.mark.slow
@pytest.mark.parametrize("api", ["v1", "v1beta"])
def test_match_picks_the_image_of_this_python(emu: ColabEmulator, api: str) -> None:
    expected = choose_image("match", list(emu.images))
    if expected is None and LOCAL != DEFAULT_PYTHON:
        pytest.skip(f"Colab has no image of Python {LOCAL}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PythonMismatchWarning)  # a matching kernel: no report
        with colab(emu, runtime_version="match", api=api) as session:
            assert session.remote(kernel_python)() == LOCAL
            assert session.runtime().runtime_version == expected
            endpoint = session.runtime().endpoint
    assert emu.runtime(endpoint).version == (expected or "")


@pytest.mark.slow
def test_an_unknown_runtime_version_fails_the_open_naming_what_exists(emu: ColabEmulator) -> None:
    before = live(emu)
    session = colab(emu, runtime_version="2019.01")
    with pytest.raises(ConfigurationError) as info:
        session.open()
    message = str(info.value)
    assert "'2019.01'" in message and "'match'" in message
    for label in emu.images:
        assert repr(label) in message
    assert live(emu) == before  # nothing was assigned


@pytest.mark.slow
def test_the_live_list_is_preferred_over_the_table(emu: ColabEmulator) -> None:
    """An image in colabremote's table that Colab no longer offers is refused, naming the one
    it does offer (a label unknown to the table is listed without a Python)."""
    before = live(emu)
    emu.experiments["runtime_version_names"] = ["2027.01"]
    try:
        with pytest.raises(ConfigurationError) as info:
            colab(emu, runtime_version="2025.07").open()
    finally:
        del emu.experiments["runtime_version_names"]
    message = str(info.value)
    assert "'2025.07' is not a runtime version Colab offers" in message
    assert "use one of '2027.01', None (the default image" in message
    assert live(emu) == before


@pytest.mark.slow
def test_without_the_live_list_match_uses_the_table(
    emu: ColabEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    expected = choose_image("match", None)
    if expected is None:
        pytest.skip(f"Colab's default image, or none, runs Python {LOCAL}")
    caplog.set_level(logging.INFO, logger="colabremote.colab")
    emu.faults.fail_next("/vscode/experiment-state", status=403)  # not retried
    with colab(emu, runtime_version="match") as session:
        assert session.runtime().runtime_version == expected
        assert session.remote(kernel_python)() == LOCAL
    assert any("could not read the runtime versions" in r.getMessage() for r in caplog.records)


def test_the_emulator_offers_colabs_images_by_default() -> None:
    emulator = ColabEmulator()
    assert list(emulator.images) == list(IMAGE_PYTHONS)
    assert emulator.image_python("2026.04") is None  # its own interpreter
    emulator.images["2026.04"] = "/opt/python3.12"
    assert emulator.image_python("2026.04") == "/opt/python3.12"
    assert emulator.image_python("") is None  # the default image: python=


# -- the report at open ------------------------------------------------------------------------


def test_a_kernel_of_this_python_is_not_reported() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PythonMismatchWarning)
        with cr.Session("local", progress=False) as session:
            assert session.remote(kernel_python)() == LOCAL


@pytest.mark.crossversion
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "colab"])
def test_a_kernel_of_another_python_is_reported_once_at_open(
    emu: ColabEmulator, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    if LOCAL == DEFAULT_PYTHON or DEFAULT_PYTHON not in PYTHONS:
        pytest.skip(f"no Python {DEFAULT_PYTHON} kernel configured (COLABREMOTE_TEST_PYTHONS)")
    caplog.set_level(logging.INFO, logger="colabremote")
    if backend == "local":
        session = cr.Session("local", python=PYTHONS[DEFAULT_PYTHON], progress=False)
    else:
        session = colab(emu)  # the default image runs 3.13, as Colab's does
    with pytest.warns(PythonMismatchWarning) as told, session:
        assert session.remote(kernel_python)() == DEFAULT_PYTHON
        if backend == "colab":
            drop_connection(session)  # a reconnect is not a new open
        assert session.remote(kernel_python)() == DEFAULT_PYTHON
    reports = [w for w in told if w.category is PythonMismatchWarning]
    assert len(reports) == 1
    report = reports[0].message
    assert isinstance(report, PythonMismatchWarning)
    assert (report.local, report.remote) == (LOCAL, DEFAULT_PYTHON)
    text = str(report)
    assert f"the kernel runs Python {DEFAULT_PYTHON}, this Python is {LOCAL}" in text
    assert "functions from .py files and IPython cells travel as source and work" in text
    assert "typed at a plain python prompt or made with exec cannot be sent" in text
    assert len([r for r in caplog.records if "this Python is" in r.getMessage()]) == 1
