"""map(return_exceptions=, ordered=) and retries=/retry_on= on a local kernel."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import colabremote as cr
from colabremote.exceptions import ConfigurationError, KernelDied


def inverse(x: int) -> float:
    return 1 / x


def die_once(marker: str) -> int:
    """Kills its kernel the first time (no marker yet); returns the kernel's pid after."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return os.getpid()


def flaky(marker: str, error: str) -> str:
    """Raises ``error`` (a builtin's name) the first time, succeeds the next."""
    with open(marker, "a") as f:
        f.write("run\n")
    with open(marker) as f:
        runs = len(f.read().splitlines())
    if runs == 1:
        raise getattr(__import__("builtins"), error)("the first try fails")
    return f"ok after {runs}"


@pytest.fixture(scope="module")
def local() -> Iterator[cr.Session]:
    with cr.Session("local", progress=False) as s:
        yield s


def test_return_exceptions_yields_errors_in_place(local: cr.Session) -> None:
    results = list(local.remote(inverse).map([1, 0, 4], return_exceptions=True))
    assert results[0] == 1.0 and results[2] == 0.25
    assert isinstance(results[1], ZeroDivisionError)


def test_unordered_map_gives_every_result(local: cr.Session) -> None:
    assert sorted(local.remote(inverse).map([1, 2, 4], ordered=False)) == [0.25, 0.5, 1.0]


@pytest.mark.slow
def test_a_call_whose_kernel_died_is_retried_once_on_a_fresh_kernel(
    local: cr.Session, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = str(tmp_path / "died")
    with caplog.at_level(logging.INFO, logger="colabremote.retry"):
        pid = local.remote(die_once, retries=2)(marker)
    assert pid == local.info().pid  # ran on the new kernel
    assert [r.message for r in caplog.records if "retrying die_once" in r.message]
    with pytest.raises(KernelDied):
        local.remote(die_once)(str(tmp_path / "again"))  # without retries= it raises


def test_retry_on_names_the_functions_own_errors_to_retry(
    local: cr.Session, tmp_path: Path
) -> None:
    f = local.remote(flaky)
    assert (
        f.with_options(retries=1, retry_on=(TimeoutError,))(str(tmp_path / "a"), "TimeoutError")
        == "ok after 2"
    )
    with pytest.raises(ValueError, match="first try"):  # not named: raised at once
        f.with_options(retries=3, retry_on=(TimeoutError,))(str(tmp_path / "b"), "ValueError")
    assert (tmp_path / "b").read_text().splitlines() == ["run"]


def test_retry_options_are_checked(local: cr.Session) -> None:
    with pytest.raises(ConfigurationError, match="retries="):
        local.remote(inverse, retries=-1)
    with pytest.raises(ConfigurationError, match="retry_on="):
        local.remote(inverse, retries=1, retry_on=("TimeoutError",))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="retries=N"):
        local.remote(inverse, retry_on=(TimeoutError,))
