"""Where a detached call's files are read from: through the Jupyter server's Contents API (jupyter
and Colab runtimes, also while the kernel is busy running the call), or directly from this
machine's disk (a local kernel). The kernels they run in are checked and interrupted the same way:
the server's REST API, or the local backend."""

from __future__ import annotations

import abc
import base64
import binascii
import json
import os
import re
import shutil
import tempfile
import weakref
from typing import Any, TypeVar
from urllib.parse import quote

from .._backends.base import Backend
from .._backends.jupyter import JupyterBackend
from .._backends.local import LocalBackend
from .._kernel.agent.detached import CALL_FOLDER, CALL_ID, CALLS_DIR_NAME
from ..exceptions import CallFilesInvalid, ConfigurationError, ServerError, SessionClosed

#: The most a call's small JSON files (meta, state, heartbeat, result fields, evicted ids) may
#: hold: far beyond what the agent writes, so a larger one comes from something else.
JSON_LIMIT = 1024 * 1024
#: What a kernel id in a call's ``meta.json`` may look like (Jupyter's are UUIDs).
KERNEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
#: The names of a call's files (``""``: the calls folder itself).
_FOLDER = re.compile(rf"|{CALL_FOLDER.pattern}")
_NAME = re.compile(
    r"meta\.json|state\.json|heartbeat|result\.json|result\.bin|evicted\.json|cancel|log\.\d{6}"
)


def _too_large(folder: str, name: str, limit: int) -> CallFilesInvalid:
    where = f"{folder}/{name}" if folder else name
    return CallFilesInvalid(
        f"the runtime's {CALLS_DIR_NAME}/{where} holds more than the {limit} bytes colabremote "
        "writes there at most; something other than colabremote wrote it, so it was not used"
    )


def _checked(folder: str, name: str) -> None:
    """Only a call's own files are read: a folder or name from elsewhere never reaches a path."""
    if not (_FOLDER.fullmatch(folder) and _NAME.fullmatch(name)):
        raise ConfigurationError(f"{folder}/{name} is not a detached call's file")


class CallFiles(abc.ABC):
    """The calls folder on the kernel's machine, and the kernels its calls run in."""

    #: Passed to the agent as the calls folder (local kernels); None: the agent's own choice.
    home: str | None = None

    @abc.abstractmethod
    async def read(self, folder: str, name: str, limit: int | None = None) -> bytes | None:
        """A file of the calls folder (``folder`` "" for the calls folder itself); None when it
        is not there. ``limit``: its most bytes; a larger file is CallFilesInvalid."""

    @abc.abstractmethod
    async def folders(self) -> list[str]:
        """The calls' folders (none while no call has run)."""

    @abc.abstractmethod
    async def kernel_alive(self, kernel: str | None) -> bool:
        """Whether the kernel a call runs in is still there."""

    @abc.abstractmethod
    async def interrupt(self, kernel: str | None) -> None:
        """Interrupt the kernel a call runs in (as Ctrl-C in a notebook)."""

    @abc.abstractmethod
    async def request_cancel(self, folder: str) -> None:
        """Write the call's ``cancel`` file: its agent interrupts it if it still runs."""

    async def read_json(self, folder: str, name: str) -> dict[str, Any] | None:
        data = await self.read(folder, name, JSON_LIMIT)
        if data is None:
            return None
        try:
            value = json.loads(data)
        except ValueError:
            return None  # being replaced as we read: the caller reads again later
        return value if isinstance(value, dict) else None

    async def evicted(self) -> set[str]:
        """The ids of calls removed to keep the disk bounded."""
        ids = (await self.read_json("", "evicted.json") or {}).get("ids")
        if not isinstance(ids, list):
            return set()
        return {i for i in ids if isinstance(i, str) and CALL_ID.fullmatch(i)}


