"""``Session(env=..., secrets=...)`` on real kernels: the variables are there before the first
call and again on a new kernel after a restart; secrets are read from the environment or the OS
keyring at open (a missing one fails the open, naming where it was looked for); on the emulator
``google.colab.userdata.get`` answers them; and no secret value reaches a log, a repr, an error
or the emulator's request log."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import colabremote as cr
from colabremote.exceptions import ConfigurationError, KernelDied, KernelRestarted, SessionClosed
from colabremote.testing import JupyterServer, emulator_of

from ._keyrings import MemoryKeyring
from .conftest import BackendSpec, wait_for_path

# Names no kernel inherits from this process: the session must have set them.
ENV_NAME = "COLABREMOTE_TEST_ENV"
SECRET_NAME = "COLABREMOTE_TEST_SECRET"
SECRET_VALUE = "s3cret-d0c6a1e9-not-for-logs"


def variable(name: str) -> str | None:
    return os.environ.get(name)


def digest_of_variable(name: str) -> str | None:
    """The variable's hash, so the secret itself never travels back in a result."""
    import hashlib

    value = os.environ.get(name)
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


def userdata_digest(name: str) -> str:
    """``google.colab.userdata.get(name)``, hashed; SecretNotFoundError as a plain answer."""
    import hashlib

    from google.colab import userdata

    try:
        value = userdata.get(name)
    except userdata.SecretNotFoundError as exc:
        return f"SecretNotFoundError: {exc}"
    return hashlib.sha256(value.encode()).hexdigest()


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture
def memory_keyring(monkeypatch: pytest.MonkeyPatch) -> MemoryKeyring:
    import keyring

    ring = MemoryKeyring()
    monkeypatch.setattr(keyring, "get_keyring", lambda: ring)
    return ring


@pytest.fixture
def no_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring
    import keyring.backends.null

    monkeypatch.setattr(keyring, "get_keyring", keyring.backends.null.Keyring)


# -- every backend ------------------------------------------------------------------------------


def test_env_and_secrets_are_set_before_the_first_call(backend: BackendSpec) -> None:
    with backend.session(env={ENV_NAME: "from env="}, secrets={SECRET_NAME: SECRET_VALUE}) as s:
        assert s.remote(variable)(ENV_NAME) == "from env="
        assert s.remote(digest_of_variable)(SECRET_NAME) == digest(SECRET_VALUE)
        s.exec(f"import os; assert os.environ[{ENV_NAME!r}] == 'from env='")


def test_a_secret_is_read_from_this_process_environment(
    jupyter_server: JupyterServer, monkeypatch: pytest.MonkeyPatch, no_keyring: None
) -> None:
    # The server started before this variable existed, so its kernels cannot inherit it.
    monkeypatch.setenv(SECRET_NAME, SECRET_VALUE)
    with cr.Session(
        "jupyter",
        url=jupyter_server.url,
        token=jupyter_server.token,
        secrets=[SECRET_NAME],
        progress=False,
    ) as s:
        assert s.remote(digest_of_variable)(SECRET_NAME) == digest(SECRET_VALUE)
        assert s.remote(variable)("COLABREMOTE_NOT_ASKED_FOR") is None


def test_a_secret_is_read_from_the_os_keyring(
    backend: BackendSpec, monkeypatch: pytest.MonkeyPatch, memory_keyring: MemoryKeyring
) -> None:
    monkeypatch.delenv(SECRET_NAME, raising=False)
    memory_keyring.set_password("colabremote-secrets", SECRET_NAME, "from-the-keyring")
    with backend.session(secrets=[SECRET_NAME]) as s:
        assert s.remote(digest_of_variable)(SECRET_NAME) == digest("from-the-keyring")


def test_the_environment_wins_over_the_keyring(
    monkeypatch: pytest.MonkeyPatch, memory_keyring: MemoryKeyring
) -> None:
    memory_keyring.set_password("colabremote-secrets", SECRET_NAME, "from-the-keyring")
    monkeypatch.setenv(SECRET_NAME, "from-the-environment")
    with cr.Session("local", secrets=[SECRET_NAME], progress=False) as s:
        assert s.remote(digest_of_variable)(SECRET_NAME) == digest("from-the-environment")


