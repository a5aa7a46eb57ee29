"""pytest fixtures for code that uses colabremote.

- ``colabremote_session``: one :class:`~colabremote.Session` for the whole test run, configured
  from ``COLABREMOTE_*`` variables (a local kernel when none are set), closed at the end.
- ``jupyter_server``: a real jupyter_server on 127.0.0.1 for the test run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .._api import Session
from .._default import settings_from_environment
from ._jupyter import JupyterServer


@pytest.fixture(scope="session")
def colabremote_session() -> Iterator[Session]:
    options = settings_from_environment()
    backend = options.pop("backend")
    with Session(backend, progress=False, **options) as session:
        yield session


@pytest.fixture(scope="session")
def jupyter_server() -> Iterator[JupyterServer]:
    with JupyterServer() as server:
        yield server
