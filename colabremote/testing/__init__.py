"""Testing helpers: real servers on 127.0.0.1, faults to put on sessions, and pytest fixtures.

- :class:`ColabEmulator`: the Colab service (sign-in, control plane, runtime proxies) on
  127.0.0.1, with fault switches; ``ColabEmulator(clock=ManualClock())`` puts its expiries and
  idle timers on a :class:`ManualClock` that a test moves with ``advance(seconds)``.
- :class:`JupyterServer`: a jupyter_server subprocess with a random token.
- :func:`emulator_of`: the emulator behind a ``backend="emulator"`` session.
- :func:`drop_connection`: cut a session's kernel WebSocket, as a network failure would.
- ``pytest -p colabremote.testing.pytest_plugin`` (or installed as a plugin automatically):
  fixtures ``colabremote_session`` and ``jupyter_server``.
"""

from __future__ import annotations

from ._emulator import Clock, ColabEmulator, ManualClock
from ._jupyter import JupyterServer, NoDelayConnection
from ._sessions import drop_connection, emulator_of

__all__ = [
    "Clock",
    "ColabEmulator",
    "JupyterServer",
    "ManualClock",
    "NoDelayConnection",
    "drop_connection",
    "emulator_of",
]
