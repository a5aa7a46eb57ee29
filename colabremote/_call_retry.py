"""``retries=`` for idempotent remote functions: a call is run again on a fresh kernel when its
kernel died, and again when it raised one of ``retry_on``; never for anything else, and never
for a :class:`RefLost` (a ref or instance from a dead kernel stays lost however often it is sent).

Each retry is one INFO line on ``colabremote.retry``, like every other retry (``_retry.py``).
Only the items of a batch that failed are run again; the others keep their outcomes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from ._kernel.wire import ItemStatus
from ._retry import _describe, log, wait_scale
from ._serialization import rebuild_exception
from ._session.core import Item, Outcome
from .exceptions import KernelDied, RefLost, RemoteTimeout

__all__ = ["run_with_retries"]

#: The first wait before a retry (doubling after each), in seconds, before the test switch.
FIRST_WAIT = 0.5
LONGEST_WAIT = 10.0


def _retried(error: BaseException, retry_on: tuple[type[BaseException], ...]) -> bool:
    return isinstance(error, (KernelDied, *retry_on)) and not isinstance(error, RefLost)


def _reason(error: BaseException | None) -> str:
    """Why a call is retried, for the log: our own messages for a dead kernel or a timeout,
    else only the exception's type (its text may quote the call's arguments)."""
    if isinstance(error, (KernelDied, RemoteTimeout)):
        return _describe(error)
    return type(error).__name__


async def run_with_retries(
    run: Callable[[list[Item]], Awaitable[tuple[list[Outcome], float]]],
    items: Sequence[Item],
    *,
    retries: int,
    retry_on: tuple[type[BaseException], ...],
    name: str,
) -> tuple[list[Outcome], float]:
    """``run(items)``, with up to ``retries`` more tries for the items whose call failed in a
    way worth retrying; the outcomes in the items' order, and the kernel seconds in all."""
    outcomes: list[Outcome | None] = [None] * len(items)
    pending = list(range(len(items)))
    seconds = 0.0
    attempt = 1
    while True:
        why: BaseException | None = None
        try:
            got, spent = await run([items[i] for i in pending])
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if attempt > retries or not _retried(error, retry_on):
                raise
            why = error
        else:
            seconds += spent
            again = []
            for index, outcome in zip(pending, got, strict=True):
                outcomes[index] = outcome
                if outcome[0] == ItemStatus.ERROR and retry_on and attempt <= retries:
                    raised = rebuild_exception(outcome[1])
                    if isinstance(raised, retry_on) and not isinstance(raised, RefLost):
                        again.append(index)
                        why = why or raised
            pending = again
        if not pending:
            return [o for o in outcomes if o is not None], seconds
        wait = min(FIRST_WAIT * 2 ** (attempt - 1), LONGEST_WAIT) * wait_scale()
        log.info(
            "retrying %s after %s (attempt %d of %d failed; waiting %.3g s)",
            name,
            _reason(why),
            attempt,
            retries + 1,
            wait,
        )
        attempt += 1
        if wait > 0:
            await asyncio.sleep(wait)
