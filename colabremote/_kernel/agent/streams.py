"""Generators kept in the kernel between the client's ``next`` messages (see ``wire.py``).

The kernel handles one agent message at a time on its main thread, so a generator cannot wait
inside a message for the client to want more: it is kept here, paused, and each step runs it
for a bounded number of values. An async generator gets an event loop of its own, run on the
main thread only while a step runs (the kernel's own loop is set aside meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from typing import Any

#: What :meth:`GeneratorState.advance` returns when the generator has finished.
GENERATOR_DONE: Any = object()


class GeneratorState:
    """One generator in the kernel, the values it produced, and their pickles until confirmed."""

    def __init__(self, produced: Any) -> None:
        if not (inspect.isgenerator(produced) or inspect.isasyncgen(produced)):
            raise TypeError(
                f"the function returned {type(produced).__name__}, not a generator; a remote "
                "generator function must contain `yield`"
            )
        self.generator: Any = produced
        self.is_async = inspect.isasyncgen(produced)
        self.loop: asyncio.AbstractEventLoop | None = (
            asyncio.new_event_loop() if self.is_async else None
        )
        #: Values produced so far (the next one's index).
        self.produced = 0
        #: The generator has finished (returned or raised): no more values.
        self.done = False
        #: ``(index, parts)`` of values the client has not confirmed, oldest first.
        self.kept: deque[tuple[int, list[memoryview]]] = deque()

    def advance(self) -> Any:
        """The next value, or :data:`GENERATOR_DONE`; an exception the generator raises
        propagates (and finishes it)."""
        try:
            if self.loop is None:
                return next(self.generator)
            return self._run_async(self.generator.__anext__())
        except (StopIteration, StopAsyncIteration):
            self.done = True
            self.finish()
            return GENERATOR_DONE
        except BaseException:
            self.done = True
            self.finish()
            raise

    def keep(self, parts: list[memoryview]) -> int:
        """Keep a value's pickle for a replay; its index."""
        index = self.produced
        self.produced += 1
        self.kept.append((index, parts))
        return index

    def confirm(self, have: int) -> None:
        """The client has every value before ``have``: their pickles can go."""
        while self.kept and self.kept[0][0] < have:
            self.kept.popleft()

    def replay(self, start: int) -> tuple[list[list[int]], list[memoryview]]:
        """The kept values from ``start`` on, for a ``replay`` answer: ``[index, nparts]`` each,
        and their parts in that order."""
        layout: list[list[int]] = []
        parts: list[memoryview] = []
        for index, item_parts in self.kept:
            if index >= start:
                layout.append([index, len(item_parts)])
                parts.extend(item_parts)
        return layout, parts

    def close(self) -> None:
        """Close the generator (its ``finally`` runs here); what that raises propagates."""
        self.kept.clear()
        try:
            if not self.done:
                self.done = True
                if self.loop is None:
                    self.generator.close()
                else:
                    self._run_async(self.generator.aclose())
        finally:
            self.finish()

    def finish(self) -> None:
        """Let go of the async generator's event loop, once nothing more will run on it."""
        loop, self.loop = self.loop, None
        if loop is not None and not loop.is_closed():
            try:
                self._on(loop, loop.shutdown_asyncgens())
            finally:
                loop.close()

    def _run_async(self, step: Any) -> Any:
        assert self.loop is not None
        return self._on(self.loop, step)

    @staticmethod
    def _on(loop: asyncio.AbstractEventLoop, step: Any) -> Any:
        # The kernel's own loop is running on this thread (a message handler runs inside it):
        # it is set aside while ours runs the step, and put back after.
        running = asyncio._get_running_loop()
        asyncio._set_running_loop(None)
        try:
            task = asyncio.ensure_future(step, loop=loop)
            try:
                return loop.run_until_complete(task)
            except BaseException:
                # An interrupt stopped the loop mid-step: cancel the step, so the generator
                # sees CancelledError where it waits and its ``finally`` runs.
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        loop.run_until_complete(task)
                raise
        finally:
            asyncio._set_running_loop(running)
