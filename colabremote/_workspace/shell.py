"""Shell commands on the runtime: ``s.shell("nvidia-smi")``.

The command runs through ``/bin/sh -c`` in the kernel's working directory, in a process group of
its own; its stdout and stderr stream back live as it prints and come back whole in a
:class:`ShellResult`. A timeout or an interrupt (Ctrl-C) kills the whole group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..exceptions import RemoteTimeout, ShellCommandError
from . import Caller, by_value

#: How many of stderr's last lines a ShellCommandError shows.
TAIL_LINES = 20
#: How long past its own timeout a command may take to be stopped on the kernel before the call
#: itself is interrupted (the kernel-side stop is the usual path; this is the backstop).
STOP_MARGIN = 30.0


@dataclass(frozen=True)
class ShellResult:
    """What a shell command on the runtime did: its exit status and everything it printed."""

    command: str
    returncode: int
    stdout: str
    stderr: str


async def run(session: Caller, command: str, *, check: bool, timeout: float | None) -> ShellResult:
    """Run ``command`` on the runtime; raise ShellCommandError for a nonzero exit with
    ``check``, and RemoteTimeout (the command killed) past ``timeout``."""
    backstop = None if timeout is None else timeout + STOP_MARGIN
    report = await session.call(_SHELL, (command, timeout), timeout=backstop, name="shell")
    result = ShellResult(command, int(report["returncode"]), report["stdout"], report["stderr"])
    if report["timed_out"]:
        raise RemoteTimeout(
            f"the shell command {command!r} did not finish within {timeout:g} s; it was stopped "
            "(its process group killed)"
        )
    if check and result.returncode != 0:
        tail = result.stderr.splitlines()[-TAIL_LINES:]
        lines = "\n".join(f"  {line}" for line in tail) or "  (nothing on stderr)"
        raise ShellCommandError(
            f"the shell command {command!r} exited with status {result.returncode}; the last "
            f"lines of its stderr:\n{lines}",
            result=result,
        )
    return result


def _shell_on_kernel(  # noqa: PLR0915 - sent whole: it cannot call helpers here
    command: str, timeout: float | None
) -> dict[str, Any]:
    """Runs in the kernel: ``command`` under /bin/sh, its output streamed as it comes."""
    import codecs
    import contextlib
    import os
    import selectors
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen(  # noqa: S603 - running the user's command is the point
        ["/bin/sh", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so a stop reaches its children too
    )
    deadline = None if timeout is None else time.monotonic() + timeout
    captured: dict[str, list[str]] = {"stdout": [], "stderr": []}
    selector = selectors.DefaultSelector()
    assert process.stdout is not None and process.stderr is not None
    for pipe, name, stream in (
        (process.stdout, "stdout", sys.stdout),
        (process.stderr, "stderr", sys.stderr),
    ):
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        selector.register(pipe, selectors.EVENT_READ, (name, stream, decoder))

    def stop() -> None:
        with contextlib.suppress(ProcessLookupError):  # the group has already gone
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    timed_out = False
    try:
        while selector.get_map():
            remaining = left()
            if remaining == 0.0:
                timed_out = True
                break
            for key, _events in selector.select(remaining):
                name, stream, decoder = key.data
                chunk = os.read(key.fd, 65536)
                text = decoder.decode(chunk, final=not chunk)
                if not chunk:
                    selector.unregister(key.fileobj)
                if text:
                    captured[name].append(text)
                    stream.write(text)
                    stream.flush()
        if not timed_out:
            try:
                returncode = process.wait(left())
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out:
            stop()
            returncode = process.returncode
    except BaseException:  # an interrupt (Ctrl-C here, or the call's timeout): stop it all
        stop()
        raise
    finally:
        selector.close()
        process.stdout.close()
        process.stderr.close()
    return {
        "returncode": returncode,
        "stdout": "".join(captured["stdout"]),
        "stderr": "".join(captured["stderr"]),
        "timed_out": timed_out,
    }


_SHELL = by_value(_shell_on_kernel, "colabremote-shell")
