"""s.upload / s.download on every backend: whole files, large ones in chunks, atomic writes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import colabremote as cr
from colabremote._backends.jupyter import JupyterBackend
from colabremote._workspace.files import CHUNK
from colabremote.exceptions import ConfigurationError, PathNotFound
from colabremote.testing import JupyterServer, emulator_of
from tests.test_progress import Terminal


def read_remote(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def remote_cwd() -> str:
    return os.getcwd()


def test_round_trip_small_and_large(session: cr.Session, tmp_path: Path, backend: object) -> None:
    name = getattr(backend, "name", "")
    for size in (0, 1234, CHUNK + 17):  # the last one goes in pieces
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
    with pytest.raises(PathNotFound, match=r"nope\.bin is not a file here"):
        session.upload(tmp_path / "nope.bin", "nope.bin")
    with pytest.raises(PathNotFound, match=r"not-there\.bin is not on the runtime"):
        session.download(str(tmp_path / "not-there.bin"), tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".colabremote-")] == []


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


# -- large files go through the kernel in pieces (never one giant request) -------------------


def remote_digest(path: str) -> str | None:
    """The sha256 of a file on the kernel's machine, None when there is none."""
    import hashlib
    import os

    if not os.path.exists(path):
        return None
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def leftovers_beside(path: str) -> list[str]:
    """The temporary files of transfers in the folder of ``path`` on the kernel's machine."""
    import os

    folder = os.path.dirname(os.path.abspath(path))
    return sorted(name for name in os.listdir(folder) if name.startswith(".colabremote-"))


def fill_disk(mode: str, suffix: str, allowed: int) -> None:
    """Runs in the kernel: opening a file whose name ends with ``suffix`` in ``mode`` fails as
    on a full disk after ``allowed`` more such opens (a fault in the middle of a transfer)."""
    import builtins
    import errno

    real = builtins.__dict__.setdefault("_real_open", builtins.open)
    opened = [0]

    def full_open(file: object, how: str = "r", *args: object, **kwargs: object) -> object:
        if how == mode and str(file).endswith(suffix):
            opened[0] += 1
            if opened[0] > allowed:
                raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real(file, how, *args, **kwargs)

    setattr(builtins, "open", full_open)  # noqa: B010 - the kernel's open, for this test


def free_disk() -> None:
    import builtins

    setattr(builtins, "open", builtins.__dict__.pop("_real_open", builtins.open))  # noqa: B010


