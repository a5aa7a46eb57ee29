"""The kernel side of detached calls, on a temporary folder: the log's files and its limit, and
which calls eviction removes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from colabremote._kernel.agent.detached import (
    LOG_SEGMENT_BYTES,
    _Heartbeat,
    _LogPump,
    _write_json,
    call_folder_name,
    evict,
)


def test_the_log_is_split_into_segments_and_capped(tmp_path: Path) -> None:
    pump = _LogPump(str(tmp_path), limit=LOG_SEGMENT_BYTES + 100)
    pump.write("stdout", "a" * LOG_SEGMENT_BYTES)
    pump.write("stderr", "é" * 100)  # two bytes each: the limit falls inside the text
    pump.close()
    first = (tmp_path / "log.000000").read_bytes()
    second = (tmp_path / "log.000001").read_bytes()
    assert first == b"a" * LOG_SEGMENT_BYTES
    assert second.startswith("é".encode() * 50)
    assert b"reached its limit" in second
    assert pump.bytes == len(first) + len(second)
    pump.write("stdout", "ignored")  # after the call: not the log's any more
    assert (tmp_path / "log.000001").read_bytes() == second


def _call(home: Path, name: str, *, state: str, finished: float, pid: int | None = None) -> None:
    folder = home / name
    folder.mkdir()
    _write_json(str(folder / "meta.json"), {"id": f"rt:{name}", "pid": pid or os.getpid()})
    _write_json(str(folder / "state.json"), {"state": state, "finished": finished})
    (folder / "log.000000").write_bytes(b"x" * 1000)


def test_eviction_removes_the_oldest_finished_calls_and_notes_them(tmp_path: Path) -> None:
    _call(tmp_path, "c-old", state="done", finished=1.0)
    _call(tmp_path, "c-newer", state="failed", finished=2.0)
    _call(tmp_path, "c-running", state="running", finished=0.0)
    assert evict(str(tmp_path), keep_calls=3) == ["rt:c-old"]  # room for the one starting
    assert sorted(os.listdir(tmp_path)) == ["c-newer", "c-running", "evicted.json"]
    assert evict(str(tmp_path), keep_calls=10, keep_bytes=500) == ["rt:c-newer"]
    assert json.loads((tmp_path / "evicted.json").read_text()) == {
        "ids": ["rt:c-old", "rt:c-newer"]
    }
    assert evict(str(tmp_path), keep_calls=1, keep_bytes=0) == []  # a running call stays


def test_a_running_call_whose_kernel_died_is_lost_then_evictable(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    _call(tmp_path, "c-orphan", state="running", finished=0.0, pid=int(dead.stdout))
    assert evict(str(tmp_path), keep_calls=1) == ["rt:c-orphan"]


@pytest.mark.parametrize("bad", ["rt:", "rt:..", "rt:a/b", "rt:a\\b"])
def test_call_ids_name_their_folder(bad: str) -> None:
    assert call_folder_name("m-s-emu-1:c-0123") == "c-0123"
    with pytest.raises(ValueError, match="not a detached call id"):
        call_folder_name(bad)


def test_the_heartbeat_moves_while_the_call_runs(tmp_path: Path) -> None:
    beats: set[int] = set()
    with _Heartbeat(str(tmp_path), 0.01):
        deadline = time.monotonic() + 10
        while len(beats) < 3 and time.monotonic() < deadline:
            if (tmp_path / "heartbeat").exists():
                beats.add(json.loads((tmp_path / "heartbeat").read_text())["beat"])
            time.sleep(0.01)
    assert len(beats) >= 3
    last = (tmp_path / "heartbeat").read_text()
    time.sleep(0.05)
    assert (tmp_path / "heartbeat").read_text() == last  # stopped with the call
