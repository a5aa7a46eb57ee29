"""1 GB arguments and results, through a stock jupyter_server (Nagle on, 10 MiB message cap)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import colabremote as cr
from colabremote.testing import JupyterServer

GIB = 1024**3


def checksum_and_echo(x: Any) -> tuple[int, int, Any]:
    return int(x.sum()), int(x.nbytes), x


@pytest.fixture(scope="module")
def stock_session() -> Iterator[cr.Session]:
    with (
        JupyterServer(nodelay=False) as server,
        cr.Session("jupyter", url=server.url, token=server.token, progress=False) as session,
    ):
        yield session


@pytest.mark.slow
def test_gigabyte_argument_and_result(stock_session: cr.Session) -> None:
    data = np.arange(GIB // 8, dtype=np.int64)
    n = data.size
    total, nbytes, back = stock_session.remote(checksum_and_echo)(data)
    assert (total, nbytes) == (n * (n - 1) // 2, GIB)  # the kernel got every byte, in place
    assert back.dtype == np.int64 and back.shape == data.shape
    assert np.array_equal(back, data)
    back[0] = -1  # results are ordinary writable arrays
    assert back[0] == -1 and data[0] == 0
