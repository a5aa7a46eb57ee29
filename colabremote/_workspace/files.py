"""Folders on the runtime: ``s.sync(local_dir, remote_dir)`` and ``s.download`` of a folder.

The bytes go through the session's own call path (the agent's chunked comm messages), so this
works the same on every backend and never sends one giant request. The kernel lists the remote
tree with sizes and sha256 digests (kept per file by size and mtime while the kernel lives);
only files whose content differs go, in pieces of at most :data:`CHUNK` bytes, small files
several to a call. The receiving side writes each file to a hidden temporary file beside the
target, checks every piece's digest and the whole file's, and renames it into place: a file is
whole or absent. Nothing is deleted on the receiving side unless ``delete=True``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._progress import Progress
from ..exceptions import ConfigurationError, PathNotFound, RemoteCallError
from . import Caller, by_value

#: The most bytes of file content one call carries, either way.
CHUNK = 8 * 1024 * 1024
#: The most files one call carries (many small files go several to a call).
BATCH_FILES = 1000
#: Totals below this transfer without a progress bar.
PROGRESS_THRESHOLD = 4 * 1024 * 1024
#: A digest is remembered only for files last changed longer ago than this (seconds): a file
#: changed again within the same mtime tick would otherwise keep a stale digest.
SETTLED_SECONDS = 2.0
#: Temporary files are named so; listings skip them.
PART_PREFIX = ".colabremote-"
PART_SUFFIX = ".part"


@dataclass(frozen=True)
class SyncResult:
    """What a ``sync`` or ``download`` did: files sent, files skipped because they were already
    the same there, files deleted there (``delete=True``), and the bytes of content sent. Paths
    are relative to the folders, with ``/`` separators."""

    sent: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    bytes: int = 0


class Transfers(Caller, Protocol):
    """What a download needs from a session: calls, where the backend's file paths are on the
    kernel's machine, and the backend's copy of one file."""

    async def kernel_file_path(self, remote: str) -> str | None: ...

    async def transfer(self, direction: str, source: str, target: str, progress: bool) -> None: ...


@dataclass(frozen=True)
class KernelSide:
    """The kernel as a backend sees it when it maps its file paths (``KernelFiles``)."""

    session: Caller
    cwd: str

    async def take(self, path: str) -> str | None:
        found: str | None = await self.session.call(
            _TAKE, (self.cwd, path), timeout=None, name="locating a file"
        )
        return found


# -- which files take part ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """One line of a .gitignore file (or one ``exclude=`` pattern), compiled."""

    regex: re.Pattern[str]
    negated: bool
    directory_only: bool


def _glob_to_regex(pattern: str) -> str:
    """A gitignore glob as a regular expression over a ``/``-separated path: ``*`` and ``?``
    never cross ``/``; ``**`` between slashes spans any number of folders."""
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        char = pattern[i]
        if pattern.startswith("**", i):
            at_start = i == 0 or pattern[i - 1] == "/"
            after = i + 2
            if at_start and after < n and pattern[after] == "/":
                out.append("(?:.*/)?")  # "**/": zero or more folders
                i = after + 1
                continue
            if at_start and after == n:
                out.append(".*")  # a trailing "/**": everything inside
                i = after
                continue
            out.append("[^/]*")  # "**" elsewhere is an ordinary "*"
            i = after
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end == -1:
                out.append(re.escape(char))
                i += 1
                continue
            body = pattern[i + 1 : end]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("(?!/)[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        elif char == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def parse_ignore(lines: Iterable[str]) -> list[_Rule]:
    """Rules from gitignore lines: comments, blank lines, ``!`` negation, a trailing ``/`` for
    folders only, a leading or inner ``/`` anchoring the pattern to its file's folder, ``**``."""
    rules = []
    for raw in lines:
        line = raw.rstrip("\n").rstrip("\r")
        if not line or line.startswith("#"):
            continue
        while line.endswith(" ") and not line.endswith("\\ "):
            line = line[:-1]  # trailing spaces do not count unless escaped
        negated = line.startswith("!")
        if negated or line.startswith(("\\!", "\\#")):
            line = line[1:]
        directory_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        line = line.lstrip("/")
        regex = _glob_to_regex(line)
        if not anchored:
            regex = "(?:.*/)?" + regex
        rules.append(_Rule(re.compile(regex + r"\Z", re.DOTALL), negated, directory_only))
    return rules