def write_big(path: str, size: int) -> str:
    """Runs in the kernel: a file of ``size`` random bytes at ``path``; its sha256."""
    import hashlib
    import os

    data = os.urandom(size)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as file:
        file.write(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def full_disk(session: cr.Session) -> Iterator[None]:
    """Whatever a test made fail on the kernel works again afterwards."""
    yield
    session.remote(free_disk)()


def places(backend: object, tmp_path: Path, name: str) -> tuple[str, str]:
    """A remote path as upload() takes it on this backend, and the same file as the kernel
    names it (the emulator's /content is its content root, the kernels' working directory)."""
    kind = getattr(backend, "name", "")
    if kind == "local":
        where = str(tmp_path / "remote" / name)
        return where, where
    if kind == "emulator":
        return f"/content/{name}", name
    return name, name  # the test server's root is its kernels' working directory


def test_a_large_upload_goes_through_the_kernel_in_pieces(
    session: cr.Session, backend: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Larger than one piece: it arrives whole, with a progress bar, and on the emulator not
    one request of it (up or down) goes through the Contents API."""
    remote, on_kernel = places(backend, tmp_path, "big-up.bin")
    local = tmp_path / "big-up.bin"
    payload = os.urandom(CHUNK + 1)
    local.write_bytes(payload)
    emulator = emulator_of(session) if getattr(backend, "name", "") == "emulator" else None
    if emulator is not None:
        emulator.clear_requests()
    terminal = Terminal()
    try:
        terminal.install(monkeypatch)
        session.upload(local, remote, progress=True)
        shown = terminal()
    finally:
        terminal.stream.close()
        os.close(terminal.master)
    assert "uploading big-up.bin" in shown and "100%" in shown
    assert session.remote(remote_digest)(on_kernel) == hashlib.sha256(payload).hexdigest()
    session.download(remote, tmp_path / "back.bin", progress=False)
    assert (tmp_path / "back.bin").read_bytes() == payload
    if emulator is not None:
        assert [r.path for r in emulator.requests if "/api/contents" in r.path] == []


def test_an_upload_failing_midway_leaves_nothing(
    session: cr.Session, backend: object, tmp_path: Path, full_disk: None
) -> None:
    """The kernel's disk fills after the first piece: the error comes back, and neither the
    file nor a piece of it is at the destination."""
    remote, on_kernel = places(backend, tmp_path, "cut-up.bin")
    local = tmp_path / "cut-up.bin"
    local.write_bytes(os.urandom(2 * CHUNK + 1))
    session.remote(write_big)(on_kernel, 10)  # an older version, which must stay as it was
    before = session.remote(remote_digest)(on_kernel)
    session.remote(fill_disk)("r+b", ".part", 0)  # later pieces reopen the temporary file
    with pytest.raises(OSError, match="No space left on device"):
        session.upload(local, remote, progress=False)
    session.remote(free_disk)()
    assert session.remote(remote_digest)(on_kernel) == before
    assert session.remote(leftovers_beside)(on_kernel) == []


def test_a_download_failing_midway_leaves_nothing(
    session: cr.Session, backend: object, tmp_path: Path, full_disk: None
) -> None:
    remote, on_kernel = places(backend, tmp_path, "cut-down.bin")
    session.remote(write_big)(on_kernel, 2 * CHUNK + 1)
    local = tmp_path / "here" / "cut-down.bin"
    local.parent.mkdir()
    local.write_bytes(b"older")
    session.remote(fill_disk)("rb", "cut-down.bin", 2)  # the listing's digest, one piece
    with pytest.raises(OSError, match="No space left on device"):
        session.download(remote, local, progress=False)
    assert local.read_bytes() == b"older"
    assert sorted(os.listdir(local.parent)) == ["cut-down.bin"]


@pytest.mark.slow
def test_upload_paths_are_the_servers_when_kernels_start_elsewhere(
    jupyter_server: JupyterServer, tmp_path: Path
) -> None:
    """A kernel working in a subfolder of the server's root: a large upload still lands where
    the Contents API names it (found with a probe the kernel looks for), through the kernel,
    and the probe is gone afterwards."""
    root = Path(jupyter_server.root_dir)
    (root / "work").mkdir(exist_ok=True)
    backend = JupyterBackend(jupyter_server.url, jupyter_server.token)
    backend.kernel_path = "work"
    local = tmp_path / "big.bin"
    payload = os.urandom(CHUNK + 1)
    local.write_bytes(payload)
    with cr.Session(backend, progress=False) as session:
        assert session.info().cwd == str(root / "work")
        (root / "top").mkdir()
        session.remote(fill_disk)("r+b", ".part", 0)
        with pytest.raises(OSError, match="No space left on device"):
            session.upload(local, "top/big.bin")  # through the kernel: it failed there
        session.remote(free_disk)()
        assert sorted(os.listdir(root / "top")) == []
        session.upload(local, "top/big.bin")
        assert (root / "top" / "big.bin").read_bytes() == payload
        assert sorted(os.listdir(root / "top")) == ["big.bin"]  # no probe, no piece
        session.download("top/big.bin", tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == payload


@pytest.mark.slow
def test_where_the_kernel_cannot_find_the_file_the_contents_api_takes_it(tmp_path: Path) -> None:
    """The colab backend against an emulator whose runtime root is not a folder named
    "content": the probe put at /content is not where the kernel looks, so a large upload goes
    through the Contents API (in chunks) and still lands in the root; the probe is gone, and the
    next upload does not probe again."""
    from colabremote._colab.auth import EnvironmentToken
    from colabremote.testing import ColabEmulator

    local = tmp_path / "big.bin"
    payload = os.urandom(CHUNK + 1)
    local.write_bytes(payload)
    root = tmp_path / "runtime-root"
    with ColabEmulator(content_root=str(root)) as emu:
        token = EnvironmentToken(emu.mint_access_token())
        with cr.Session("colab", base_url=emu.url, credentials=token, progress=False) as s:
            s.upload(local, "/content/big.bin")
            assert (root / "big.bin").read_bytes() == payload
            assert [name for name in os.listdir(root) if "probe" in name] == []
            emu.clear_requests()
            s.upload(local, "/content/again.bin")
            puts = [r.path for r in emu.requests if r.method == "PUT"]
            assert len(puts) == 2 and all("probe" not in path for path in puts)  # two chunks
            assert (root / "again.bin").read_bytes() == payload
