"""A call's output as the agent sends it: put back in order, and what went missing said aloud.

The agent numbers each call's ``output`` messages and says how many bytes came before each, and
its result says how many it sent in all (see ``wire.py``). Messages travel in order on one
connection, so anything missing was dropped on the way (a server's rate limit, a dropped
connection): it is reported in the output itself and as an :class:`OutputDroppedWarning`, with
how much. Pure logic, so it is tested without a kernel.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import OutputDroppedWarning

#: What the Jupyter server writes to a client's stderr when it starts dropping iopub messages.
RATE_LIMIT_NOTICES = {
    "IOPub data rate exceeded.": "data rate limit (iopub_data_rate_limit)",
    "IOPub message rate exceeded.": "message rate limit (iopub_msg_rate_limit)",
}


def _size(count: int) -> str:
    """An exact byte count, with a rounded one beside it when large: '2,097,152 bytes (2.0 MiB)'."""
    exact = f"{count:,} bytes"
    if count < 1024:
        return exact
    if count < 1024 * 1024:
        return f"{exact} ({count / 1024:.1f} KiB)"
    return f"{exact} ({count / (1024 * 1024):.1f} MiB)"


@dataclass
class _Progress:
    """How far one call's output has come: the next message expected, and the bytes so far."""

    seq: int = 0
    bytes: int = 0


class CallOutputs:
    """Writes each call's output messages to ``write`` in order, and reports gaps."""

    def __init__(self, write: Callable[[str, str], None]) -> None:
        self._write = write
        self._calls: dict[str, _Progress] = {}

    def receive(
        self,
        call_id: str,
        fields: dict[str, Any],
        payload: bytes | memoryview,
        write: Callable[[str, str], None] | None = None,
    ) -> None:
        """One ``output`` message of a call: its text goes out (to ``write`` when given), after
        a note on any gap."""
        write = write or self._write
        progress = self._calls.setdefault(call_id, _Progress())
        seq = int(fields.get("seq", 0))
        offset = int(fields.get("offset", 0))
        if seq < progress.seq:
            return  # already written
        lost = (offset - progress.bytes, seq - progress.seq)
        data = bytes(payload)
        progress.seq = seq + 1
        progress.bytes = offset + len(data)
        if lost[1] > 0 or lost[0] > 0:
            write("stderr", _note(*lost))
        start = 0
        for name, count in _streams(fields.get("streams")):
            write(name, data[start : start + count].decode("utf-8", "replace"))
            start += count
        if lost[1] > 0 or lost[0] > 0:
            _warn_lost(*lost)  # last: a warnings filter set to "error" raises here

    def finish(
        self,
        call_id: str,
        totals: Sequence[Any] | None,
        write: Callable[[str, str], None] | None = None,
    ) -> None:
        """The call's result came, with ``[messages, bytes]`` of output sent: report the rest."""
        write = write or self._write
        progress = self._calls.pop(call_id, _Progress())
        if not totals or len(totals) != 2:
            return
        messages, sent = int(totals[0]), int(totals[1])
        if messages > progress.seq or sent > progress.bytes:
            write("stderr", _note(sent - progress.bytes, messages - progress.seq))
            _warn_lost(sent - progress.bytes, messages - progress.seq)


def _what(count: int, messages: int) -> str:
    return f"{_size(max(count, 0))} of a remote call's output ({messages} message(s))"


def _note(count: int, messages: int) -> str:
    """The line put in the output where text is missing."""
    return f"\n[colabremote: {_what(count, messages)} lost on the way here]\n"


def _warn_lost(count: int, messages: int) -> None:
    warnings.warn(
        f"{_what(count, messages)} lost on the way here: the connection dropped, or a server "
        "between here and the kernel dropped them. The call itself ran and its result is "
        "complete.",
        OutputDroppedWarning,
        stacklevel=3,
    )


def rate_limit_notice(text: str) -> str | None:
    """Which of a Jupyter server's iopub rate limits a stderr text announces, if it is one."""
    for notice, limit in RATE_LIMIT_NOTICES.items():
        if text.lstrip().startswith(notice):
            return limit
    return None


def warn_rate_limited(limit: str) -> None:
    """The server dropped stream output of ours: say which limit, and how to stay under it."""
    warnings.warn(
        f"the Jupyter server dropped output of this session's code: its iopub {limit} was "
        "exceeded. How much it dropped, the server does not say. Output that Python code prints "
        "travels on colabremote's own channel and is not limited; this was output written "
        "directly to file descriptors (subprocesses, C libraries) or by s.exec(). Write less, "
        "or raise the server's limit (--ServerApp.iopub_data_rate_limit, "
        "--ServerApp.iopub_msg_rate_limit).",
        OutputDroppedWarning,
        stacklevel=2,
    )


def _streams(value: Any) -> list[tuple[str, int]]:
    """The ``streams`` field: ``[name, nbytes]`` pairs; names other than stdout are stderr."""
    pairs: list[tuple[str, int]] = []
    for entry in value or ():
        name, count = entry
        pairs.append(("stdout" if name == "stdout" else "stderr", int(count)))
    return pairs
