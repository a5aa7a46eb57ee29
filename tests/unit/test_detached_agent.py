"""The kernel side of detached calls, on a temporary folder: the log's files and its limit, and
which calls eviction removes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from colabremote._kernel.agent import detached
from colabremote._kernel.agent.detached import (
    LOG_SEGMENT_BYTES,
    _CancelWatch,
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


@pytest.mark.parametrize(
    "bad",
    [
        "rt:",
        "rt:..",
        "rt:a/b",
        "rt:a\\b",
        "rt:c-0123",
        "rt:c-0123456789ABCDEF",
        ":c-0123456789abcdef",
        "../x:c-0123456789abcdef",
        "rt:c-0123456789abcdef/..",
        7,
    ],
)
def test_call_ids_name_their_folder(bad: object) -> None:
    assert call_folder_name("m-s-emu-1:c-0123456789abcdef") == "c-0123456789abcdef"
    with pytest.raises(ValueError, match="not a detached call id"):
        call_folder_name(bad)


class _WatchedParts(list[memoryview]):
    """A result's parts that note, as each is written, whether ``result.bin`` exists yet."""

    def __init__(self, folder: Path) -> None:
        super().__init__([memoryview(b"abc"), memoryview(b"def")])
        self.seen: list[bool] = []
        self._folder = folder

    def __iter__(self) -> Iterator[memoryview]:
        for part in list.__iter__(self):
            self.seen.append((self._folder / "result.bin").exists())
            yield part


def test_a_result_appears_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = _WatchedParts(tmp_path)
    monkeypatch.setattr(detached, "pack_outcomes", lambda outcomes, fields: parts)
    detached._write_result(str(tmp_path), "rt:c-0123456789abcdef", "ok", [("ok", 1)], 0.1)
    assert parts.seen and not any(parts.seen)  # never there while being written
    assert (tmp_path / "result.bin").read_bytes() == b"abcdef"
    assert json.loads((tmp_path / "result.json").read_text())["parts"] == [3, 3]
    assert sorted(os.listdir(tmp_path)) == ["result.bin", "result.json"]


def test_a_result_the_disk_refuses_ends_the_call_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "result.bin.tmp").mkdir()  # cannot be opened for writing, as on a full disk
    detached._write_result(str(tmp_path), "rt:c-0123456789abcdef", "ok", [("ok", 1)], 0.1)
    fields = json.loads((tmp_path / "result.json").read_text())
    assert fields["status"] == "no_outcome"
    assert "could not be written" in fields["evalue"]
    assert not (tmp_path / "result.bin").exists()


def test_the_heartbeat_moves_while_the_call_runs(tmp_path: Path) -> None:
    beats: set[int] = set()
    heartbeat = _Heartbeat(str(tmp_path), 0.01)
    with heartbeat:
        # The first beat is there before the call starts, not a moment after.
        assert json.loads((tmp_path / "heartbeat").read_text()) == {"beat": 1}
        deadline = time.monotonic() + 10
        while len(beats) < 3 and time.monotonic() < deadline:
            beats.add(json.loads((tmp_path / "heartbeat").read_text())["beat"])
            time.sleep(0.01)
    assert len(beats) >= 3
    assert not heartbeat._thread.is_alive()  # stopped with the call: nothing writes it now


def test_a_cancel_file_interrupts_the_call_only_while_it_runs(tmp_path: Path) -> None:
    interrupts: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupts.append(signum))
    try:
        with _CancelWatch(str(tmp_path), 0.01):
            (tmp_path / "cancel").touch()
            deadline = time.monotonic() + 10
            while not interrupts and time.monotonic() < deadline:
                time.sleep(0.01)  # the interrupt is aimed at this (the main) thread
        assert interrupts == [signal.SIGINT]
        late = tmp_path / "late"
        late.mkdir()
        with _CancelWatch(str(late), 0.01) as watch:
            watch.finish()  # the call ended
            (late / "cancel").touch()
        assert interrupts == [signal.SIGINT]  # the thread has ended: nothing more can come
    finally:
        signal.signal(signal.SIGINT, previous)
