"""Jupyter messages, and their two WebSocket encodings.

A :class:`Message` is the five-part Jupyter message (header, parent header, metadata, content,
buffers) plus the channel it travels on. Headers are built by jupyter_client's ``Session.msg`` so
they match what every Jupyter client sends.

Kernel WebSockets speak one of two encodings:

- ``v1.kernel.websocket.jupyter.org`` (asked for by subprotocol): every message is binary:
  an 8-byte little-endian count of offsets, the offsets (8 bytes each, little-endian, the last
  one the total length), the channel name, then header, parent header, metadata and content as
  JSON, then the buffers.
- the legacy protocol (no subprotocol; what Colab's proxy speaks): a text frame holding one JSON
  object with a ``channel`` key, or, for a message with buffers, a binary frame: a 4-byte
  big-endian count n, n 4-byte big-endian offsets, the JSON, then the buffers.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.jsonutil import json_default

V1_SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"

Buffer = bytes | bytearray | memoryview


@dataclass(slots=True)
class Message:
    channel: str
    header: dict[str, Any]
    parent_header: dict[str, Any]
    metadata: dict[str, Any]
    content: dict[str, Any]
    buffers: list[memoryview] = field(default_factory=list)

    @property
    def msg_type(self) -> str:
        return str(self.header.get("msg_type", ""))

    @property
    def msg_id(self) -> str:
        return str(self.header.get("msg_id", ""))

    @property
    def parent_id(self) -> str | None:
        parent = self.parent_header.get("msg_id") if self.parent_header else None
        return None if parent is None else str(parent)

    @classmethod
    def from_dict(cls, msg: dict[str, Any], channel: str | None = None) -> Message:
        return cls(
            channel=channel or str(msg.get("channel", "")),
            header=msg.get("header") or {},
            parent_header=msg.get("parent_header") or {},
            metadata=msg.get("metadata") or {},
            content=msg.get("content") or {},
            buffers=[memoryview(b).cast("B") for b in msg.get("buffers") or ()],
        )


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, default=json_default, separators=(",", ":")).encode()


# -- v1 ----------------------------------------------------------------------------------------


def encode_v1(msg: Message) -> list[Buffer]:
    """Fragments of one binary v1 frame: a small head, then the buffers untouched (no copies)."""
    channel = msg.channel.encode()
    pieces: list[Buffer] = [
        _dump(msg.header),
        _dump(msg.parent_header),
        _dump(msg.metadata),
        _dump(msg.content),
        *msg.buffers,
    ]
    count = len(pieces) + 2  # offsets: the channel's start, its end, and each piece's end
    offsets = [8 * (1 + count)]
    offsets.append(offsets[-1] + len(channel))
    for piece in pieces:
        offsets.append(offsets[-1] + memoryview(piece).nbytes)
    head = (
        struct.pack(f"<{count + 1}Q", count, *offsets)
        + channel
        + b"".join(bytes(p) for p in pieces[:4])
    )
    return [head, *pieces[4:]]


def decode_v1(frame: bytes) -> Message:
    view = memoryview(frame)
    (count,) = struct.unpack_from("<Q", view, 0)
    offsets = struct.unpack_from(f"<{count}Q", view, 8)
    pieces = [view[offsets[i] : offsets[i + 1]] for i in range(count - 1)]
    channel = bytes(pieces[0]).decode()
    header, parent, metadata, content = (json.loads(bytes(p)) for p in pieces[1:5])
    return Message(channel, header, parent, metadata, content, list(pieces[5:]))


# -- legacy ------------------------------------------------------------------------------------


def _legacy_dict(msg: Message) -> dict[str, Any]:
    return {
        "header": msg.header,
        "msg_id": msg.header.get("msg_id"),
        "msg_type": msg.header.get("msg_type"),
        "parent_header": msg.parent_header,
        "metadata": msg.metadata,
        "content": msg.content,
        "channel": msg.channel,
        "buffers": [],
    }


def encode_legacy(msg: Message) -> str | list[Buffer]:
    """A text frame, or for a message with buffers the fragments of one binary frame."""
    if not msg.buffers:
        return _dump(_legacy_dict(msg)).decode()
    body = _legacy_dict(msg)
    del body["buffers"]
    head_json = _dump(body)
    parts: Sequence[Buffer] = [head_json, *msg.buffers]
    count = len(parts)
    offsets = [4 * (count + 1)]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + memoryview(part).nbytes)
    head = struct.pack(f"!{count + 1}I", count, *offsets) + head_json
    return [head, *msg.buffers]


def decode_legacy(frame: str | bytes) -> Message:
    if isinstance(frame, str):
        return Message.from_dict(json.loads(frame))
    view = memoryview(frame)
    (count,) = struct.unpack_from("!I", view, 0)
    offsets = [*list(struct.unpack_from(f"!{count}I", view, 4)), len(view)]
    parts = [view[offsets[i] : offsets[i + 1]] for i in range(count)]
    msg = json.loads(bytes(parts[0]))
    result = Message.from_dict(msg)
    result.buffers = list(parts[1:])
    return result


@dataclass
class AgentReply:
    """The agent's answer to one request: its JSON fields and its binary parts."""

    fields: dict[str, Any]
    parts: list[memoryview]
