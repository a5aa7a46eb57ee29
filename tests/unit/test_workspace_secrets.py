"""env= and secrets= as pure logic: what is accepted, where secrets are looked for and in which
order, the answer to Colab's GetSecret, the ``colabremote secrets`` command, and that no value
ever shows in an error, a repr or a pickle."""

from __future__ import annotations

import io
import pickle
from typing import Any

import pytest

import colabremote as cr
from colabremote import _cli
from colabremote._workspace.secrets import (
    KEYRING_SERVICE,
    KernelEnvironment,
    Secret,
    secret_reply,
)
from colabremote.exceptions import ConfigurationError

from .._keyrings import MemoryKeyring

VALUE = "hf_unit-s3cret-0a1b2c"


class BrokenKeyring(MemoryKeyring):
    def get_password(self, service: str, user: str) -> str | None:
        raise RuntimeError(f"locked; the caller asked for {user}")


@pytest.fixture
def ring(monkeypatch: pytest.MonkeyPatch) -> MemoryKeyring:
    import keyring

    memory = MemoryKeyring()
    monkeypatch.setattr(keyring, "get_keyring", lambda: memory)
    return memory


@pytest.fixture
def no_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring
    import keyring.backends.null

    monkeypatch.setattr(keyring, "get_keyring", keyring.backends.null.Keyring)


# -- what Session accepts -----------------------------------------------------------------------

BAD_ENV: list[tuple[Any, str]] = [
    (["A=1"], "mapping"),
    ("A=1", "mapping"),
    ({"1A": "x"}, "not an environment variable name"),
    ({"A-B": "x"}, "not an environment variable name"),
    ({"": "x"}, "not an environment variable name"),
    ({3: "x"}, "not an environment variable name"),
    ({"A": 1}, "int, not a string"),
    ({"A": None}, "NoneType, not a string"),
    ({"A": "x\0y"}, "NUL"),
]


