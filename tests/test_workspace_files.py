"""s.sync and folder downloads (issue 12, "Files") on every backend: only changed files go,
.gitignore and exclude= are honoured, nothing is deleted unless asked, large files go in
chunks with bounded memory.

The kernels of every backend here run on this machine, so the tests name remote folders by
absolute paths under pytest's tmp_path and look at them directly.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

import colabremote as cr
from colabremote.exceptions import ConfigurationError, PathNotFound
from tests.test_progress import Terminal


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (``/``-separated), with its content."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def make(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)


def test_only_changed_files_are_sent(session: cr.Session, tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    make(source, {"a.txt": "alpha", "sub/b.txt": "beta", "sub/deeper/c.bin": os.urandom(5000)})

    first = session.sync(source, str(target))
    assert first.sent == ("a.txt", "sub/b.txt", "sub/deeper/c.bin")
    assert first.skipped == () and first.deleted == ()
    assert first.bytes == 5 + 4 + 5000
    assert tree(target) == tree(source)

    second = session.sync(source, str(target))
    assert second.sent == () and second.bytes == 0
    assert second.skipped == ("a.txt", "sub/b.txt", "sub/deeper/c.bin")

    (source / "sub" / "b.txt").write_text("BETA")  # same size, other content: the hash tells
    third = session.sync(source, str(target))
    assert third.sent == ("sub/b.txt",)
    assert third.bytes == 4
    assert tree(target) == tree(source)


def test_many_small_files_go_several_to_a_call(session: cr.Session, tmp_path: Path) -> None:
    source = tmp_path / "src"
    make(source, {f"d{i % 7}/f{i}.txt": str(i) for i in range(2500)})
    assert len(session.sync(source, str(tmp_path / "dst")).sent) == 2500
    assert tree(tmp_path / "dst") == tree(source)
    assert len(session.download(str(tmp_path / "dst"), tmp_path / "back").sent) == 2500
    assert tree(tmp_path / "back") == tree(source)


def test_gitignore_exclude_and_git_stay_out(session: cr.Session, tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    make(
        source,
        {
            ".gitignore": "*.log\n!keep.log\nbuild/\n/top-only.txt\n**/cache\n",
            "run.log": "x",
            "keep.log": "kept",
            "build/out.o": "x",
            "top-only.txt": "x",
            "deep/top-only.txt": "sent: the pattern is anchored to the top",
            "deep/cache/blob": "x",
            "deep/.gitignore": "*.csv\n",
            "deep/data.csv": "x",
            "data.csv": "sent: deep/.gitignore covers deep/ only",
            ".git/HEAD": "ref: refs/heads/main\n",
            "weights.ckpt": "x",
            "scratch/notes.txt": "x",
            "code.py": "print(1)\n",
        },
    )
    result = session.sync(source, str(target), exclude=["*.ckpt", "scratch/"])
    assert sorted(tree(target)) == [
        ".gitignore",
        "code.py",
        "data.csv",
        "deep/.gitignore",
        "deep/top-only.txt",
        "keep.log",
    ]
    assert sorted(result.sent) == sorted(tree(target))

    everything = session.sync(source, str(tmp_path / "all"), gitignore=False)
    assert "run.log" in everything.sent and "build/out.o" in everything.sent
    assert not [path for path in everything.sent if path.startswith(".git/")]


def test_remote_extras_are_deleted_only_when_asked(session: cr.Session, tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    make(source, {"a.txt": "a", ".gitignore": "*.cache\n"})
    make(target, {"old.txt": "old", "gone/x.txt": "x", "made-there.cache": "kept"})

    kept = session.sync(source, str(target))
    assert kept.deleted == ()
    assert sorted(tree(target)) == [
        ".gitignore",
        "a.txt",
        "gone/x.txt",
        "made-there.cache",
        "old.txt",
    ]

    cleaned = session.sync(source, str(target), delete=True)
    assert cleaned.deleted == ("gone/x.txt", "old.txt")
    assert cleaned.sent == ()
    # What the local rules ignore is not the sync's to delete (rsync's --delete does the same).
    assert sorted(tree(target)) == [".gitignore", "a.txt", "made-there.cache"]
    assert not (target / "gone").exists()


def test_folder_download_mirrors(session: cr.Session, tmp_path: Path) -> None:
    remote, local = tmp_path / "remote", tmp_path / "local"
    make(remote, {"out/metrics.json": "{}", "out/model.bin": os.urandom(3000), "log.txt": "x"})

    first = session.download(str(remote), local)
    assert first.sent == ("log.txt", "out/metrics.json", "out/model.bin")
    assert tree(local) == tree(remote)

    (remote / "log.txt").write_text("y")
    make(local, {"mine.txt": "local only"})
    second = session.download(str(remote) + "/", local, exclude=["*.json"])
    assert second.sent == ("log.txt",)
    assert second.skipped == ("out/model.bin",)
    assert (local / "mine.txt").exists()  # nothing deleted unless asked

    third = session.download(str(remote), local, delete=True, exclude=["*.json"])
    assert third.deleted == ("mine.txt",) and third.sent == ()
    assert tree(local) == tree(remote)


def test_relative_remote_paths_are_the_kernels_working_directory(
    session: cr.Session, tmp_path: Path
) -> None:
    workdir = tmp_path / "kernel-cwd"
    workdir.mkdir()
    previous = session.eval("__import__('os').getcwd()")
    session.exec(f"import os; os.chdir({str(workdir)!r})")
    try:
        make(tmp_path / "src", {"a.txt": "a"})
        session.sync(tmp_path / "src", "data")
        assert (workdir / "data" / "a.txt").read_text() == "a"
        back = session.download("data", tmp_path / "back")
        assert back.sent == ("a.txt",)
    finally:
        session.exec(f"import os; os.chdir({previous!r})")


def test_bad_inputs_are_typed_errors_before_anything_is_sent(
    session: cr.Session, tmp_path: Path
) -> None:
    target = tmp_path / "dst"
    missing = tmp_path / "no-such-folder"
    with pytest.raises(PathNotFound, match=r"local_dir=.*no-such-folder.* does not exist here"):
        session.sync(missing, str(target))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigurationError, match=r"file\.txt.*is a file, not a folder"):
        session.sync(tmp_path / "file.txt", str(target))
    (tmp_path / "src").mkdir()
    for bad in ("../escape", "data/../../x", "a\\b", "bad\x00name", ""):
        with pytest.raises(ConfigurationError, match=r"without '\.' or '\.\.' parts"):
            session.sync(tmp_path / "src", bad)
    with pytest.raises(ConfigurationError, match="exclude="):
        session.sync(tmp_path / "src", str(target), exclude=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="exclude has"):
        session.sync(tmp_path / "src", str(target), exclude=["ok", ""])
    assert not target.exists()
    with pytest.raises(ConfigurationError, match="is a file on the runtime"):
        session.sync(tmp_path / "src", str(tmp_path / "file.txt"))
    with pytest.raises(PathNotFound, match="no-such-folder/ is not on the runtime"):
        session.download(str(missing) + "/", tmp_path / "back")
    assert not (tmp_path / "back").exists()


@pytest.mark.slow
def test_a_large_file_goes_in_chunks_with_bounded_memory(
    session: cr.Session, tmp_path: Path
) -> None:
    """200 MB each way (a folder, and one file down): the client's Python memory peaks far
    below the file's size, and the file arrives whole (its digest checked on arrival, and here
    again)."""
    size = 200 * 1024 * 1024
    source = tmp_path / "src"
    source.mkdir()
    digest = hashlib.sha256()
    with open(source / "big.bin", "wb") as file:
        block = os.urandom(1024 * 1024)
        for index in range(size // len(block)):
            piece = index.to_bytes(8, "big") + block[8:]
            digest.update(piece)
            file.write(piece)
    tracemalloc.start()
    try:
        sent = session.sync(source, str(tmp_path / "dst"))
        _, up_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        back = session.download(str(tmp_path / "dst"), tmp_path / "back")
        _, down_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        one = session.download(str(tmp_path / "dst" / "big.bin"), tmp_path / "one.bin")
        _, file_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sent.bytes == size and back.bytes == size and one.bytes == size
    # Holding the file whole would peak above its size; a few 8 MiB pieces in flight stay far
    # below. (The emulator's proxy runs in this process too, and buffers some frames.)
    bound = size // 2
    assert up_peak < bound and down_peak < bound and file_peak < bound, (
        up_peak,
        down_peak,
        file_peak,
    )
    for path in (tmp_path / "dst" / "big.bin", tmp_path / "back" / "big.bin", tmp_path / "one.bin"):
        assert sha256_of(path) == digest.hexdigest()


def test_large_totals_show_a_bar_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = Terminal()
    try:
        terminal.install(monkeypatch)
        source = tmp_path / "src"
        make(source, {"small.txt": "x"})
        with cr.Session("local", progress=True) as session:
            terminal()  # forget the start-up messages
            session.sync(source, str(tmp_path / "dst"))
            assert "syncing" not in terminal()  # small totals stay quiet
            make(source, {"big.bin": os.urandom(6 * 1024 * 1024)})
            session.sync(source, str(tmp_path / "dst"), progress=False)
            assert "syncing" not in terminal()
            (source / "big.bin").write_bytes(os.urandom(6 * 1024 * 1024))
            session.sync(source, str(tmp_path / "dst"))
            shown = terminal()
            assert "syncing src" in shown and "100%" in shown
            session.download(str(tmp_path / "dst"), tmp_path / "back")
            shown = terminal()
            assert "downloading dst" in shown and "100%" in shown
    finally:
        terminal.stream.close()
        os.close(terminal.master)