def _verdict(rules: list[_Rule], path: str, is_dir: bool, current: bool | None) -> bool | None:
    """The last of ``rules`` that matches ``path`` decides (ignored or not); else ``current``."""
    for rule in rules:
        if rule.directory_only and not is_dir:
            continue
        if rule.regex.match(path):
            current = not rule.negated
    return current


@dataclass
class IgnoreRules:
    """Which paths of a tree stay out: ``.git``, what the tree's .gitignore files say (a deeper
    file overrides a shallower one; inside an ignored folder nothing is looked at, as in git),
    and the ``exclude=`` patterns (gitignore syntax, relative to the top; they only add)."""

    exclude: list[_Rule] = field(default_factory=list)
    #: .gitignore rules by the folder (relative, "" for the top) whose file they came from.
    by_folder: dict[str, list[_Rule]] = field(default_factory=dict)

    def add_gitignore(self, folder: str, text: str) -> None:
        self.by_folder[folder] = parse_ignore(text.splitlines())

    def _ignored_here(self, path: str, is_dir: bool) -> bool:
        """Whether ``path`` itself is ignored (its parents aside)."""
        if posixpath.basename(path) == ".git":
            return True
        if _verdict(self.exclude, path, is_dir, None):
            return True
        verdict: bool | None = None
        parts = path.split("/")
        for depth in range(len(parts)):
            folder = "/".join(parts[:depth])
            rules = self.by_folder.get(folder)
            if rules:
                verdict = _verdict(rules, "/".join(parts[depth:]), is_dir, verdict)
        return bool(verdict)

    def ignored(self, path: str, *, is_dir: bool = False) -> bool:
        """Whether ``path`` (relative, ``/``-separated) stays out, its parent folders included."""
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if self._ignored_here("/".join(parts[:depth]), True):
                return True
        return self._ignored_here(path, is_dir)


def ignore_rules(exclude: Any) -> IgnoreRules:
    """The checked ``exclude=``: a pattern or an iterable of patterns (gitignore syntax)."""
    patterns = [exclude] if isinstance(exclude, str) else exclude
    if not isinstance(patterns, Iterable) or isinstance(patterns, (bytes, dict)):
        raise ConfigurationError(
            f"exclude={exclude!r} is not a list of patterns; pass gitignore-style patterns "
            "such as exclude=['*.ckpt', 'logs/']"
        )
    checked = list(patterns)
    for pattern in checked:
        if not isinstance(pattern, str) or not pattern.strip() or "\n" in pattern:
            raise ConfigurationError(
                f"exclude has {pattern!r}, which is not a pattern; pass non-empty one-line "
                "strings such as '*.ckpt' or 'logs/'"
            )
    return IgnoreRules(exclude=parse_ignore(checked))


@dataclass(frozen=True)
class _LocalFile:
    path: str
    size: int
    mode: int


def _relative(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def walk_local(
    root: str, rules: IgnoreRules, *, gitignore: bool
) -> tuple[dict[str, _LocalFile], set[str]]:
    """The files and folders under ``root`` that take part, by relative path. With
    ``gitignore``, each folder's .gitignore file joins ``rules`` as the walk reaches it."""
    files: dict[str, _LocalFile] = {}
    folders: set[str] = set()
    pending = [""]
    while pending:
        folder = pending.pop()
        here = os.path.join(root, *folder.split("/")) if folder else root
        with os.scandir(here) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        if gitignore:
            marker = next((e for e in entries if e.name == ".gitignore" and e.is_file()), None)
            if marker is not None:
                with open(marker.path, encoding="utf-8", errors="replace") as file:
                    rules.add_gitignore(folder, file.read())
        for entry in entries:
            path = _relative(folder, entry.name)
            if entry.name.startswith(PART_PREFIX) and entry.name.endswith(PART_SUFFIX):
                continue
            if entry.is_dir(follow_symlinks=False):
                if not rules.ignored(path, is_dir=True):
                    folders.add(path)
                    pending.append(path)
                continue
            try:
                info = entry.stat()  # a symbolic link to a file sends the file
            except OSError:
                continue  # a dangling link
            if stat.S_ISREG(info.st_mode) and not rules.ignored(path):
                files[path] = _LocalFile(entry.path, info.st_size, stat.S_IMODE(info.st_mode))
    return files, folders


#: Digests of local files by path: (size, mtime_ns, inode, sha256).
_DIGESTS: dict[str, tuple[int, int, int, str]] = {}


def local_digest(path: str) -> str:
    """The sha256 of a local file, remembered while its size, mtime and inode stay the same."""
    info = os.stat(path)
    key = (info.st_size, info.st_mtime_ns, info.st_ino)
    known = _DIGESTS.get(path)
    if known is not None and known[:3] == key:
        return known[3]
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1024 * 1024):
            digest.update(block)
    value = digest.hexdigest()
    if info.st_mtime_ns < time.time_ns() - SETTLED_SECONDS * 1e9:
        _DIGESTS[path] = (*key, value)
    return value


