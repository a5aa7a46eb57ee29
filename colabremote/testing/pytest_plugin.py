"""pytest fixtures for code that uses colabremote.

- ``colabremote_session``: one :class:`~colabremote.Session` for the whole test run, configured
  from ``COLABREMOTE_*`` variables (a local kernel when none are set), closed at the end.
- ``jupyter_server``: a real jupyter_server on 127.0.0.1 for the test run (needs the
  ``colabremote[emulator]`` extra; only a test that uses it fails without it).

The plugin loads in every pytest run of an environment where colabremote is installed, so at
load it imports only the base dependencies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .._api import Session
from .._default import settings_from_environment

if TYPE_CHECKING:
    from ._jupyter import JupyterServer


@pytest.fixture(scope="session")
def colabremote_session() -> Iterator[Session]:
    options = settings_from_environment()
    backend = options.pop("backend")
    with Session(backend, progress=False, **options) as session:
        yield session


@pytest.fixture(scope="session")
def jupyter_server() -> Iterator[JupyterServer]:
    from . import JupyterServer  # names the missing extra when it is not installed

    with JupyterServer() as server:
        yield server