class ServerFiles(CallFiles):
    """A Jupyter server's calls folder, through its Contents API. The folder is
    ``colabremote-calls`` in the kernels' working directory: the server's root, or the backend's
    ``kernel_path`` under it (Colab's ``content``)."""

    def __init__(self, backend: JupyterBackend) -> None:
        # Weakly: the backend is this object's key in ``_files``, which a strong reference
        # would keep alive for ever.
        self._backend_ref = weakref.ref(backend)
        self._base: str | None = None

    @property
    def _backend(self) -> JupyterBackend:
        return _alive(self._backend_ref)

    async def _get(self, path: str, **params: str) -> Any:
        """The JSON of a GET on the server; None for a 404 that means "not there".

        Missing files are normal here (a call not started, no output yet), so a 404 is first
        checked against the server's root: only if that fails too is the proxy refusing (an
        expired Colab proxy token, after the laptop slept), and the backend's own request,
        which gets a new token first, goes instead. Asked every poll, a refresh per 404 would
        be one Colab request per second."""
        doing = "reading a detached call's files"
        plain = JupyterBackend._request  # without the Colab proxy's refresh on every 404
        try:
            return (await plain(self._backend, "GET", path, doing, params=params)).json()
        except ServerError as exc:
            if exc.status not in (401, 403, 404):
                raise
            if exc.status == 404 and await self._root_answers():
                return None
        try:
            return (await self._backend._request("GET", path, doing, params=params)).json()
        except ServerError as exc:
            if exc.status == 404:
                return None
            raise

    async def _root_answers(self) -> bool:
        try:
            await JupyterBackend._request(
                self._backend,
                "GET",
                "/api/contents",
                "checking the server",
                params={"content": "0"},
            )
        except ServerError:
            return False
        return True

    async def _model(
        self, path: str, *, content: bool, file: bool = False
    ) -> dict[str, Any] | None:
        """The Contents API's model of ``path`` (a file's bytes as base64), None if missing."""
        params = {"content": "1" if content else "0"}
        if file:
            params.update({"type": "file", "format": "base64"})
        model = await self._get(JupyterBackend._contents_path(path), **params)
        return model if isinstance(model, dict) else None

    async def _calls_dir(self) -> str | None:
        if self._base is None:
            prefix = self._backend.kernel_path
            candidates = [f"{prefix}/{CALLS_DIR_NAME}"] if prefix else []
            for candidate in [*candidates, CALLS_DIR_NAME]:
                model = await self._model(candidate, content=False)
                if model is not None and model.get("type") == "directory":
                    self._base = candidate
                    break
        return self._base

    async def read(self, folder: str, name: str, limit: int | None = None) -> bytes | None:
        _checked(folder, name)
        base = await self._calls_dir()
        if base is None:
            return None
        path = "/".join(p for p in (base, folder, name) if p)
        model = await self._model(path, content=True, file=True)
        if model is None or model.get("type") != "file":
            return None
        content = model.get("content") or ""
        if not isinstance(content, str):
            raise CallFilesInvalid(f"the server sent no file content for {path}")
        # Checked before decoding: base64 takes 4 characters for each 3 bytes, and the server
        # breaks its lines every 76 characters.
        encoded = (limit + 2) // 3 * 4 if limit is not None else 0
        if limit is not None and len(content) > encoded + encoded // 76 + 1:
            raise _too_large(folder, name, limit)
        try:
            data = base64.b64decode(content)
        except (binascii.Error, ValueError):
            raise CallFilesInvalid(f"the server sent {path} in a form that is not base64") from None
        if limit is not None and len(data) > limit:
            raise _too_large(folder, name, limit)
        return data

    async def folders(self) -> list[str]:
        base = await self._calls_dir()
        if base is None:
            return []
        model = await self._model(base, content=True)
        entries: Any = (model or {}).get("content") or []
        if not isinstance(entries, list):
            return []
        return sorted(
            e["name"]
            for e in entries
            if isinstance(e, dict)
            and e.get("type") == "directory"
            and isinstance(e.get("name"), str)
            and CALL_FOLDER.fullmatch(e["name"])
        )

    def _kernel(self, kernel: str | None) -> str | None:
        """The kernel's API path; None for a kernel id that is not one."""
        kernel = kernel or self._backend.kernel_id
        if not isinstance(kernel, str) or not KERNEL_ID.fullmatch(kernel):
            return None
        return f"/api/kernels/{quote(kernel, safe='')}"

    async def kernel_alive(self, kernel: str | None) -> bool:
        path = self._kernel(kernel)
        if path is None:
            return False
        model = await self._get(path)
        return isinstance(model, dict) and model.get("execution_state") != "dead"

    async def request_cancel(self, folder: str) -> None:
        _checked(folder, "cancel")
        base = await self._calls_dir()
        if base is None:
            return  # no calls folder: no call to cancel
        path = JupyterBackend._contents_path(f"{base}/{folder}/cancel")
        body = {"type": "file", "format": "text", "content": "cancel\n"}
        await self._backend._request("PUT", path, "cancelling a detached call", json=body)

    async def interrupt(self, kernel: str | None) -> None:
        path = self._kernel(kernel)
        if path is None:
            raise CallFilesInvalid(
                f"the call's meta.json names {kernel!r} as its kernel, which is not a kernel id; "
                "nothing was interrupted"
            )
        await self._backend._request(
            "POST", path + "/interrupt", "interrupting a detached call's kernel"
        )