# -- checks on what the user passed ----------------------------------------------------------


def remote_path(value: Any, name: str) -> str:
    """A checked path on the runtime (relative ones are relative to the kernel's working
    directory): no ``.`` or ``..`` parts (``"."`` alone is the working directory), backslashes
    or control characters, so it names one place plainly."""
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{name}={value!r} is not a path on the runtime; pass a string such as 'data' or "
            "'/content/data'"
        )
    if value.strip() == ".":
        return "."
    parts = [part for part in value.split("/") if part]
    bad = [p for p in parts if p in (".", "..") or "\\" in p or not p.isprintable()]
    if bad or not parts:
        raise ConfigurationError(
            f"{name}={value!r} is not a path on the runtime: use a plain path such as 'data' or "
            "'/content/data', without '.' or '..' parts, backslashes or control characters"
        )
    return ("/" if value.startswith("/") else "") + "/".join(parts)


def local_folder(value: Any, name: str) -> str:
    """A checked local folder that exists."""
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(
            f"{name}={value!r} is not a folder path; pass one such as './data'"
        )
    path = os.fspath(value)
    if not os.path.exists(path):
        raise PathNotFound(
            f"{name}={path!r} does not exist here (relative to the working directory, "
            f"{os.getcwd()}); pass the path of an existing folder"
        )
    if not os.path.isdir(path):
        raise ConfigurationError(
            f"{name}={path!r} is a file, not a folder; sync sends folders: pass its folder, or "
            "use upload() for one file"
        )
    return os.path.abspath(path)


# -- sending ----------------------------------------------------------------------------------


def _pieces(rel: str, local: _LocalFile, target: str) -> Iterator[dict[str, Any]]:
    """One file as pieces for the kernel's writer, read a piece at a time; the last carries the
    whole file's size and digest (the file read while being sent is the one verified)."""
    part = f"{PART_PREFIX}{secrets.token_hex(8)}{PART_SUFFIX}"
    whole = hashlib.sha256()
    offset = 0
    with open(local.path, "rb") as file:
        data = file.read(CHUNK)
        while True:
            following = file.read(CHUNK) if len(data) == CHUNK else b""
            whole.update(data)
            last = not following
            yield {
                "name": rel,
                "target": target,
                "part": part,
                "offset": offset,
                "data": data,
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": offset + len(data) if last else None,
                "digest": whole.hexdigest() if last else None,
                "mode": local.mode,
            }
            if last:
                return
            offset += len(data)
            data = following


async def _send(
    session: Caller,
    root: str,
    files: list[tuple[str, _LocalFile]],
    progress: Progress,
) -> int:
    """Send ``files`` to the kernel folder ``root``, at most CHUNK bytes a call; the bytes."""
    batch: list[dict[str, Any]] = []
    size = 0
    sent = 0

    async def flush() -> None:
        nonlocal batch, size
        if batch:
            report = await session.call(_RECEIVE, (batch,), timeout=None, name="sync")
            if report is not None:
                raise RemoteCallError(
                    f"{report['name']} arrived damaged on the runtime (its sha256 differs from "
                    "what was sent); nothing was written there in its place. Run the transfer "
                    "again"
                )
            batch, size = [], 0

    for rel, local in files:
        target = posixpath.join(root, rel)
        for piece in _pieces(rel, local, target):
            if batch and (size + len(piece["data"]) > CHUNK or len(batch) >= BATCH_FILES):
                await flush()
            batch.append(piece)
            size += len(piece["data"])
            sent += len(piece["data"])
            progress.advance(len(piece["data"]))
        if size >= CHUNK:
            await flush()
    await flush()
    return sent


