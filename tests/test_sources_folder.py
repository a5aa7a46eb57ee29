"""The kernel-side folder of shipped sources does not outlive its kernel, however it ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

from colabremote._kernel.agent import loop

HOLDER = textwrap.dedent(
    """
    import sys, tempfile
    tempfile.tempdir = sys.argv[1]
    from colabremote._kernel.agent import loop
    print(loop.sources_folder(), flush=True)
    sys.stdin.read()  # hold the folder until the test closes stdin or kills us
    """
)


@contextlib.contextmanager
def holding(root: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A process that made a sources folder under ``root`` and holds it until stdin closes."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        yield process, Path(process.stdout.readline().strip())


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)  # no exit hook runs
    process.wait()


def test_a_killed_kernels_folder_is_swept_and_a_live_ones_kept(tmp_path: Path) -> None:
    older = tmp_path / f"{loop.SOURCES_PREFIX}older"  # an older agent's: no lock file
    older.mkdir()
    with holding(tmp_path) as (killed, killed_folder), holding(tmp_path) as (_, live_folder):
        assert killed_folder.is_dir() and live_folder.is_dir()
        kill(killed)
        assert killed_folder.is_dir()

        assert loop.sweep_sources(str(tmp_path)) == [str(killed_folder)]
        assert not killed_folder.exists()
        assert live_folder.is_dir() and older.is_dir()
    assert not live_folder.exists()  # a normal exit removes its own


def test_a_new_folder_sweeps_the_dead_ones_first(tmp_path: Path) -> None:
    with holding(tmp_path) as (killed, killed_folder):
        kill(killed)
    assert killed_folder.is_dir()
    with holding(tmp_path) as (_, live_folder):  # the next kernel's agent cleans up
        assert not killed_folder.exists()
        assert os.listdir(live_folder) == [".owner"]
