"""Exactly once: a call the agent has started is never sent again, whatever goes wrong while its
outcome is packed or sent; only a call the agent never received is resent (docs/reliability.md).

Each remote function appends a line to a file in ``tmp_path`` per run, so the tests count runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import colabremote as cr
from colabremote.exceptions import ConnectionLost, ResultNotSerializable


class UnprintableError(Exception):
    """An exception whose ``__str__`` itself raises."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


class Unpicklable:
    """A result whose pickling fails with an exception that cannot be printed."""

    def __reduce__(self) -> Any:
        raise UnprintableError("no pickling")


def note_run(path: str) -> None:
    with open(path, "a") as f:
        f.write("ran\n")


def raises_unprintable(path: str) -> None:
    note_run(path)
    raise UnprintableError("boom")


def returns_unpicklable(path: str) -> Unpicklable:
    note_run(path)
    return Unpicklable()


def breaks_agent_serializer(path: str) -> int:
    note_run(path)

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise UnprintableError("the serializer is broken")

    vars(sys.modules["_colabremote_agent"])["dumps"] = broken
    return 1


def runs(path: Path) -> int:
    return path.read_text().count("ran\n") if path.exists() else 0


def test_exception_with_a_raising_str_runs_once(session: cr.Session, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    with pytest.raises(Exception) as caught:
        session.remote(raises_unprintable)(str(log))
    assert not isinstance(caught.value, ConnectionLost)
    assert caught.type is UnprintableError
    assert runs(log) == 1


def test_result_that_fails_to_pickle_unprintably_runs_once(
    session: cr.Session, tmp_path: Path
) -> None:
    log = tmp_path / "runs"
    with pytest.raises(ResultNotSerializable, match="Unpicklable"):
        session.remote(returns_unpicklable)(str(log))
    assert runs(log) == 1
    assert session.remote(len)([1, 2, 3]) == 3  # the session carries on


def test_user_code_breaking_the_agent_serializer_runs_once(
    fresh_session: cr.Session, tmp_path: Path
) -> None:
    log = tmp_path / "runs"
    with pytest.raises(ResultNotSerializable, match="could not be packed"):
        fresh_session.remote(breaks_agent_serializer)(str(log))
    assert runs(log) == 1