async def sync(
    session: Caller,
    local_dir: Any,
    remote_dir: Any,
    *,
    exclude: Any,
    delete: bool,
    gitignore: bool,
    progress: bool,
) -> SyncResult:
    """Make ``remote_dir`` on the runtime hold what ``local_dir`` holds, sending only files
    whose content differs; with ``delete``, remove remote files the local folder lacks."""
    remote = remote_path(remote_dir, "remote_dir")
    root = local_folder(local_dir, "local_dir")
    rules = ignore_rules(exclude)
    files, folders = walk_local(root, rules, gitignore=bool(gitignore))
    sizes = {rel: local.size for rel, local in files.items()}
    listing = await session.call(_LIST, (remote, sizes, False), timeout=None, name="sync")
    if listing["kind"] not in ("dir", "missing"):
        raise ConfigurationError(
            f"remote_dir={remote_dir!r} is a file on the runtime ({listing['root']}); pass a "
            "folder's path"
        )
    remote_files: dict[str, list[Any]] = listing.get("files", {})
    changed, skipped = [], []
    for rel, local in sorted(files.items()):
        there = remote_files.get(rel)
        if there is not None and there[0] == local.size and there[1] == local_digest(local.path):
            skipped.append(rel)
        else:
            changed.append((rel, local))
    total = sum(local.size for _rel, local in changed)
    bar = Progress(
        f"syncing {os.path.basename(root) or root}",
        total,
        enabled=progress and total >= PROGRESS_THRESHOLD,
    )
    sent = await _send(session, listing["root"], changed, bar)
    bar.done()
    deleted: list[str] = []
    if delete:
        deleted = sorted(r for r in remote_files if r not in files and not rules.ignored(r))
        extra = [
            d
            for d in listing.get("dirs", ())
            if d not in folders and not rules.ignored(d, is_dir=True)
        ]
        if deleted or extra:
            await session.call(
                _DELETE, (listing["root"], deleted, extra), timeout=None, name="sync"
            )
    return SyncResult(tuple(r for r, _ in changed), tuple(skipped), tuple(deleted), sent)


async def upload_in_pieces(session: Transfers, local: str, remote: str, *, progress: bool) -> bool:
    """Send the local file ``local`` to ``remote`` (a path as ``upload`` takes it) through the
    kernel, in pieces, checked and renamed into place as ``sync`` sends files; False when the
    backend cannot tell where ``remote`` is on the kernel's machine (nothing was sent)."""
    target = await session.kernel_file_path(remote)
    if target is None:
        return False
    info = os.stat(local)
    bar = Progress(f"uploading {os.path.basename(local)}", info.st_size, enabled=progress)
    file = _LocalFile(local, info.st_size, stat.S_IMODE(info.st_mode))
    await _send(session, posixpath.dirname(target), [(posixpath.basename(target), file)], bar)
    bar.done()
    return True


# -- receiving ----------------------------------------------------------------------------------


async def list_remote(session: Caller, remote: str) -> dict[str, Any]:
    """The kernel's view of ``remote``: its kind ("dir", "file", "other" or "missing"), its
    absolute path, a file's size and digest, and for a folder every file's size and digest and
    every subfolder."""
    result: dict[str, Any] = await session.call(
        _LIST, (remote, {}, True), timeout=None, name="download"
    )
    return result


