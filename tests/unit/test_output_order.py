"""Pure logic: a call's output messages put back in order, gaps reported with how much, and the
agent's side that coalesces writes into those messages."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import pytest

from colabremote._kernel.agent.loop import _OutputPump, _utf8_pieces
from colabremote._kernel.output import CallOutputs, rate_limit_notice
from colabremote.exceptions import OutputDroppedWarning


class Written:
    def __init__(self) -> None:
        self.pieces: list[tuple[str, str]] = []

    def __call__(self, name: str, text: str) -> None:
        self.pieces.append((name, text))

    def text(self, name: str) -> str:
        return "".join(t for n, t in self.pieces if n == name)


def message(seq: int, offset: int, *streams: tuple[str, str]) -> tuple[dict[str, Any], bytes]:
    payload = b"".join(text.encode() for _, text in streams)
    fields = {
        "op": "output",
        "id": "c1",
        "seq": seq,
        "offset": offset,
        "streams": [[name, len(text.encode())] for name, text in streams],
    }
    return fields, payload


def test_messages_in_order_are_written_as_they_come() -> None:
    written = Written()
    outputs = CallOutputs(written)
    outputs.receive("c1", *message(0, 0, ("stdout", "a\n"), ("stderr", "é\n")))
    outputs.receive("c1", *message(1, 5, ("stdout", "b\n")))
    outputs.finish("c1", [2, 7])
    assert written.pieces == [("stdout", "a\n"), ("stderr", "é\n"), ("stdout", "b\n")]


def test_a_gap_in_the_sequence_is_said_in_the_output_and_warned_with_the_amount() -> None:
    written = Written()
    outputs = CallOutputs(written)
    outputs.receive("c1", *message(0, 0, ("stdout", "first\n")))
    # Messages 1 and 2 (2,000 bytes in all) were dropped on the way.
    with pytest.warns(OutputDroppedWarning, match=r"2,000 bytes .*\(2 message\(s\)\)"):
        outputs.receive("c1", *message(3, 2006, ("stdout", "last\n")))
    assert written.text("stdout") == "first\nlast\n"
    assert "2,000 bytes" in written.text("stderr")
    assert written.pieces[1][0] == "stderr"  # the note sits where the text is missing


def test_output_lost_after_the_last_message_is_reported_at_the_result() -> None:
    written = Written()
    outputs = CallOutputs(written)
    outputs.receive("c1", *message(0, 0, ("stdout", "x" * 10)))
    with pytest.warns(OutputDroppedWarning, match=r"2,097,152 bytes \(2\.0 MiB\)"):
        outputs.finish("c1", [3, 10 + 2 * 1024 * 1024])
    assert "lost" in written.text("stderr")


def test_nothing_lost_means_no_warning_and_repeats_are_ignored() -> None:
    written = Written()
    outputs = CallOutputs(written)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs.receive("c1", *message(0, 0, ("stdout", "once")))
        outputs.receive("c1", *message(0, 0, ("stdout", "once")))
        outputs.finish("c1", [1, 4])
        outputs.finish("c2", None)  # a call that printed nothing
    assert caught == []
    assert written.pieces == [("stdout", "once")]


def test_the_server_rate_limit_notices_are_recognised() -> None:
    assert rate_limit_notice("IOPub data rate exceeded.\nThe Jupyter server will") == (
        "data rate limit (iopub_data_rate_limit)"
    )
    assert rate_limit_notice("IOPub message rate exceeded.\n") == (
        "message rate limit (iopub_msg_rate_limit)"
    )
    assert rate_limit_notice("an ordinary line\n") is None


def test_utf8_pieces_never_split_a_character() -> None:
    data = ("aé€😀" * 1000).encode()
    pieces = list(_utf8_pieces(data, 7))
    assert b"".join(pieces) == data
    assert all(0 < len(p) <= 7 for p in pieces)
    for piece in pieces:
        piece.decode()  # each piece is whole characters


class Sent:
    """Stands in for the agent's comm: records each output message's fields and payload."""

    def __init__(self) -> None:
        self.messages: list[tuple[dict[str, Any], bytes]] = []
        self.lock = threading.Lock()

    def __call__(self, fields: dict[str, Any], parts: Any) -> None:
        with self.lock:
            self.messages.append((fields, b"".join(bytes(p) for p in parts)))


def test_the_pump_coalesces_keeps_order_and_counts() -> None:
    sent = Sent()
    pump = _OutputPump(sent, "c1", 1024)
    for i in range(1000):
        assert pump.write("stdout", f"{i}\n")
        assert pump.write("stderr", "e")
    assert pump.close() == (len(sent.messages), sum(len(p) for _, p in sent.messages))
    assert not pump.write("stdout", "after the call")  # goes to the kernel's own stream
    assert len(sent.messages) < 100  # 2,000 writes, a few messages
    received = Written()
    outputs = CallOutputs(received)
    for fields, payload in sent.messages:
        assert len(payload) <= 1024
        outputs.receive("c1", fields, payload)
    outputs.finish("c1", [pump.messages, pump.bytes])
    # Order across the two streams survives: stdout, stderr, stdout, ... as written.
    runs: list[tuple[str, str]] = []
    for name, text in received.pieces:
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1] + text)
        else:
            runs.append((name, text))
    expected = []
    for i in range(1000):
        expected += [("stdout", f"{i}\n"), ("stderr", "e")]
    assert runs == expected


def test_a_pump_that_nobody_wrote_to_sends_nothing() -> None:
    sent = Sent()
    pump = _OutputPump(sent, "c1", 1024)
    assert pump.close() == (0, 0)
    assert sent.messages == []


def test_a_gap_under_an_error_filter_still_writes_the_text_first() -> None:
    """With warnings turned into errors (as in this test suite), the warning raises only after
    the note and the text are out, and the next message is not taken for another gap."""
    written = Written()
    outputs = CallOutputs(written)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutputDroppedWarning)
        with pytest.raises(OutputDroppedWarning):
            outputs.receive("c1", *message(1, 10, ("stdout", "after the gap\n")))
        outputs.receive("c1", *message(2, 24, ("stdout", "next\n")))
        outputs.finish("c1", [3, 29])
    assert written.text("stdout") == "after the gap\nnext\n"
    assert "10 bytes" in written.text("stderr")
