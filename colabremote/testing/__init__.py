"""Testing helpers: real servers on 127.0.0.1 and pytest fixtures.

- :class:`JupyterServer`: a jupyter_server subprocess with a random token.
- ``pytest -p colabremote.testing.pytest_plugin`` (or installed as a plugin automatically):
  fixtures ``colabremote_session`` and ``jupyter_server``.
"""

from __future__ import annotations

from ._emulator import ColabEmulator
from ._jupyter import JupyterServer, NoDelayConnection

__all__ = ["ColabEmulator", "JupyterServer", "NoDelayConnection"]
