"""examples/workspace.py runs as a user runs it (``python examples/workspace.py``, against the
emulator, offline) and does what it says: packages, a secret, a synced folder, shell lines, live
training output, a forwarded port, downloaded outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "workspace.py"

pytestmark = pytest.mark.slow


def test_the_workspace_example_runs_and_downloads_the_outputs(tmp_path: Path) -> None:
    token = "example-token-" + os.urandom(8).hex()
    env = dict(os.environ, EXAMPLE_API_TOKEN=token, XDG_CACHE_HOME=str(tmp_path / "cache"))
    run = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    printed = run.stdout + run.stderr
    assert run.returncode == 0, printed
    assert "Requirement already satisfied: cloudpickle" in run.stdout  # the installer, live
    assert "shell lines run as in a notebook cell: 5 epochs" in run.stdout  # env= on the runtime
    for epoch in range(1, 6):
        assert f"epoch {epoch}/5" in run.stdout
    assert "synced 1 file(s)" in run.stdout
    assert "100 samples" in run.stdout  # the synced data, read on the runtime
    assert "the dashboard shows 5 epochs" in run.stdout  # the forwarded port
    assert "downloaded to outputs/: metrics.json, model.txt" in run.stdout
    metrics = json.loads((tmp_path / "outputs" / "metrics.json").read_text())
    assert len(metrics["loss"]) == 5 and metrics["signed_in"] is True  # the secret arrived
    assert (tmp_path / "outputs" / "model.txt").read_text() == "weights after 5 epochs\n"
    assert token not in printed  # a secret is never printed