def test_an_unknown_secret_fails_the_open_naming_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, memory_keyring: MemoryKeyring
) -> None:
    monkeypatch.delenv("COLABREMOTE_NO_SUCH_SECRET", raising=False)
    session = cr.Session("emulator", secrets=["COLABREMOTE_NO_SUCH_SECRET"], progress=False)
    with pytest.raises(ConfigurationError) as raised:
        session.open()
    message = str(raised.value)
    assert "COLABREMOTE_NO_SUCH_SECRET" in message
    assert "environment" in message and "'colabremote-secrets'" in message
    assert "colabremote secrets set COLABREMOTE_NO_SUCH_SECRET" in message
    # It failed before anything started: the emulator never served a request.
    assert emulator_of(session).url == "" and emulator_of(session).requests == []
    with pytest.raises(SessionClosed, match="COLABREMOTE_NO_SUCH_SECRET"):
        session.remote(variable)(ENV_NAME)


@pytest.mark.slow
def test_an_unknown_secret_starts_no_kernel_on_a_jupyter_server(
    jupyter_server: JupyterServer, monkeypatch: pytest.MonkeyPatch, memory_keyring: MemoryKeyring
) -> None:
    monkeypatch.delenv("COLABREMOTE_NO_SUCH_SECRET", raising=False)
    headers = {"Authorization": f"token {jupyter_server.token}"}

    def kernels() -> list[str]:
        listing = httpx.get(f"{jupyter_server.url}/api/kernels", headers=headers, timeout=30)
        return sorted(kernel["id"] for kernel in listing.json())

    before = kernels()
    session = cr.Session(
        "jupyter",
        url=jupyter_server.url,
        token=jupyter_server.token,
        secrets=["COLABREMOTE_NO_SUCH_SECRET"],
        progress=False,
    )
    with pytest.raises(ConfigurationError, match="COLABREMOTE_NO_SUCH_SECRET"):
        session.open()
    assert kernels() == before  # read before a kernel was asked for: nothing to clean up


# -- a new kernel gets them again ---------------------------------------------------------------


def deaf_until(started: str, release: str) -> None:
    """Ignore interrupts (so only the restart ends this), say "started", wait for ``release``."""
    import signal
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    Path(started).touch()
    deadline = time.monotonic() + 120
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def jupyter_session(jupyter_server: JupyterServer) -> Iterator[tuple[cr.Session, str]]:
    with cr.Session(
        "jupyter",
        url=jupyter_server.url,
        token=jupyter_server.token,
        env={ENV_NAME: "again"},
        secrets={SECRET_NAME: SECRET_VALUE},
        progress=False,
    ) as s:
        yield s, s.info().details["kernel_id"]


def restart(server: JupyterServer, kernel_id: str) -> None:
    """Restart the kernel from outside the session, as JupyterLab does."""
    response = httpx.post(
        f"{server.url}/api/kernels/{kernel_id}/restart",
        headers={"Authorization": f"token {server.token}"},
        timeout=120,
    )
    response.raise_for_status()


@pytest.mark.slow
def test_env_is_set_again_after_a_restart_between_calls(
    jupyter_server: JupyterServer, jupyter_session: tuple[cr.Session, str]
) -> None:
    session, kernel_id = jupyter_session
    session.exec(f"import os; os.environ.pop({ENV_NAME!r})")  # proves the next one is new
    assert session.remote(variable)(ENV_NAME) is None
    restart(jupyter_server, kernel_id)
    assert session.remote(variable)(ENV_NAME) == "again"
    assert session.remote(digest_of_variable)(SECRET_NAME) == digest(SECRET_VALUE)


