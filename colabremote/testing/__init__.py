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

import importlib
from typing import TYPE_CHECKING, Any

from ._extra import require_emulator_extra

if TYPE_CHECKING:
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

#: Where each name lives. Imported on first use: the pytest plugin loads this package in every
#: test run, also where only the base dependencies are installed (no jupyter_server, no tornado).
_HOMES = {
    "Clock": "._emulator",
    "ColabEmulator": "._emulator",
    "ManualClock": "._emulator",
    "JupyterServer": "._jupyter",
    "NoDelayConnection": "._jupyter",
    "drop_connection": "._sessions",
    "emulator_of": "._sessions",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    require_emulator_extra(f"colabremote.testing.{name}")
    return getattr(importlib.import_module(home, __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
