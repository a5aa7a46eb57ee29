"""Pure logic: WebSocket encodings, the chunking of large messages, the agent's source bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from colabremote._kernel.agent.framing import Assembler, split_message
from colabremote._kernel.messages import (
    Message,
    decode_legacy,
    decode_v1,
    encode_legacy,
    encode_v1,
)


def _message(buffers: list[bytes]) -> Message:
    return Message(
        "shell",
        {"msg_id": "m1", "msg_type": "comm_msg", "session": "s"},
        {"msg_id": "p0"},
        {"k": 1},
        {"comm_id": "c", "data": {"op": "call", "text": "é"}},
        [memoryview(b) for b in buffers],
    )


def _join(frame: str | list[bytes | bytearray | memoryview]) -> str | bytes:
    return frame if isinstance(frame, str) else b"".join(bytes(p) for p in frame)


@pytest.mark.parametrize("buffers", [[], [b"abc"], [b"", b"x" * 1000, b"\x00\xff"]])
def test_v1_round_trip(buffers: list[bytes]) -> None:
    msg = _message(buffers)
    frame = _join(encode_v1(msg))
    assert isinstance(frame, bytes)
    back = decode_v1(frame)
    assert (back.channel, back.header, back.parent_header) == (
        "shell",
        msg.header,
        {"msg_id": "p0"},
    )
    assert (back.metadata, back.content) == (msg.metadata, msg.content)
    assert [bytes(b) for b in back.buffers] == buffers


@pytest.mark.parametrize("buffers", [[], [b"abc"], [b"", b"y" * 999]])
def test_legacy_round_trip(buffers: list[bytes]) -> None:
    msg = _message(buffers)
    frame = encode_legacy(msg)
    assert isinstance(frame, str) == (not buffers)  # text frames unless there are buffers
    back = decode_legacy(_join(frame))
    assert (back.channel, back.header, back.content) == ("shell", msg.header, msg.content)
    assert [bytes(b) for b in back.buffers] == buffers


def test_legacy_binary_layout_matches_jupyter_server() -> None:
    """4-byte big-endian count (the JSON counts), then offsets from the frame start."""
    frame = _join(encode_legacy(_message([b"12345"])))
    assert isinstance(frame, bytes)
    count = int.from_bytes(frame[0:4], "big")
    first = int.from_bytes(frame[4:8], "big")
    second = int.from_bytes(frame[8:12], "big")
    assert (count, first) == (2, 12)
    assert frame[second:] == b"12345"


@pytest.mark.parametrize(
    ("sizes", "limit"),
    [([10, 20], 100), ([250], 100), ([99, 2, 300, 0], 100), ([100, 100, 100], 100)],
)
def test_split_and_assemble(sizes: list[int], limit: int) -> None:
    parts = [bytes([i]) * size for i, size in enumerate(sizes)]
    messages = list(split_message({"op": "call", "id": "c1"}, parts, limit))
    assert all(sum(len(b) for b in buffers) <= limit for _, buffers in messages)
    assert messages[-1][0]["op"] == "call"
    assembler = Assembler()
    for data, buffers in messages[:-1]:
        assert data["op"] == "chunk"
        assembler.add_chunk(data, buffers[0])
    final, inline = messages[-1]
    assert [bytes(p) for p in assembler.finish(final, inline)] == parts


def test_missing_chunk_is_detected() -> None:
    messages = list(split_message({"op": "call", "id": "c2"}, [b"z" * 250], 100))
    assembler = Assembler()
    assembler.add_chunk(messages[0][0], messages[0][1][0])  # the second chunk is lost
    with pytest.raises(ValueError, match="bytes"):
        assembler.finish(*messages[-1])


@pytest.mark.parametrize(
    "sizes", [[0], [5], [3, 1, 7], [125], [126], [65535], [65536], [1, 70001, 2, 3]]
)
def test_masked_frame_is_one_final_binary_frame(sizes: list[int]) -> None:
    """The gathered send: websockets' own parser (a server's view) reads back the pieces."""
    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    from colabremote._kernel.websocket import masked_frame

    pieces = [bytes((i * 7 + j) % 256 for j in range(size)) for i, size in enumerate(sizes)]
    reader = StreamReader()
    for chunk in masked_frame([memoryview(p) for p in pieces], b"\x9a\x01\xfe\x37"):
        reader.feed_data(chunk)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=True)
    with pytest.raises(StopIteration) as done:
        next(parser)
    frame = done.value.value
    assert (frame.opcode, frame.fin, frame.rsv1) == (Opcode.BINARY, True, False)
    assert bytes(frame.data) == b"".join(pieces)


def test_assembled_parts_are_writable_and_exact() -> None:
    """Large parts land in buffers of exactly their size, which the receiver may modify."""
    parts = [bytes(range(256)) * 4096 + b"tail"]  # 1 MiB and a bit, in 64 KiB chunks
    messages = list(split_message({"op": "result", "id": "r1"}, parts, 65536))
    assembler = Assembler()
    for data, buffers in messages[:-1]:
        assembler.add_chunk(data, buffers[0])
    (out,) = assembler.finish(*messages[-1])
    assert out.nbytes == len(parts[0]) and not out.readonly
    assert bytes(out) == parts[0]
    out[0] = 255
    assert out[0] == 255


def test_masked_frame_never_writes_empty_bytes() -> None:
    """websockets takes an empty write for end-of-file, so empty pieces must not become one."""
    from colabremote._kernel.websocket import masked_frame

    assert all(masked_frame([b"head", b"", memoryview(b""), b"x"], b"\x01\x02\x03\x04"))


# -- the agent's source bundle -----------------------------------------------------------------


def _bundle_namespace() -> dict[str, Any]:
    from colabremote._kernel import wire
    from colabremote._kernel.agent import agent_source

    namespace: dict[str, Any] = {"__name__": wire.AGENT_MODULE}
    exec(compile(agent_source(), wire.AGENT_FILENAME, "exec"), namespace)
    return namespace


def test_the_agent_bundle_defines_what_the_client_relies_on() -> None:
    from colabremote._kernel import wire

    agent = _bundle_namespace()
    # The install code calls these, and pickles from either side name the last three.
    for name in ("install", "hello_json", "rebuild_code", "module_namespace", "dataclass_setstate"):
        assert callable(agent[name]), name
    for name in ("rebuild_code", "module_namespace", "dataclass_setstate"):
        assert agent[name].__module__ == wire.AGENT_MODULE
    assert agent["hello"]()["agent_version"] == wire.AGENT_VERSION
    assert agent["Op"].CALL == wire.Op.CALL
    assert agent["TARGET_NAME"] == wire.TARGET_NAME


def test_the_agent_bundle_imports_only_the_standard_library_and_cloudpickle() -> None:
    import ast
    import sys

    from colabremote._kernel.agent import agent_source

    tree = ast.parse(agent_source())
    imported = set()
    for node in tree.body:  # top level; the kernel's own IPython is imported where it is used
        if isinstance(node, ast.Import):
            imported |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, ast.unparse(node)
            imported.add(str(node.module).partition(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"cloudpickle"}


def test_pickles_name_the_agent_module_on_the_client_too() -> None:
    import sys

    from colabremote._kernel import wire
    from colabremote._kernel.agent import shipping

    assert sys.modules[wire.AGENT_MODULE] is shipping
    assert shipping.rebuild_code.__module__ == wire.AGENT_MODULE


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("from .framing import not_defined_yet\n", "cannot be bundled"),
        ("from .framing import Assembler as Other\n", "cannot be bundled"),
        ("Op = 1\n", r"defines \['Op'\] again"),
    ],
)
def test_the_bundler_refuses_what_one_module_text_cannot_hold(
    tmp_path: Path, text: str, problem: str
) -> None:
    from types import ModuleType

    from colabremote._kernel import wire
    from colabremote._kernel.agent import _bundled_text, framing

    defined: set[str] = set()
    for module in (wire, framing):
        _bundled_text(module, defined)
    assert {"Op", "Assembler"} <= defined
    source = tmp_path / "extra.py"
    source.write_text(text)
    extra = ModuleType("extra")
    extra.__file__ = str(source)
    with pytest.raises(RuntimeError, match=problem):
        _bundled_text(extra, defined)