def test_env_is_set_again_after_a_restart_during_a_call(
    jupyter_server: JupyterServer, jupyter_session: tuple[cr.Session, str], tmp_path: Path
) -> None:
    session, kernel_id = jupyter_session
    session.exec(f"import os; os.environ.pop({ENV_NAME!r})")
    started, release = tmp_path / "started", tmp_path / "release"

    def restart_once_started() -> None:
        wait_for_path(started)
        restart(jupyter_server, kernel_id)

    restarter = threading.Thread(target=restart_once_started, daemon=True)
    restarter.start()
    try:
        with pytest.raises(KernelRestarted):
            session.remote(deaf_until, timeout=120)(str(started), str(release))
    finally:
        release.touch()
        restarter.join(120)
    assert session.remote(variable)(ENV_NAME) == "again"


def die() -> None:
    os._exit(3)


def test_env_is_set_on_the_kernel_that_replaces_a_dead_one() -> None:
    with cr.Session("local", env={ENV_NAME: "replaced"}, progress=False) as s:
        s.exec(f"import os; os.environ.pop({ENV_NAME!r})")
        with pytest.raises(KernelDied):
            s.remote(die)()
        assert s.remote(variable)(ENV_NAME) == "replaced"


# -- google.colab.userdata on the emulator ------------------------------------------------------


@pytest.fixture(scope="module")
def emulator_session() -> Iterator[cr.Session]:
    with cr.Session("emulator", gpu="T4", secrets={SECRET_NAME: SECRET_VALUE}, progress=False) as s:
        yield s


@pytest.mark.slow
def test_userdata_get_answers_the_session_secret(emulator_session: cr.Session) -> None:
    assert emulator_session.remote(userdata_digest)(SECRET_NAME) == digest(SECRET_VALUE)


@pytest.mark.slow
def test_userdata_get_of_a_name_the_session_lacks_raises_secret_not_found(
    emulator_session: cr.Session,
) -> None:
    answer = emulator_session.remote(userdata_digest)("HF_TOKEN_NOT_GIVEN")
    assert answer.startswith("SecretNotFoundError:") and "HF_TOKEN_NOT_GIVEN" in answer


@pytest.mark.slow
def test_userdata_get_for_a_session_without_secrets_raises_secret_not_found() -> None:
    with cr.Session("emulator", progress=False) as s:
        assert s.remote(userdata_digest)("ANY").startswith("SecretNotFoundError:")


# -- secrets stay out of text -------------------------------------------------------------------


def raise_with_name(name: str) -> None:
    from google.colab import userdata

    userdata.get(name)
    raise RuntimeError(f"failed after reading {name}")


def test_secret_values_appear_in_no_log_repr_error_or_emulator_log(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, no_keyring: None
) -> None:
    monkeypatch.setenv("COLABREMOTE_TEST_FROM_ENV", "env-s3cret-7f1b2c")
    values = {SECRET_VALUE, "env-s3cret-7f1b2c"}
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)
    for name in ("colabremote", "websockets", "tornado"):
        caplog.set_level(logging.DEBUG, logger=name)
    session = cr.Session(
        "emulator",
        secrets={SECRET_NAME: SECRET_VALUE},
        progress=False,
    )
    with session:
        assert session.remote(userdata_digest)(SECRET_NAME) == digest(SECRET_VALUE)
        with pytest.raises(Exception) as raised:
            session.remote(raise_with_name)(SECRET_NAME)
        texts += [str(raised.value), repr(raised.value), str(raised.value.__cause__)]
        texts += [repr(session), str(session), repr(session._core.environment)]
        texts += [repr(session._core.environment.secrets), repr(session._core.backend.secrets)]
        texts += [repr(session.info())]
        emulator = emulator_of(session)
        # The runtime's Jupyter server log (its kernels' own output included).
        texts += [server.log_text() for server in emulator._jupyters]
    with pytest.raises(ConfigurationError) as refused:
        cr.Session(
            "local",
            secrets=["COLABREMOTE_TEST_FROM_ENV", "COLABREMOTE_NO_SUCH_SECRET"],
            progress=False,
        ).open()
    texts += [str(refused.value)]
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text, repr(emulator.requests)]
    assert any("GetSecret" in t or SECRET_NAME in t for t in texts)  # the search has material
    leaks = [t.replace(v, "<SECRET>") for t in texts for v in values if v in t]
    assert leaks == []  # each leaking text, with the value masked
