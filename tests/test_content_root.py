"""The emulator's runtimes keep their files in /content, as Colab's do, where the machine lets it
create that folder; elsewhere in a temp folder, with a line saying why."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import colabremote as cr
from colabremote._colab.auth import EnvironmentToken
from colabremote.exceptions import ConfigurationError
from colabremote.testing import ColabEmulator, emulator_of
from colabremote.testing._emulator._content import COLAB_CONTENT, CONTENT_ROOT_ENV


def read_data() -> tuple[str, str]:
    """What Colab code does: an absolute /content path."""
    with open("/content/data.csv") as f:
        return os.getcwd(), f.read()


def working_directory() -> str:
    return os.getcwd()


@pytest.fixture
def content_absent(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """/content does not exist and this process may create it; emulators try to use it."""
    if os.path.lexists(COLAB_CONTENT):
        pytest.skip(f"{COLAB_CONTENT} exists on this machine: it is never touched by tests")
    if not os.access("/", os.W_OK):
        pytest.skip(f"this user cannot create {COLAB_CONTENT} (the tests that use it need root)")
    monkeypatch.setenv(CONTENT_ROOT_ENV, "auto")
    yield
    assert not os.path.lexists(COLAB_CONTENT), "a test left /content behind"


def emulator_session() -> cr.Session:
    return cr.Session("emulator", progress=False)


@pytest.mark.slow
def test_absolute_content_paths_work_and_content_goes_at_release(
    content_absent: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local = tmp_path / "data.csv"
    local.write_text("a,b\n1,2\n")
    caplog.set_level(logging.INFO, logger="colabremote.emulator")
    with emulator_session() as first:
        first.upload(local, "/content/data.csv", progress=False)  # Colab's own form
        assert first.remote(read_data)() == (COLAB_CONTENT, "a,b\n1,2\n")
        assert caplog.messages == []  # no fallback: nothing to say
        with emulator_session() as second:  # another emulator on this machine
            cwd = second.remote(working_directory)()
            assert cwd != COLAB_CONTENT
            endpoint = second.info().details["endpoint"]
            assert emulator_of(second).runtime(endpoint).root_dir == cwd
        assert os.path.isdir(COLAB_CONTENT), "the second emulator removed the first's /content"
        fallback = [m for m in caplog.messages if "relative paths" in m]
        assert len(fallback) == 1
        assert "another runtime of an emulator on this machine has /content" in fallback[0]
        assert first.remote(read_data)()[1] == "a,b\n1,2\n"
    assert not os.path.lexists(COLAB_CONTENT)


def test_a_content_folder_that_existed_is_left_untouched(
    content_absent: None, caplog: pytest.LogCaptureFixture
) -> None:
    os.mkdir(COLAB_CONTENT)  # the user's own folder
    try:
        mine = Path(COLAB_CONTENT, "mine.txt")
        mine.write_text("keep me")
        caplog.set_level(logging.INFO, logger="colabremote.emulator")
        with emulator_session() as session:
            assert session.remote(working_directory)() != COLAB_CONTENT
        assert sorted(os.listdir(COLAB_CONTENT)) == ["mine.txt"]
        assert mine.read_text() == "keep me"
        (line,) = [m for m in caplog.messages if "relative paths" in m]
        assert "was there already" in line
    finally:
        Path(COLAB_CONTENT, "mine.txt").unlink()
        os.rmdir(COLAB_CONTENT)


def colab_session(emulator: ColabEmulator) -> cr.Session:
    """A colab session on a runtime of ``emulator`` (released when the session closes)."""
    credentials = EnvironmentToken(emulator.mint_access_token())
    return cr.Session("colab", base_url=emulator.url, credentials=credentials, progress=False)


@pytest.mark.slow
def test_content_root_temp_keeps_runtimes_in_temp_folders(
    content_absent: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="colabremote.emulator")
    with ColabEmulator(content_root="temp") as emulator, colab_session(emulator) as session:
        assert session.remote(working_directory)() != COLAB_CONTENT
    assert not os.path.lexists(COLAB_CONTENT)
    assert caplog.messages == []  # asked for, not a fallback: nothing to explain


def write_marker() -> str:
    with open("marker.txt", "w") as f:
        f.write("made remotely")
    return os.getcwd()


@pytest.mark.slow
def test_an_absolute_path_stands_in_for_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Made, held by one runtime (the same emulator's next runtime falls back) and removed at
    release, as /content is; this one runs without root."""
    root = tmp_path / "content"
    caplog.set_level(logging.INFO, logger="colabremote.emulator")
    with ColabEmulator(content_root=root) as emulator:
        assert emulator.content_root == str(root)
        with colab_session(emulator) as first, colab_session(emulator) as second:
            assert first.remote(write_marker)() == str(root)
            assert (root / "marker.txt").read_text() == "made remotely"
            assert second.remote(write_marker)() != str(root)
        assert not root.exists(), "the released runtime's folder is still there"
    (line,) = [m for m in caplog.messages if "relative paths" in m]
    assert f"another runtime of an emulator on this machine has {root}" in line


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("content", "absolute path"),
        ("./content", "absolute path"),
        (3, "not int"),
    ],
)
def test_bad_content_root_is_a_configuration_error(value: object, says: str) -> None:
    with pytest.raises(ConfigurationError, match=f"content_root.*{says}"):
        ColabEmulator(content_root=value)  # type: ignore[arg-type]


def test_bad_content_root_variable_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONTENT_ROOT_ENV, "relative/dir")
    with pytest.raises(ConfigurationError, match=f"{CONTENT_ROOT_ENV} is 'relative/dir'"):
        ColabEmulator()
