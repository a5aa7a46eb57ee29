"""State and long jobs, in one file: load a model once and call it many times (a remote class),
stream training metrics as they are produced (a remote generator), and spawn a long job that
outlives this process (a detached call), collected by a second process that attaches by its id.

Run: python examples/state.py
It starts a Colab emulator on this machine (no Google account needed; the "runtime" is this
machine) and points the colab backend at it, so a second process can reach the same runtime, as
a second terminal, or your laptop after it slept, reaches a Colab runtime. For real Colab, sign
in once with `colabremote login --adc` (docs/auth.md), drop the emulator and COLAB_SETTINGS,
and pass gpu="T4" (or the accelerator you use); the collecting process then needs only the
call's id (its first part is the runtime's endpoint).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import colabremote as cr


class Model:
    """Stands in for a real model: loading it is slow (once per instance, on the kernel), and
    predicting with it is quick."""

    loads = 0  # how many times a Model was loaded in this process (the kernel's)

    def __init__(self, name: str) -> None:
        print(f"  loading {name} (once, on the kernel)", flush=True)
        time.sleep(0.5)  # the cost we load once: weights from disk, then to the GPU
        Model.loads += 1
        self.name = name
        self.scale = 3

    def predict(self, batch: list[int]) -> list[int]:
        return [self.scale * x for x in batch]

    def times_loaded(self) -> int:
        return Model.loads


def train(steps: int) -> Iterator[dict[str, float]]:
    """A training loop on the kernel that yields its metrics as it goes; they arrive here as
    they are produced, between the lines it prints."""
    loss = 1.0
    for step in range(1, steps + 1):
        time.sleep(0.1)  # a training step
        loss *= 0.7
        if step % 2 == 0:
            print(f"  (kernel) checkpoint after step {step}", flush=True)
        yield {"step": step, "loss": round(loss, 4)}


def long_job(epochs: int) -> str:
    """A job longer than you want to wait for: it runs on whether or not the process that
    started it is still there, and keeps its output and result on the runtime until collected."""
    for epoch in range(1, epochs + 1):
        time.sleep(0.3)  # an epoch
        print(f"epoch {epoch}/{epochs} done", flush=True)
    return f"trained for {epochs} epochs"


def collect(call_id: str) -> None:
    """The second process: attach to the runtime the call's id names, replay the output it
    missed, follow the rest live, then take the result."""
    endpoint = call_id.rsplit(":", 1)[0]
    with cr.Session("colab", endpoint=endpoint, progress=False) as s:
        call = s.call(call_id)
        print(f"[second process] attached to {call.id} ({call.status().state})", flush=True)
        for text in call.logs(follow=True):
            for line in text.splitlines(keepends=True):
                print(f"[second process] {line}", end="", flush=True)
        print(f"[second process] result: {call.result(timeout=600)}", flush=True)


def main() -> None:
    from colabremote.testing import ColabEmulator

    with ColabEmulator() as emulator:
        # What both processes use to reach the emulator's "Colab": its address, and a token it
        # issued (on Colab, your sign-in stands in for both).
        os.environ["COLABREMOTE_BASE_URL"] = emulator.url
        os.environ["COLABREMOTE_ACCESS_TOKEN"] = emulator.mint_access_token()
        with cr.Session("colab", gpu="T4", progress=False) as s:
            print("1. A model loaded once, called many times")
            model = s.remote(Model)("tiny-model")
            for batch in ([1, 2], [3, 4], [5, 6]):
                print(f"  predict({batch}) = {model.predict(batch)}")
            print(f"  loaded {model.times_loaded()} time(s) for 3 predictions")
            model.close()

            print("2. Training metrics, streamed as they are produced")
            for metrics in s.remote(train)(steps=6):
                print(f"  step {metrics['step']}: loss {metrics['loss']}")

            print("3. A long job, spawned, and collected by another process")
            call = s.remote(long_job).spawn(epochs=5)
            print(f"  spawned {call.id}; this process does not wait for it")
            subprocess.run([sys.executable, __file__, "collect", call.id], check=True)
            print(f"  here too, the job is {call.status().state}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["collect"]:
        collect(sys.argv[2])
    else:
        main()
