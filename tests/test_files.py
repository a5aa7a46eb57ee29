"""s.upload / s.download on every backend: whole files, large ones in chunks, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import colabremote as cr
from colabremote.exceptions import ConfigurationError
from colabremote.testing import JupyterServer


def read_remote(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def remote_cwd() -> str:
    return os.getcwd()


def test_round_trip_small_and_large(session: cr.Session, tmp_path: Path, backend: object) -> None:
    name = getattr(backend, "name", "")
    for size in (0, 1234, 20 * 1024 * 1024 + 17):  # the last one goes in chunks
        payload = os.urandom(size)
        local = tmp_path / f"data-{size}.bin"
        local.write_bytes(payload)
        if name == "local":
            remote = str(tmp_path / "remote" / f"data-{size}.bin")
        elif name == "emulator":
            remote = f"/content/data-{size}.bin"
        else:
            remote = f"data-{size}.bin"
        session.upload(local, remote, progress=False)
        if name == "local":
            assert session.remote(read_remote)(remote) == payload
        back = tmp_path / f"back-{size}.bin"
        session.download(remote, back, progress=False)
        assert back.read_bytes() == payload


def test_missing_files_are_typed_errors(session: cr.Session, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        session.upload(tmp_path / "nope.bin", "nope.bin")
    with pytest.raises(FileNotFoundError):
        session.download(str(tmp_path / "not-there.bin"), tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()


@pytest.mark.parametrize(
    "remote", ["../secret.txt", "data/../../api/kernels", "./x.bin", "a\\..\\b", "bad\x00name"]
)
def test_remote_paths_cannot_climb_out_of_the_contents_api(
    jupyter_server: JupyterServer, tmp_path: Path, remote: str
) -> None:
    """A '..' in a remote path would turn /api/contents/... into another API's URL, carrying the
    server's token; such paths are refused before anything is sent."""
    local = tmp_path / "file.txt"
    local.write_text("x")
    with cr.Session(
        "jupyter", url=jupyter_server.url, token=jupyter_server.token, progress=False
    ) as session:
        with pytest.raises(ConfigurationError, match=r"without '\.' or '\.\.' parts"):
            session.upload(local, remote, progress=False)
        with pytest.raises(ConfigurationError, match=r"without '\.' or '\.\.' parts"):
            session.download(remote, tmp_path / "back.txt", progress=False)
        assert not (tmp_path / "back.txt").exists()
        session.upload(local, "/plain.txt", progress=False)  # a leading / is the root
        session.download("plain.txt", tmp_path / "back.txt", progress=False)
        assert (tmp_path / "back.txt").read_text() == "x"
