"""The kernel is a trust boundary: what other code in the kernel can make the user's side do.

Code in the kernel that is not the agent (a dependency, a second client of the same kernel) can
publish messages on the agent's comm and send ``colab_request`` messages. The client takes only
replies and requests that belong to its own requests, and with ``trust_kernel=False`` rebuilds
results only as plain data. Every attack here would write a marker file on this machine.
"""

from __future__ import annotations

import datetime
import decimal
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import colabremote as cr
from colabremote._colab.auth import EnvironmentToken
from colabremote._kernel.client import KernelClient
from colabremote._kernel.messages import Message
from colabremote.exceptions import RemoteError, RemoteTraceback, ResultRefused
from colabremote.testing import ColabEmulator, JupyterServer

# Runs in the kernel: once told to go, sends a "result" for each of the ids the client is likely
# to use, on every agent's comm (every client's), whose pickle would create ``marker`` where it
# is unpickled.
FORGER = """
import io, os, pickle, time

def _forge(go, marker, prefix):
    class Evil:
        def __reduce__(self):
            return (io.open, (marker, "w"))

    forged = pickle.dumps([("ok", Evil())], protocol=5)
    print("forger-ready", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)
    from comm import get_comm_manager

    comms = get_comm_manager().comms.values()
    for comm in [c for c in comms if c.target_name == "colabremote"]:
        for n in range(200):
            data = {"op": "result", "id": f"{prefix}-{n}", "status": "ok", "seconds": 0.0,
                    "nparts": 1, "chunked": []}
            comm.send(data=data, buffers=[forged])
"""


def answer() -> int:
    return 42


class Ready:
    """An output handler that says when the kernel printed ``forger-ready``."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, name: str, text: str) -> None:
        if "forger-ready" in text:
            self.event.set()


def touch_when_a_call_is_sent(client: KernelClient, path: Path) -> None:
    """Create ``path`` right after the client has sent a call to the kernel."""
    transport: Any = client.transport
    send = transport.send

    async def sending(msg: Message) -> None:
        await send(msg)
        if msg.msg_type == "comm_msg" and msg.content["data"].get("op") == "call":
            path.touch()

    transport.send = sending


def client_of(session: cr.Session) -> KernelClient:
    client = session._core.client
    assert client is not None
    return client


def forge_while_a_call_waits(
    victim: cr.Session, forger: cr.Session, ready: Ready, tmp_path: Path
) -> tuple[Path, int]:
    """``forger`` runs code that forges results while ``victim``'s call waits behind it."""
    marker, go = tmp_path / "pwned", tmp_path / "go"
    client = client_of(victim)
    touch_when_a_call_is_sent(client, go)
    code = FORGER + f"_forge({str(go)!r}, {str(marker)!r}, {client.session_id[:8]!r})\n"
    forging = threading.Thread(target=forger.exec, args=(code,), kwargs={"timeout": 120})
    forging.start()
    try:
        assert ready.event.wait(60)
        result = victim.remote(answer)()
    finally:
        forging.join(120)
    return marker, result


def test_a_result_forged_by_code_in_the_kernel_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Our own execute grabs the agent's comm and answers the call queued behind it."""
    caplog.set_level(logging.WARNING, logger="colabremote")
    ready = Ready()
    with cr.Session("local", on_output=ready, progress=False) as s:
        s.exec("pass")
        marker, result = forge_while_a_call_waits(s, s, ready, tmp_path)
        assert result == 42
        assert not marker.exists()
        assert "dropped a message on the agent's comm" in caplog.text
        assert "pwned" not in caplog.text  # no payload in the log
        assert s.remote(answer)() == 42


