"""Without the ``[emulator]`` extra, what needs it says so in one line naming the extra."""

from __future__ import annotations

import pytest

import colabremote as cr
import colabremote.testing as testing
from colabremote import _cli
from colabremote.exceptions import ConfigurationError
from colabremote.testing import _extra


@pytest.fixture
def no_emulator_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_extra, "EMULATOR_MODULES", ("colabremote_no_such_module",))


@pytest.mark.usefixtures("no_emulator_extra")
def test_emulator_backend_names_the_extra() -> None:
    with pytest.raises(ConfigurationError) as caught:
        cr.Session("emulator")
    message = str(caught.value)
    assert 'backend="emulator"' in message
    assert "pip install 'colabremote[emulator]'" in message
    assert "\n" not in message


@pytest.mark.usefixtures("no_emulator_extra")
def test_emulator_command_names_the_extra(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["emulator"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert "`colabremote emulator` needs the emulator extra" in err
    assert "pip install 'colabremote[emulator]'" in err


@pytest.mark.usefixtures("no_emulator_extra")
def test_testing_names_need_the_extra_only_when_used() -> None:
    with pytest.raises(ConfigurationError, match=r"colabremote\[emulator\]"):
        testing.ColabEmulator  # noqa: B018 - the attribute access is the test


def test_testing_has_no_other_names() -> None:
    with pytest.raises(AttributeError):
        testing.NoSuchHelper  # noqa: B018 - the attribute access is the test
