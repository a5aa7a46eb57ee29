"""Framing: one logical agent message as several comm messages, and putting it back together.

Part of the agent's source bundle (see ``__init__.py``): it imports only the standard library, and
from this package only by ``from .module import name``.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator, Sequence
from typing import Any

from ..wire import DEFAULT_CHUNK_SIZE, Op

Buffer = bytes | bytearray | memoryview


def split_message(
    fields: dict[str, Any], parts: Sequence[Buffer], limit: int = DEFAULT_CHUNK_SIZE
) -> Iterator[tuple[dict[str, Any], list[memoryview]]]:
    """Yield ``(data, buffers)`` comm messages that carry ``fields`` and ``parts``.

    Small parts ride inline on the final message; a part that would push it over ``limit`` is
    sent ahead in chunks of at most ``limit`` bytes. The final message comes last.
    """
    msg_id = fields["id"]
    chunked: list[int] = []
    inline: list[memoryview] = []
    inline_size = 0
    for index, part in enumerate(parts):
        view = memoryview(part).cast("B") if not isinstance(part, memoryview) else part
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        size = view.nbytes
        if inline_size + size <= limit:
            inline.append(view)
            inline_size += size
            continue
        chunked.append(index)
        for offset in range(0, size, limit):
            header = {"op": Op.CHUNK, "id": msg_id, "part": index, "offset": offset, "size": size}
            yield header, [view[offset : offset + limit]]
    yield {**fields, "nparts": len(parts), "chunked": chunked}, inline


_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux: map every page in one go


def allocate(size: int) -> memoryview:
    """A writable buffer of ``size`` bytes for a large part, not filled with zeros first.

    ``bytearray(size)`` writes zeros over every page before the data is copied in, a whole
    extra pass over memory; fresh anonymous pages come zeroed from the operating system, and
    ``MAP_POPULATE`` maps them all in one call instead of one page fault per 4 KiB.
    """
    if size <= 0:
        return memoryview(bytearray(0))
    if os.name == "posix":
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _POPULATE
        return memoryview(mmap.mmap(-1, size, flags=flags))
    return memoryview(mmap.mmap(-1, size))


class Assembler:
    """Puts chunked logical messages back together, one preallocated buffer per part."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[int, tuple[memoryview, int]]] = {}

    def add_chunk(self, data: dict[str, Any], buffer: Buffer) -> None:
        parts = self._pending.setdefault(str(data["id"]), {})
        index = int(data["part"])
        if index not in parts:
            parts[index] = (allocate(int(data["size"])), 0)
        target, received = parts[index]
        view = memoryview(buffer).cast("B")
        offset = int(data["offset"])
        target[offset : offset + view.nbytes] = view
        parts[index] = (target, received + view.nbytes)

    def finish(self, data: dict[str, Any], buffers: Sequence[Buffer]) -> list[memoryview]:
        """The message's parts in order, or ValueError if a chunk went missing."""
        chunks = self._pending.pop(str(data["id"]), {})
        chunked = set(data.get("chunked", ()))
        inline = iter(buffers)
        parts: list[memoryview] = []
        for index in range(int(data.get("nparts", len(buffers)))):
            if index in chunked:
                if index not in chunks:
                    raise ValueError(f"part {index} of message {data['id']} never arrived")
                target, received = chunks[index]
                if received != target.nbytes:
                    raise ValueError(
                        f"part {index} of message {data['id']}: {received} of {target.nbytes} bytes"
                    )
                parts.append(target)
            else:
                parts.append(memoryview(next(inline)).cast("B"))
        return parts

    def discard(self, msg_id: str) -> None:
        self._pending.pop(msg_id, None)
