"""examples/state.py runs as a user runs it (``python examples/state.py``, against an emulator it
starts, offline) and does what it says: a model loaded once, metrics streamed in order, a
spawned job collected whole by a second process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "state.py"

pytestmark = pytest.mark.slow


def test_the_state_example_loads_once_streams_and_collects_from_another_process(
    tmp_path: Path,
) -> None:
    run = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    printed = run.stdout + run.stderr
    assert run.returncode == 0, printed
    lines = run.stdout.splitlines()
    assert printed.count("loading tiny-model") == 1
    assert "  predict([5, 6]) = [15, 18]" in lines
    assert "  loaded 1 time(s) for 3 predictions" in lines
    # Each value as it was produced, with the kernel's own output between them, in order.
    streamed = [line for line in lines if line.startswith(("  step ", "  (kernel) checkpoint"))]
    assert streamed == [
        "  step 1: loss 0.7",
        "  (kernel) checkpoint after step 2",
        "  step 2: loss 0.49",
        "  step 3: loss 0.343",
        "  (kernel) checkpoint after step 4",
        "  step 4: loss 0.2401",
        "  step 5: loss 0.1681",
        "  (kernel) checkpoint after step 6",
        "  step 6: loss 0.1176",
    ]
    # The second process got the whole output once, then the result once.
    collected = [line for line in lines if line.startswith("[second process] epoch")]
    assert collected == [f"[second process] epoch {n}/5 done" for n in range(1, 6)]
    assert lines.count("[second process] result: trained for 5 epochs") == 1
    assert "  here too, the job is done" in lines
    assert "Warning" not in run.stderr  # nothing left running at the end
