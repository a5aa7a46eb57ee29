"""retries= with the rest of the API (issue 13): kept results, refs and remote instances from a
kernel that died, detached calls, and what the retry log line says."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import colabremote as cr
from colabremote.exceptions import RefLost, RemoteError


def runs(path: str) -> int:
    """Appends a line to ``path`` (outside the kernel's memory); how many there are now."""
    with open(path, "a") as f:
        f.write("run\n")
    with open(path) as f:
        return len(f.read().splitlines())


def die_on_first_run(path: str, *_: Any) -> int:
    """SIGKILLs its kernel on the first run; the number of runs after."""
    count = runs(path)
    if count == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return count


def fail_on_first_run(path: str, secret: str) -> int:
    """Raises ValueError quoting its argument on the first run; the number of runs after."""
    count = runs(path)
    if count == 1:
        raise ValueError(f"first run, with {secret}")
    return count


class TwoArgError(Exception):
    """Cannot be rebuilt from its args here: it arrives as a RemoteError quoting its text."""

    def __init__(self, what: str, count: int) -> None:
        super().__init__(f"{what} x{count}")


def fail_unrebuildably_on_first_run(path: str, secret: str) -> int:
    count = runs(path)
    if count == 1:
        raise TwoArgError(secret, count)
    return count


class Survivor:
    def die_on_first_run(self, path: str) -> int:
        return die_on_first_run(path)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def fresh() -> Iterator[cr.Session]:
    with cr.Session("local", progress=False) as s:
        yield s


@pytest.fixture(scope="module")
def local() -> Iterator[cr.Session]:
    with cr.Session("local", progress=False) as s:
        yield s


def test_kept_results_are_kept_once_when_other_items_are_retried(
    local: cr.Session, tmp_path: Path
) -> None:
    f = local.remote(fail_on_first_run, retries=1, retry_on=(ValueError,)).keep
    refs = list(f.map([str(tmp_path / "a"), str(tmp_path / "b")], ["x", "y"]))
    assert [r.fetch() for r in refs] == [2, 2]
    assert (lines(tmp_path / "a"), lines(tmp_path / "b")) == (2, 2)
    once = local.remote(runs, retries=1, retry_on=(ValueError,)).keep(str(tmp_path / "c"))
    assert once.fetch() == 1 and lines(tmp_path / "c") == 1  # a success is not run again


@pytest.mark.slow
def test_a_retry_after_the_kernel_died_cannot_use_its_refs(
    fresh: cr.Session, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The dead kernel's ref fails the retry with RefLost at once: nothing is sent, and it is
    not retried again, even when ``retry_on`` names every Exception."""
    path = tmp_path / "runs"
    plain = fresh.remote(die_on_first_run, retries=3, retry_on=(Exception,))
    for f in (plain, plain.keep):
        ref = fresh.put("kept on this kernel")
        path.unlink(missing_ok=True)
        caplog.clear()
        with (
            caplog.at_level(logging.INFO, logger="colabremote.retry"),
            pytest.raises(RefLost, match="restarted or been replaced"),
        ):
            f(str(path), ref)
        assert lines(path) == 1
        assert len([r for r in caplog.records if r.name == "colabremote.retry"]) == 1


@pytest.mark.slow
def test_a_retried_method_whose_instance_died_raises_ref_lost(
    fresh: cr.Session, tmp_path: Path
) -> None:
    survivor = fresh.remote(Survivor)()
    with pytest.raises(RefLost, match=r"test_retries\.Survivor") as lost:
        survivor.die_on_first_run.with_options(retries=3)(str(tmp_path / "runs"))
    assert lost.value.type_name.endswith("Survivor")
    assert lines(tmp_path / "runs") == 1


def test_spawn_does_not_retry(local: cr.Session, tmp_path: Path) -> None:
    f = local.remote(fail_on_first_run, retries=2, retry_on=(ValueError,))
    with pytest.raises(ValueError, match="first run"):
        f.spawn(str(tmp_path / "runs"), "x").result()
    assert lines(tmp_path / "runs") == 1


def test_the_retry_log_names_function_attempt_and_reason_not_arguments(
    local: cr.Session, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = local.remote(fail_on_first_run, retries=1, retry_on=(ValueError,))
    with caplog.at_level(logging.INFO, logger="colabremote.retry"):
        assert f(str(tmp_path / "runs"), "hunter2-argument") == 2
    (message,) = [r.getMessage() for r in caplog.records if r.name == "colabremote.retry"]
    assert "fail_on_first_run" in message and "ValueError" in message
    assert "attempt 1 of 2" in message
    assert "hunter2" not in message and str(tmp_path) not in message
    caplog.clear()
    g = local.remote(fail_unrebuildably_on_first_run, retries=1, retry_on=(RemoteError,))
    with caplog.at_level(logging.INFO, logger="colabremote.retry"):
        assert g(str(tmp_path / "again"), "hunter2-argument") == 2
    (message,) = [r.getMessage() for r in caplog.records if r.name == "colabremote.retry"]
    assert "RemoteError" in message and "hunter2" not in message