@pytest.mark.parametrize(("env", "message"), BAD_ENV, ids=repr)
def test_bad_env_is_refused_when_the_session_is_made(env: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        cr.Session(env=env)


BAD_SECRETS: list[tuple[Any, str]] = [
    (VALUE, "list of names"),
    (VALUE.encode(), "list of names"),
    (5, "list of names"),
    (["HF TOKEN"], "not an environment variable name"),
    ([None], "not an environment variable name"),
    (["sk-" + VALUE], "a str .not shown: it may be a value"),
    ({"sk-" + VALUE: "x"}, "not an environment variable name"),
    ({"HF_TOKEN": 5}, "non-empty string"),
    ({"HF_TOKEN": ""}, "non-empty string"),
    ({"HF_TOKEN": VALUE + "\0"}, "non-empty string"),
]


@pytest.mark.parametrize(("secrets", "message"), BAD_SECRETS, ids=repr)
def test_bad_secrets_are_refused_without_quoting_a_value(secrets: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        cr.Session(secrets=secrets)
    assert VALUE not in str(raised.value)


def test_a_name_in_both_env_and_secrets_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="HF_TOKEN is in both env= and secrets="):
        cr.Session(env={"HF_TOKEN": "x"}, secrets=["HF_TOKEN"])


def test_env_and_secrets_reach_the_backend_instance_form_too() -> None:
    from colabremote._backends.local import LocalBackend

    session = cr.Session(LocalBackend(), env={"A": "1"}, secrets={"B": VALUE})
    assert session._core.environment.variables() == {"A": "1", "B": VALUE}


# -- where secrets are looked for ---------------------------------------------------------------


def test_the_environment_comes_first_then_the_keyring(ring: MemoryKeyring) -> None:
    ring.set_password(KEYRING_SERVICE, "FROM_ENV", "keyring-value")
    ring.set_password(KEYRING_SERVICE, "FROM_RING", "ring-value")
    env = KernelEnvironment(names=("FROM_ENV", "FROM_RING"))
    assert env.unread
    env.resolve({"FROM_ENV": "env-value"})
    assert not env.unread
    assert env.variables() == {"FROM_ENV": "env-value", "FROM_RING": "ring-value"}
    assert "environment variable FROM_ENV" in env.secrets["FROM_ENV"].source
    assert KEYRING_SERVICE in env.secrets["FROM_RING"].source


def test_an_empty_variable_does_not_count(ring: MemoryKeyring) -> None:
    ring.set_password(KEYRING_SERVICE, "HF_TOKEN", "ring-value")
    env = KernelEnvironment(names=("HF_TOKEN",))
    env.resolve({"HF_TOKEN": ""})
    assert env.variables() == {"HF_TOKEN": "ring-value"}


def test_given_values_are_not_looked_up(no_keyring: None) -> None:
    env = KernelEnvironment(given={"HF_TOKEN": VALUE})
    assert not env.unread
    env.resolve({})
    assert env.variables() == {"HF_TOKEN": VALUE}


def test_every_missing_secret_is_named_with_where_it_was_looked_for(ring: MemoryKeyring) -> None:
    env = KernelEnvironment(names=("FOUND", "HF_TOKEN", "WANDB_API_KEY"))
    with pytest.raises(ConfigurationError) as raised:
        env.resolve({"FOUND": VALUE})
    message = str(raised.value)
    assert "HF_TOKEN, WANDB_API_KEY not found" in message
    assert "variables HF_TOKEN, WANDB_API_KEY" in message
    assert f"service {KEYRING_SERVICE!r}" in message and "no entry" in message
    assert "colabremote secrets set HF_TOKEN" in message
    assert VALUE not in message


def test_without_an_os_keyring_the_error_says_so(no_keyring: None) -> None:
    with pytest.raises(ConfigurationError, match="no OS keyring is available here"):
        KernelEnvironment(names=("HF_TOKEN",)).resolve({})


def test_a_failing_keyring_counts_as_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring

    monkeypatch.setattr(keyring, "get_keyring", BrokenKeyring)
    with pytest.raises(ConfigurationError, match="the keyring failed: RuntimeError"):
        KernelEnvironment(names=("HF_TOKEN",)).resolve({})


# -- values stay hidden -------------------------------------------------------------------------


def test_a_secret_shows_its_name_never_its_value() -> None:
    secret = Secret("HF_TOKEN", VALUE, "secrets=")
    for text in (repr(secret), str(secret), f"{secret}", repr({"k": secret})):
        assert "HF_TOKEN" in text and VALUE not in text
    assert secret.reveal() == VALUE
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(secret)


def test_the_environment_repr_names_without_values() -> None:
    env = KernelEnvironment(env={"A": "1"}, names=("B",), given={"C": VALUE})
    assert repr(env) == "<KernelEnvironment env=['A'] secrets=['B', 'C']>"
    session = cr.Session(secrets={"C": VALUE})
    assert VALUE not in repr(session) and VALUE not in repr(session._core.environment)


# -- Colab's GetSecret --------------------------------------------------------------------------


def test_get_secret_answers_a_held_secret_and_denies_the_rest() -> None:
    secrets = {"HF_TOKEN": Secret("HF_TOKEN", VALUE, "secrets=")}
    assert secret_reply(secrets, {"key": "HF_TOKEN"}) == {
        "exists": True,
        "access": True,
        "payload": VALUE,
    }
    for request in ({"key": "OTHER"}, {"key": 5}, {}, "HF_TOKEN", None):
        assert secret_reply(secrets, request) == {"exists": False, "access": False}


# -- colabremote secrets ------------------------------------------------------------------------


def test_secrets_set_stores_a_line_from_stdin_and_delete_forgets_it(
    ring: MemoryKeyring, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(VALUE + "\n"))
    assert _cli.main(["secrets", "set", "HF_TOKEN"]) == 0
    assert ring.items == {(KEYRING_SERVICE, "HF_TOKEN"): VALUE}
    out = capsys.readouterr().out
    assert "Stored HF_TOKEN" in out and VALUE not in out
    env = KernelEnvironment(names=("HF_TOKEN",))
    env.resolve({})
    assert env.variables() == {"HF_TOKEN": VALUE}
    assert _cli.main(["secrets", "delete", "HF_TOKEN"]) == 0
    assert ring.items == {}
    assert _cli.main(["secrets", "delete", "HF_TOKEN"]) == 0
    assert "holds no HF_TOKEN" in capsys.readouterr().out


def test_secrets_set_refuses_a_bad_name_an_empty_value_and_no_keyring(
    ring: MemoryKeyring,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _cli.main(["secrets", "set", "HF TOKEN"]) == 1
    assert "not an environment variable name" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert _cli.main(["secrets", "set", "HF_TOKEN"]) == 1
    assert "nothing was stored" in capsys.readouterr().err
    import keyring
    import keyring.backends.null

    monkeypatch.setattr(keyring, "get_keyring", keyring.backends.null.Keyring)
    monkeypatch.setattr("sys.stdin", io.StringIO(VALUE + "\n"))
    assert _cli.main(["secrets", "set", "HF_TOKEN"]) == 1
    err = capsys.readouterr().err
    assert "no OS keyring is available" in err and VALUE not in err
    assert ring.items == {}