async def download(
    session: Transfers,
    remote: Any,
    local: Any,
    *,
    progress: bool,
    delete: bool,
    exclude: Any,
) -> SyncResult:
    """A remote folder mirrored into ``local``, or a remote file copied there: through the
    kernel when it sees the path (from its working directory, else where the backend's file
    server names it), else through the backend's own copy."""
    path = remote_path(remote, "remote")
    if not isinstance(local, (str, os.PathLike)):
        raise ConfigurationError(
            f"local={local!r} is not a local path; pass one such as './outputs'"
        )
    local = os.fspath(local)
    ignore_rules(exclude)  # checked before anything is asked of the kernel
    listing = await list_remote(session, path)
    if listing["kind"] not in ("dir", "file"):
        # Not there from the kernel's working directory: where the backend's file server
        # names it (a Jupyter server's root; the emulator's /content), still through the kernel.
        mapped = await session.kernel_file_path(path)
        if mapped is not None:
            places = [listing["root"]]
            if mapped != listing["root"]:
                listing = await list_remote(session, mapped)
                places.append(mapped)
            if listing["kind"] == "missing":
                raise PathNotFound(
                    f"{remote} is not on the runtime (looked for {' and '.join(places)}); pass "
                    "the path of an existing file or folder there"
                )
    if listing["kind"] == "dir":
        return await download_folder(
            session, listing, local, exclude=exclude, delete=delete, progress=progress
        )
    if remote.endswith("/"):
        missing = listing["kind"] == "missing"
        what = "is not on the runtime" if missing else "is not a folder on the runtime"
        raise PathNotFound(f"{remote} {what} ({listing['root']})")
    name = posixpath.basename(path)
    target = os.path.join(local, name) if os.path.isdir(local) else local
    if listing["kind"] == "file":  # in chunks through the kernel, never one giant request
        size = int(listing["size"])
        bar = Progress(f"downloading {name}", size, enabled=progress and size >= PROGRESS_THRESHOLD)
        fetch = _Fetch(session, posixpath.dirname(listing["root"]), "", bar)
        await fetch.file(name, size, str(listing["digest"]), target=os.path.abspath(target))
        await fetch.flush()
        bar.done()
        return SyncResult(sent=(name,), bytes=size)
    # Not there as the kernel sees it: the backend's own copy, or its own error.
    await session.transfer("download", remote, local, progress)
    return SyncResult(sent=(name,), bytes=os.path.getsize(target))


class _Incoming:
    """A downloaded file being written beside its target, renamed into place only once its
    digest is right: a damaged one leaves nothing."""

    def __init__(self, target: str, name: str) -> None:
        self.target = target
        self.name = name
        folder = os.path.dirname(target)
        os.makedirs(folder, exist_ok=True)
        handle, self.temporary = tempfile.mkstemp(
            dir=folder, prefix=PART_PREFIX, suffix=PART_SUFFIX
        )
        self.file = os.fdopen(handle, "wb")
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.file.write(data)

    def finish(self, digest: str) -> None:
        self.file.close()
        if self.digest.hexdigest() != digest:
            self.abandon()
            raise RemoteCallError(
                f"{self.name} arrived damaged (or changed on the runtime while it was read): "
                "its sha256 differs from the runtime's; nothing was written in its place. Run "
                "the download again"
            )
        os.replace(self.temporary, self.target)

    def abandon(self) -> None:
        self.file.close()
        if os.path.exists(self.temporary):
            os.unlink(self.temporary)


async def download_folder(
    session: Caller,
    listing: dict[str, Any],
    local: str,
    *,
    exclude: Any,
    delete: bool,
    progress: bool,
) -> SyncResult:
    """Mirror the remote folder ``listing`` describes into the local folder ``local``, fetching
    only files whose content differs; with ``delete``, remove local files the remote lacks."""
    rules = ignore_rules(exclude)
    root = os.path.abspath(local)
    if os.path.exists(root) and not os.path.isdir(root):
        raise ConfigurationError(
            f"{local!r} is a file here, and {listing['root']} on the runtime is a folder; pass "
            "a folder path to download it into"
        )
    os.makedirs(root, exist_ok=True)
    here, here_folders = walk_local(root, IgnoreRules(exclude=rules.exclude), gitignore=False)
    remote_files: dict[str, list[Any]] = listing["files"]
    wanted = []
    skipped = []
    for rel, (size, digest) in sorted(remote_files.items()):
        if rules.ignored(rel):
            continue
        mine = here.get(rel)
        if mine is not None and mine.size == size and local_digest(mine.path) == digest:
            skipped.append(rel)
        else:
            wanted.append((rel, int(size), str(digest)))
    total = sum(size for _rel, size, _digest in wanted)
    bar = Progress(
        f"downloading {posixpath.basename(listing['root'])}",
        total,
        enabled=progress and total >= PROGRESS_THRESHOLD,
    )
    fetch = _Fetch(session, listing["root"], root, bar)
    for rel, size, digest in wanted:
        await fetch.file(rel, size, digest)
    await fetch.flush()
    bar.done()
    deleted: list[str] = []
    if delete:
        deleted = sorted(r for r in here if r not in remote_files and not rules.ignored(r))
        for rel in deleted:
            os.unlink(os.path.join(root, *rel.split("/")))
        extra = here_folders - set(listing.get("dirs", ()))
        for folder in sorted(extra, key=len, reverse=True):
            with contextlib.suppress(OSError):  # not empty: it holds excluded files
                os.rmdir(os.path.join(root, *folder.split("/")))
    return SyncResult(
        tuple(r for r, _s, _d in wanted), tuple(skipped), tuple(deleted), fetch.received
    )