def test_a_result_forged_from_a_second_connection_is_dropped(
    jupyter_server: JupyterServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A second client of the same kernel answers our call for us: it is not taken."""
    caplog.set_level(logging.WARNING, logger="colabremote")
    options: dict[str, Any] = {"url": jupyter_server.url, "token": jupyter_server.token}
    ready = Ready()
    with cr.Session("jupyter", progress=False, **options) as s:
        s.exec("pass")
        kernel_id = s.info().details["kernel_id"]
        with cr.Session(
            "jupyter", kernel_id=kernel_id, on_output=ready, progress=False, **options
        ) as other:
            other.exec("pass")
            marker, result = forge_while_a_call_waits(s, other, ready, tmp_path)
        assert result == 42
        assert not marker.exists()
        assert "dropped a message on the agent's comm" in caplog.text
        assert s.remote(answer)() == 42


# -- trust_kernel=False: plain data only ---------------------------------------------------------


@pytest.fixture(scope="module", params=["local", "jupyter"])
def untrusting(request: pytest.FixtureRequest) -> Iterator[cr.Session]:
    options: dict[str, Any] = {}
    if request.param == "jupyter":
        server: JupyterServer = request.getfixturevalue("jupyter_server")
        options = {"url": server.url, "token": server.token}
    with cr.Session(request.param, trust_kernel=False, progress=False, **options) as s:
        yield s


def plain_data() -> dict[str, Any]:
    import datetime
    import decimal

    import numpy as np

    return {
        "scalars": [None, True, 7, 2.5, 1 + 2j, "text", b"bytes", bytearray(b"ba")],
        "containers": ((1, 2), [3], {4}, frozenset({5}), {"k": {"nested": [6]}}),
        "array": np.arange(12.0).reshape(3, 4),
        "large": np.ones(1_000_000, dtype=np.float32),  # out of band
        "strided": np.arange(10)[::2],
        "records": np.zeros(2, dtype=[("a", "i4"), ("b", "f8")]),
        "objects": np.array([1, "a"], dtype=object),
        "numpy_scalars": (np.float32(1.5), np.int64(3), np.bool_(True)),
        "when": datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.timezone.utc),
        "how_long": datetime.timedelta(seconds=5),
        "money": decimal.Decimal("1.10"),
        "error_value": ValueError("as a value"),
    }


def test_plain_data_and_numpy_come_back(untrusting: cr.Session) -> None:
    got = untrusting.remote(plain_data)()
    assert got["scalars"] == [None, True, 7, 2.5, 1 + 2j, "text", b"bytes", bytearray(b"ba")]
    assert got["containers"] == ((1, 2), [3], {4}, frozenset({5}), {"k": {"nested": [6]}})
    np.testing.assert_array_equal(got["array"], np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(got["large"], np.ones(1_000_000, dtype=np.float32))
    np.testing.assert_array_equal(got["strided"], np.arange(10)[::2])
    assert got["records"].dtype.names == ("a", "b")
    assert list(got["objects"]) == [1, "a"]
    assert got["numpy_scalars"] == (np.float32(1.5), np.int64(3), np.bool_(True))
    assert got["when"] == datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.timezone.utc)
    assert got["how_long"] == datetime.timedelta(seconds=5)
    assert got["money"] == decimal.Decimal("1.10")
    assert isinstance(got["error_value"], ValueError)


def system_call(marker: str) -> object:
    import os

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    return Evil()


def a_class_instance() -> object:
    import fractions

    return fractions.Fraction(1, 3)


def test_a_result_that_names_other_code_is_refused(untrusting: cr.Session, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(ResultRefused) as info:
        untrusting.remote(system_call)(str(marker))
    assert info.value.type_name in ("posix.system", "nt.system", "os.system")
    assert info.value.type_name in str(info.value)
    assert not marker.exists()
    with pytest.raises(ResultRefused, match=r"fractions\.Fraction"):
        untrusting.remote(a_class_instance)()
    assert untrusting.remote(answer)() == 42  # the session goes on


def raise_builtin() -> None:
    raise KeyError("missing")


def raise_custom(marker: str) -> None:
    import os

    class Sneaky(Exception):
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    raise Sneaky("sneaky text")


def test_exceptions_come_back_as_builtins_or_remote_error(
    untrusting: cr.Session, tmp_path: Path
) -> None:
    with pytest.raises(KeyError) as builtin:
        untrusting.remote(raise_builtin)()
    assert "missing" in str(builtin.value)
    assert isinstance(builtin.value.__cause__, RemoteTraceback)
    assert "raise_builtin" in str(builtin.value.__cause__)

    marker = tmp_path / "pwned"
    with pytest.raises(RemoteError) as custom:
        untrusting.remote(raise_custom)(str(marker))
    assert custom.value.type_name.endswith("Sneaky")
    assert custom.value.value == "sneaky text"
    assert "raise_custom" in custom.value.remote_traceback
    assert not marker.exists()


# -- colab_request: answered only for our own calls ----------------------------------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[ColabEmulator]:
    with ColabEmulator() as emulator:
        emulator.drive_authorized_by_default = True
        yield emulator


def mount_drive() -> str:
    from google.colab import drive  # on the runtime only

    drive.mount("/content/drive")
    return "mounted"


def ask_later(go: str) -> None:
    """Start a thread that sends a colab_request once ``go`` exists, after this call ended."""
    import os
    import sys
    import threading
    import time

    def ask() -> None:
        from google.colab import _message

        deadline = time.monotonic() + 60
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            _message.blocking_request("request_auth", {"authType": "dfs_ephemeral"}, 2.0)
        except TimeoutError:
            sys.modules["__main__"].__dict__["_asked"] = "unanswered"
        except Exception as exc:  # any answer at all is the failure
            sys.modules["__main__"].__dict__["_asked"] = f"answered: {exc}"
        else:
            sys.modules["__main__"].__dict__["_asked"] = "answered"

    thread = threading.Thread(target=ask, daemon=True)
    sys.modules["__main__"].__dict__["_asker"] = thread
    thread.start()


def asked() -> str:
    import sys

    main = sys.modules["__main__"].__dict__
    main["_asker"].join(30)
    return str(main.get("_asked"))


class Dropped(logging.Handler):
    """Sets ``event`` when the client logs that it did not answer a colab_request."""

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "did not answer a colab_request" in record.getMessage():
            self.event.set()


@pytest.mark.slow
def test_colab_requests_are_answered_only_for_our_own_calls(
    emu: ColabEmulator, tmp_path: Path
) -> None:
    token = EnvironmentToken(emu.mint_access_token())
    dropped = Dropped()
    logger = logging.getLogger("colabremote.kernel")
    logger.addHandler(dropped)
    try:
        with cr.Session(
            "colab",
            base_url=emu.url,
            credentials=token,
            allow_credentials={"drive"},
            progress=False,
        ) as s:
            assert s.remote(mount_drive)() == "mounted"  # our own call: answered
            go = tmp_path / "go"
            s.remote(ask_later)(str(go))
            go.touch()  # the call that started the thread has finished
            assert dropped.event.wait(60)
            assert s.remote(asked)() == "unanswered"
            assert s.remote(mount_drive)() == "mounted"  # and ours still are
    finally:
        logger.removeHandler(dropped)
