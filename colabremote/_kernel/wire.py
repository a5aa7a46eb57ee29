"""The agent protocol's names and numbers, shared by the client and the agent in the kernel.

The agent's source bundle includes this module (see ``agent/__init__.py``), so it imports only the
standard library.

Protocol, in comm messages on the target ``colabremote`` (``data`` is JSON, ``buffers`` are bytes):

- A logical message is ``{"op": ..., "id": ..., "nparts": N, "chunked": [...]}`` plus N binary
  parts. Parts larger than the chunk limit travel first as ``chunk`` messages, each with one
  slice, because Jupyter servers drop WebSocket messages over 10 MiB.
- The kernel's facts come back with the install (``hello()``, as a user expression).
- ``sources``: local modules to make importable. ``call``: run a function (parts: function pickle
  if new, arguments pickle, out-of-band buffers). ``ack``: results the client has, to forget.
  ``resume``: stop aborting after an interrupt. ``fetch``: send a kept result again. ``info``:
  slower facts (GPUs). Acknowledgements also ride on every message as an ``ack`` list.
  ``free``: forget kept objects (``agent/objects.py``) whose refs the client dropped.
  slower facts (GPUs). ``spawn``: a detached call (see ``agent/detached.py``). Acknowledgements
  also ride on every message as an ``ack`` list.
- A call is answered by a ``result`` whose ``status`` says how it went. Results are kept, keyed by
  call id, until acknowledged, so a dropped socket loses nothing.
- While a call runs, what it writes to ``sys.stdout`` and ``sys.stderr`` comes ahead of its
  result as ``output`` messages under the call's id: ``seq`` (0, 1, ...), ``offset`` (the bytes
  of output sent before this one), ``streams`` (``[name, nbytes]`` in the order written) and one
  part, the UTF-8 text. The result's ``output`` is ``[messages, bytes]`` sent in all, so the
  client can tell what went missing. Jupyter servers rate-limit stream messages and drop what is
  over the limit; comm messages are counted only by number, and these are few.
- Generators: a ``call`` with ``stream`` (the generator's id) keeps the generator in the kernel
  and runs its first step; each ``next`` runs one more step. A step sends each value as an
  ``item`` message (``index``, one pickled ``[outcome]``) the moment it is produced, in order
  with the output, and is answered by a ``result`` with ``first``, ``count`` and ``done``. The
  kernel keeps each value's pickle until a later message's ``have`` says the client has every
  value before it, so ``replay`` can send values a dropped connection lost. Between steps the
  generator is paused: the client asks for at most ``STREAM_WINDOW`` steps ahead of its
  consumer, which is the back-pressure. ``close_stream`` closes it (``finally`` runs).
"""

from __future__ import annotations

from typing import Final

AGENT_VERSION: Final = 1
#: The comm target the agent opens its comm on.
TARGET_NAME: Final = "colabremote"
#: The agent's module name in the kernel. Pickles name the agent's functions by it, on both sides.
AGENT_MODULE: Final = "_colabremote_agent"
#: The file name the agent's code carries in the kernel (tracebacks leave out its frames).
AGENT_FILENAME: Final = "<colabremote-agent>"
PICKLE_PROTOCOL: Final = 5
#: The longest a call's output waits in the kernel before it is sent (coalescing prints).
OUTPUT_INTERVAL: Final = 0.05
#: The most output text in one ``output`` message; more waiting than this is sent at once.
OUTPUT_MESSAGE_BYTES: Final = 1024 * 1024
#: Writers of output wait while this much is waiting to be sent, so memory stays bounded.
OUTPUT_BUFFER_LIMIT: Final = 8 * 1024 * 1024
#: Largest binary payload put in one comm message. Stock Jupyter servers drop inbound WebSocket
#: messages over 10 MiB; 8 MiB leaves room for the JSON and framing.
DEFAULT_CHUNK_SIZE: Final = 8 * 1024 * 1024
#: A generator step (``call`` with ``stream``, or ``next``) ends after this many values, ...
STREAM_STEP_ITEMS: Final = 1024
#: ... or once the values it sent reach this many bytes (pickled), ...
STREAM_STEP_BYTES: Final = 4 * 1024 * 1024
#: ... or once it has run this long and sent a value: the kernel then waits for the next ``next``.
STREAM_STEP_SECONDS: Final = 0.05
#: Generator steps a client keeps asked for and not yet consumed: the producer is paused beyond.
STREAM_WINDOW: Final = 2


class Op:
    """The ``op`` of an agent message."""

    # from the client
    CALL: Final = "call"
    SOURCES: Final = "sources"  # also the agent's answer
    FETCH: Final = "fetch"
    ACK: Final = "ack"
    RESUME: Final = "resume"
    INFO: Final = "info"  # also the agent's answer
    FREE: Final = "free"  # kept objects the client dropped: ``keys``, ``identity``; no answer
    #: A detached call: run like ``call``, but its output, state and result go to the runtime's
    #: disk (agent/detached.py); the ``result`` at its end carries only the status.
    SPAWN: Final = "spawn"
    # from the agent
    RESULT: Final = "result"
    RESUMED: Final = "resumed"
    OUTPUT: Final = "output"  # what a running call wrote to stdout and stderr
    ERROR: Final = "error"
    # generators (a ``call`` with ``stream`` opens one and runs its first step)
    NEXT: Final = "next"  # run a kept generator for one more step
    CLOSE_STREAM: Final = "close_stream"  # close a kept generator (its ``finally`` runs)
    REPLAY: Final = "replay"  # send a generator's kept values again; also the agent's answer
    ITEM: Final = "item"  # from the agent: one value of a generator step, sent as produced
    # either way: a slice of a large part, sent ahead of its message
    CHUNK: Final = "chunk"


class Status:
    """The ``status`` of a ``result``: how a call went, or why it did not run."""

    OK: Final = "ok"
    #: Stopped by an interrupt; the items before it have outcomes.
    INTERRUPTED: Final = "interrupted"
    #: The function or the arguments could not be loaded in the kernel.
    SETUP_ERROR: Final = "setup_error"
    #: Refused without running: the kernel was interrupted and the client has not said resume.
    ABORTED: Final = "aborted"
    #: Refused without running: the kernel no longer has the function cached.
    NEED_FUNCTION: Final = "need_function"
    #: Refused without running: a chunk of the message never arrived.
    LOST: Final = "lost"
    #: Asked for by ``fetch``, and the kernel never received that call (or forgot its result).
    UNKNOWN: Final = "unknown"
    #: The call started, but its outcome could not be packed or sent; ``evalue`` says why. The
    #: agent keeps this for every call from the moment it starts, so a call that may have run is
    #: never taken for one that never arrived.
    NO_OUTCOME: Final = "no_outcome"


#: Statuses of a call that did not run, so sending it again cannot run it twice.
NEVER_RAN: Final = frozenset({Status.ABORTED, Status.NEED_FUNCTION, Status.LOST})


class ItemStatus:
    """The status of each item's outcome inside a result: ``(status, value or error)``."""

    OK: Final = "ok"
    ERROR: Final = "error"
    INTERRUPTED: Final = "interrupted"