class _Fetch:
    """Files fetched from the kernel folder ``remote_root`` into ``root``: small ones several to
    a call (up to CHUNK bytes), a large one a chunk a call, each written as it arrives."""

    def __init__(self, session: Caller, remote_root: str, root: str, bar: Progress) -> None:
        self.session = session
        self.remote_root = remote_root
        self.root = root
        self.bar = bar
        self.received = 0
        self.small: list[tuple[str, int, str, str]] = []

    async def _read(self, requests: list[tuple[str, int, int]]) -> list[bytes]:
        blobs: list[bytes] = await self.session.call(
            _READ, (requests,), timeout=None, name="download"
        )
        return blobs

    async def file(self, rel: str, size: int, digest: str, *, target: str | None = None) -> None:
        """Fetch ``rel`` into ``target`` (by default its place under the local root)."""
        target = target or os.path.join(self.root, *rel.split("/"))
        if size <= CHUNK:
            full = sum(entry[1] for entry in self.small) + size > CHUNK
            if full or len(self.small) >= BATCH_FILES:
                await self.flush()
            self.small.append((rel, size, digest, target))
            return
        await self.flush()
        path = posixpath.join(self.remote_root, rel)
        incoming = _Incoming(target, rel)
        try:
            for offset in range(0, size, CHUNK):
                (data,) = await self._read([(path, offset, min(CHUNK, size - offset))])
                self._arrived(incoming, data)
        except BaseException:
            incoming.abandon()
            raise
        incoming.finish(digest)

    async def flush(self) -> None:
        if not self.small:
            return
        batch, self.small = self.small, []
        requests = [(posixpath.join(self.remote_root, entry[0]), 0, entry[1]) for entry in batch]
        blobs = await self._read(requests)
        for (rel, _size, digest, target), data in zip(batch, blobs, strict=True):
            incoming = _Incoming(target, rel)
            try:
                self._arrived(incoming, data)
            except BaseException:
                incoming.abandon()
                raise
            incoming.finish(digest)

    def _arrived(self, incoming: _Incoming, data: bytes) -> None:
        incoming.write(data)
        self.received += len(data)
        self.bar.advance(len(data))


# -- the kernel's side (each sent whole: it cannot call helpers here) -------------------------


