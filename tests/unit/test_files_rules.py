"""Pure logic of s.sync: gitignore rules, remote path checks, and the kernel-side writer's
checks (run here as plain functions: a piece damaged in transit leaves nothing behind)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from colabremote._workspace import files
from colabremote.exceptions import ConfigurationError, RemoteCallError


def rules(text: str, *, exclude: tuple[str, ...] = ()) -> files.IgnoreRules:
    found = files.ignore_rules(exclude)
    found.add_gitignore("", text)
    return found


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "ignored"),
    [
        ("*.log", "a.log", False, True),
        ("*.log", "deep/er/a.log", False, True),
        ("*.log", "a.logx", False, False),
        ("build/", "build", True, True),
        ("build/", "build", False, False),  # directory-only: a file named build stays
        ("build/", "src/build/x.o", False, True),  # inside an ignored folder
        ("/top.txt", "top.txt", False, True),
        ("/top.txt", "deep/top.txt", False, False),
        ("docs/*.md", "docs/a.md", False, True),
        ("docs/*.md", "docs/sub/a.md", False, False),  # * does not cross /
        ("docs/*.md", "x/docs/a.md", False, False),  # an inner / anchors too
        ("**/cache", "cache", True, True),
        ("**/cache", "a/b/cache", True, True),
        ("a/**/z", "a/z", False, True),
        ("a/**/z", "a/b/c/z", False, True),
        ("logs/**", "logs/x/y.txt", False, True),
        ("file?.txt", "file1.txt", False, True),
        ("file?.txt", "file10.txt", False, False),
        ("[ab].txt", "a.txt", False, True),
        ("[!ab].txt", "a.txt", False, False),
        ("[!ab].txt", "c.txt", False, True),
        ("\\#hash", "#hash", False, True),
        ("\\!bang", "!bang", False, True),
        ("# a comment", "# a comment", False, False),
        ("trailing   ", "trailing", False, True),
    ],
)
def test_gitignore_patterns(pattern: str, path: str, is_dir: bool, ignored: bool) -> None:
    assert rules(pattern + "\n").ignored(path, is_dir=is_dir) is ignored


def test_the_last_match_wins_and_negation_re_includes() -> None:
    found = rules("*.log\n!keep.log\n")
    assert found.ignored("a.log") and not found.ignored("keep.log")
    assert rules("!keep.log\n*.log\n").ignored("keep.log")


def test_a_deeper_gitignore_overrides_and_applies_below_itself_only() -> None:
    found = rules("*.csv\n")
    found.add_gitignore("data", "!*.csv\n")
    assert found.ignored("x.csv")
    assert not found.ignored("data/x.csv")
    found.add_gitignore("only", "/here.txt\n")
    assert found.ignored("only/here.txt") and not found.ignored("here.txt")


def test_nothing_inside_an_ignored_folder_is_re_included() -> None:
    """As in git: a negation cannot bring back a file whose parent folder is ignored."""
    assert rules("build/\n!build/keep.txt\n").ignored("build/keep.txt")


def test_exclude_only_adds_and_git_is_never_sent() -> None:
    found = rules("!*.ckpt\n", exclude=("*.ckpt",))
    assert found.ignored("model.ckpt")
    assert found.ignored(".git", is_dir=True) and found.ignored(".git/config")
    assert found.ignored("sub/.git/HEAD")


def test_walk_local_skips_ignored_folders_without_reading_them(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("skip/\n*.tmp\n")
    (tmp_path / "skip").mkdir()
    (tmp_path / "skip" / ".gitignore").write_text("!*.tmp\n")
    (tmp_path / "skip" / "x.txt").write_text("x")
    (tmp_path / "a.tmp").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("b")
    (tmp_path / "sub" / ".colabremote-0123.part").write_text("an unfinished transfer")
    found, folders = files.walk_local(str(tmp_path), files.IgnoreRules(), gitignore=True)
    assert sorted(found) == [".gitignore", "sub/b.txt"]
    assert folders == {"sub"}
    everything, _ = files.walk_local(str(tmp_path), files.IgnoreRules(), gitignore=False)
    assert "a.tmp" in everything and "skip/x.txt" in everything


@pytest.mark.parametrize("bad", ["..", "../x", "a/../b", "./a", "a\\b", "a\x00b", "", "/"])
def test_remote_paths_are_plain(bad: str) -> None:
    with pytest.raises(ConfigurationError, match=r"without '\.' or '\.\.' parts"):
        files.remote_path(bad, "remote_dir")


def test_remote_paths_keep_their_meaning() -> None:
    assert files.remote_path("data", "r") == "data"
    assert files.remote_path("data//small/", "r") == "data/small"
    assert files.remote_path("/content/data", "r") == "/content/data"
    assert files.remote_path(".", "r") == "."
    with pytest.raises(ConfigurationError, match="not a path on the runtime"):
        files.remote_path(5, "remote_dir")


def pieces_for(tmp_path: Path, content: bytes, target: Path) -> list[dict[str, Any]]:
    local = tmp_path / "local.bin"
    local.write_bytes(content)
    os.chmod(local, 0o750)
    entry = files._LocalFile(str(local), len(content), 0o750)
    return list(files._pieces("x/file.bin", entry, str(target)))


def test_the_writer_puts_a_verified_file_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "CHUNK", 1000)
    content = os.urandom(2500)
    target = tmp_path / "remote" / "x" / "file.bin"
    pieces = pieces_for(tmp_path, content, target)
    assert [len(p["data"]) for p in pieces] == [1000, 1000, 500]
    assert files._receive_on_kernel(pieces[:2]) is None
    assert not target.exists()  # whole or absent
    assert files._receive_on_kernel(pieces[2:]) is None
    assert target.read_bytes() == content
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert os.listdir(target.parent) == ["file.bin"]  # no temporary file left


@pytest.mark.parametrize("damage", ["piece", "whole"])
def test_a_damaged_transfer_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    monkeypatch.setattr(files, "CHUNK", 1000)
    target = tmp_path / "remote" / "x" / "file.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"the old version")
    pieces = pieces_for(tmp_path, os.urandom(2500), target)
    if damage == "piece":  # a byte flipped in transit: the piece's digest no longer fits
        data = bytearray(pieces[1]["data"])
        data[7] ^= 0xFF
        pieces[1]["data"] = bytes(data)
    else:  # every piece intact, but the whole file is not what was sent
        pieces[-1]["digest"] = hashlib.sha256(b"something else").hexdigest()
    assert files._receive_on_kernel(pieces) == {"name": "x/file.bin"}
    assert target.read_bytes() == b"the old version"
    assert os.listdir(target.parent) == ["file.bin"]


def test_an_empty_file_is_one_piece(tmp_path: Path) -> None:
    target = tmp_path / "remote" / "empty"
    pieces = pieces_for(tmp_path, b"", target)
    assert len(pieces) == 1 and pieces[0]["size"] == 0
    assert files._receive_on_kernel(pieces) is None
    assert target.read_bytes() == b""


def test_a_download_that_arrives_damaged_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    incoming = files._Incoming(str(target), "out.bin")
    incoming.write(b"abc")
    with pytest.raises(RemoteCallError, match=r"out\.bin arrived damaged"):
        incoming.finish(hashlib.sha256(b"abd").hexdigest())
    assert os.listdir(tmp_path) == []


def test_exclude_must_be_patterns() -> None:
    assert files.ignore_rules("*.log").ignored("a.log")  # one pattern on its own
    for bad in (5, b"*.log", {"a": 1}, ["ok", 3], ["two\nlines"]):
        with pytest.raises(ConfigurationError, match="exclude"):
            files.ignore_rules(bad)