class LocalFiles(CallFiles):
    """A local kernel's calls: a private folder of this session's backend, removed when the
    session closes (its kernel, and so its calls, end then) or at the latest when this process
    exits."""

    def __init__(self, backend: LocalBackend) -> None:
        self._backend_ref = weakref.ref(backend)  # weakly, as ServerFiles does
        self._root = self.home = tempfile.mkdtemp(prefix="colabremote-calls-")
        self._remover = weakref.finalize(self, shutil.rmtree, self._root, True)

    def remove(self) -> None:
        """Remove the folder and what the calls left in it (at the session's close)."""
        self._remover()

    async def read(self, folder: str, name: str, limit: int | None = None) -> bytes | None:
        _checked(folder, name)
        try:
            with open(os.path.join(self._root, folder, name), "rb") as f:
                data = f.read(-1 if limit is None else limit + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        if limit is not None and len(data) > limit:
            raise _too_large(folder, name, limit)
        return data

    async def folders(self) -> list[str]:
        try:
            names = os.listdir(self._root)
        except FileNotFoundError:
            return []
        return sorted(
            n
            for n in names
            if CALL_FOLDER.fullmatch(n) and os.path.isdir(os.path.join(self._root, n))
        )

    async def kernel_alive(self, kernel: str | None) -> bool:
        return await _alive(self._backend_ref).is_alive()

    async def request_cancel(self, folder: str) -> None:
        _checked(folder, "cancel")
        with open(os.path.join(self._root, folder, "cancel"), "w") as f:
            f.write("cancel\n")

    async def interrupt(self, kernel: str | None) -> None:
        await _alive(self._backend_ref).interrupt()


B = TypeVar("B", bound=Backend)


def _alive(backend: weakref.ref[B]) -> B:
    """The backend of a session that still exists (its calls' handles keep it)."""
    found = backend()
    if found is None:
        raise SessionClosed("the session of these detached calls is gone; attach from an open one")
    return found


_files: weakref.WeakKeyDictionary[Backend, CallFiles] = weakref.WeakKeyDictionary()


def files_for(backend: Backend) -> CallFiles:
    """The calls folder a backend's kernels write to (one object per backend, which remembers
    where the folder is)."""
    files = _files.get(backend)
    if files is None:
        if isinstance(backend, JupyterBackend):
            files = ServerFiles(backend)
        elif isinstance(backend, LocalBackend):
            files = LocalFiles(backend)
        else:
            raise ConfigurationError(
                f"the {backend.name} backend has no detached calls; use a local, jupyter, "
                "colab or emulator session"
            )
        _files[backend] = files
    return files
