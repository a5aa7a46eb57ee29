"""The terminal's pure logic: the ready and exit markers cut out of the shell's output, whatever
way it is split into pieces, and the checks on window sizes."""

from __future__ import annotations

import pytest

from colabremote._workspace.terminal import (
    EXIT_TAG,
    READY_TAG,
    OutputFilter,
    check_size,
    colab_tty_url,
    setup_line,
    terminal_size_option,
)
from colabremote.exceptions import ConfigurationError

NONCE = "0123abcd"
RAW = (
    f"$ {setup_line(NONCE)}\r\n{READY_TAG}_{NONCE}\r\n$ ls\r\na.txt\r\n$ exit 3\r\nexit\r\n"
    f"{EXIT_TAG}_{NONCE}:3\r\n"
)
SHOWN = "$ ls\r\na.txt\r\n$ exit 3\r\nexit\r\n"


def _through(pieces: list[str]) -> tuple[str, OutputFilter]:
    f = OutputFilter(NONCE)
    shown = "".join(f.feed(p) for p in pieces) + f.flush()
    return shown, f


def test_the_markers_are_cut_out_and_the_status_kept() -> None:
    shown, f = _through([RAW])
    assert shown == SHOWN
    assert f.ready and f.exit_status == 3


@pytest.mark.parametrize("at", range(1, len(RAW)))
def test_any_split_gives_the_same_result(at: int) -> None:
    shown, f = _through([RAW[:at], RAW[at:]])
    assert shown == SHOWN
    assert f.exit_status == 3


def test_one_character_at_a_time() -> None:
    shown, f = _through(list(RAW))
    assert shown == SHOWN and f.exit_status == 3


def test_the_echoed_setup_line_never_counts_as_a_marker() -> None:
    f = OutputFilter(NONCE)
    assert f.feed(setup_line(NONCE)) == ""
    assert not f.ready and f.exit_status is None


def test_text_like_a_marker_with_another_nonce_is_shown() -> None:
    f = OutputFilter(NONCE)
    f.feed(f"{READY_TAG}_{NONCE}\r\n")
    other = f"{EXIT_TAG}_ffffffff:1\r\n"
    assert f.feed(other) + f.flush() == other
    assert f.exit_status is None


def test_the_setup_line_is_one_line_starting_with_a_space() -> None:
    line = setup_line(NONCE)
    assert line.startswith(" ") and line.endswith("\n") and line.count("\n") == 1


@pytest.mark.parametrize(
    ("cols", "rows"), [(0, 24), (80, -1), (80.0, 24), (True, 24), ("80", 24), (80, 10_000)]
)
def test_bad_sizes_are_configuration_errors(cols: object, rows: object) -> None:
    with pytest.raises(ConfigurationError, match="terminal size"):
        check_size(cols, rows)


def test_sizes_come_in_pairs() -> None:
    assert terminal_size_option(None, None) is None
    assert terminal_size_option(80, 24) == (80, 24)
    with pytest.raises(ConfigurationError, match="both cols= and rows="):
        terminal_size_option(80, None)


def test_the_tty_url_is_at_the_proxy_origin() -> None:
    assert colab_tty_url("https://8080-m-s-abc.prod.colab.dev/some/base?x=1") == (
        "wss://8080-m-s-abc.prod.colab.dev/colab/tty"
    )
    assert colab_tty_url("http://127.0.0.1:4321") == "ws://127.0.0.1:4321/colab/tty"


def test_a_marker_cut_short_by_the_end_of_output_still_counts() -> None:
    f = OutputFilter(NONCE)
    shown = f.feed(f"{READY_TAG}_{NONCE}\r\nbye\r\n{EXIT_TAG}_{NONCE}:42\r") + f.flush()
    assert shown == "bye\r\n" and f.exit_status == 42