def _list_on_kernel(path: str, sizes: dict[str, int], hash_all: bool) -> dict[str, Any]:
    """Runs in the kernel: what ``path`` is (with a file's size and sha256), and for a folder
    its files (size, and the sha256
    of those ``hash_all`` or ``sizes`` asks for) and subfolders, ``.git`` left out. Digests are
    remembered by size, mtime and inode while the kernel lives. Temporary files of transfers
    that never finished are removed."""
    import contextlib
    import hashlib
    import os
    import stat
    import sys
    import time
    import types

    root = os.path.abspath(path)
    store = sys.modules.setdefault("_colabremote_digests", types.ModuleType("digests"))
    known: dict[str, tuple[int, int, int, str]] = vars(store).setdefault("known", {})
    settled = time.time_ns() - 2_000_000_000

    def digest_of(full: str, info: os.stat_result) -> str:
        key = (info.st_size, info.st_mtime_ns, info.st_ino)
        remembered = known.get(full)
        if remembered is not None and remembered[:3] == key:
            return remembered[3]
        digest = hashlib.sha256()
        with open(full, "rb") as file:
            while block := file.read(1024 * 1024):
                digest.update(block)
        value = digest.hexdigest()
        if info.st_mtime_ns < settled:
            known[full] = (*key, value)
        return value

    if not os.path.exists(root):
        return {"kind": "missing", "root": root}
    if not os.path.isdir(root):
        info = os.stat(root)
        if not stat.S_ISREG(info.st_mode):
            return {"kind": "other", "root": root}
        return {"kind": "file", "root": root, "size": info.st_size, "digest": digest_of(root, info)}
    files: dict[str, list[Any]] = {}
    folders: list[str] = []
    for here, subfolders, names in os.walk(root):
        relative = os.path.relpath(here, root).replace(os.sep, "/")
        prefix = "" if relative == "." else relative + "/"
        subfolders[:] = sorted(
            name
            for name in subfolders
            if name != ".git" and not os.path.islink(os.path.join(here, name))
        )
        folders.extend(prefix + name for name in subfolders)
        for name in sorted(names):
            full = os.path.join(here, name)
            if name.startswith(".colabremote-") and name.endswith(".part"):
                with contextlib.suppress(OSError):
                    os.unlink(full)
                continue
            try:
                info = os.stat(full)
            except OSError:
                continue  # a dangling link, or gone since the listing
            if not stat.S_ISREG(info.st_mode):
                continue
            rel = prefix + name
            wanted = hash_all or sizes.get(rel) == info.st_size
            files[rel] = [info.st_size, digest_of(full, info) if wanted else None]
    return {"kind": "dir", "root": root, "files": files, "dirs": folders}


def _receive_on_kernel(pieces: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Runs in the kernel: write each piece into its file's temporary file beside the target,
    checking its digest; at a file's last piece check the whole file and rename it into place.
    A damaged piece or file removes the temporary file and names the file."""
    import hashlib
    import os

    for piece in pieces:
        target = piece["target"]
        folder = os.path.dirname(target)
        part = os.path.join(folder, piece["part"])
        try:
            if hashlib.sha256(piece["data"]).hexdigest() != piece["sha256"]:
                raise ValueError(piece["name"])
            os.makedirs(folder, exist_ok=True)
            with open(part, "r+b" if piece["offset"] else "wb") as file:
                file.seek(piece["offset"])
                file.write(piece["data"])
            if piece["digest"] is None:
                continue
            whole = hashlib.sha256()
            with open(part, "rb") as file:
                while block := file.read(1024 * 1024):
                    whole.update(block)
            if whole.hexdigest() != piece["digest"] or os.path.getsize(part) != piece["size"]:
                raise ValueError(piece["name"])
            os.chmod(part, piece["mode"])
            os.replace(part, target)
        except ValueError:
            if os.path.exists(part):
                os.unlink(part)
            return {"name": piece["name"]}
        except BaseException:
            if os.path.exists(part):
                os.unlink(part)
            raise
    return None


def _take_on_kernel(start: str, path: str) -> str | None:
    """Runs in the kernel: the first of ``start`` and its parents under which the relative
    file ``path`` exists, which is then removed; None when there is none."""
    import os

    folder = start
    while True:
        found = os.path.join(folder, path)
        if os.path.isfile(found):
            os.unlink(found)
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _read_on_kernel(requests: list[tuple[str, int, int]]) -> list[bytes]:
    """Runs in the kernel: the bytes at (path, offset, length) of each request."""
    blobs = []
    for path, offset, length in requests:
        with open(path, "rb") as file:
            file.seek(offset)
            blobs.append(file.read(length))
    return blobs


def _delete_on_kernel(root: str, files: list[str], folders: list[str]) -> None:
    """Runs in the kernel: remove ``files`` under ``root``, then ``folders`` that are empty
    (deepest first; one still holding ignored files stays)."""
    import contextlib
    import os

    for rel in files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(root, rel))
    for rel in sorted(folders, key=len, reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(root, rel))


_LIST = by_value(_list_on_kernel, "colabremote-files")
_RECEIVE = by_value(_receive_on_kernel, "colabremote-files")
_READ = by_value(_read_on_kernel, "colabremote-files")
_TAKE = by_value(_take_on_kernel, "colabremote-files")
_DELETE = by_value(_delete_on_kernel, "colabremote-files")
