"""A minimal ``google.colab`` package for the emulator's kernels, written to a directory at start.

Only ``google.colab.drive.mount(path)``, ``google.colab.userdata.get(key)``, ``google.colab.errors``
and ``google.colab._message`` exist. ``mount`` and ``get`` send the real ``colab_request`` (iopub;
``request_auth`` / ``dfs_ephemeral``, or ``GetSecret`` / ``{"key": ...}``; parent header holding
only the session) and poll the kernel's stdin socket for the matching ``colab_reply``, as
colabtools does; ``get`` raises colabtools' error types. The package is kept as text so that it is
not part of colabremote itself.
"""

from __future__ import annotations

from pathlib import Path

_MESSAGE = '''"""Kernel-to-frontend requests, as google.colab._message does them (emulator copy)."""

import itertools
import time

from google.colab import errors

_ids = itertools.count(1)


class MessageError(errors.Error):
    """The frontend answered a colab_request with an error."""


def _kernel():
    from IPython import get_ipython

    return get_ipython().kernel


def send_request(request_type, request):
    kernel = _kernel()
    msg_id = next(_ids)
    parent = kernel.get_parent("shell") or {}
    session_id = parent.get("header", {}).get("session", "")
    msg = kernel.session.msg(
        "colab_request",
        content={"request": request},
        metadata={"colab_request_type": request_type, "colab_msg_id": msg_id},
    )
    msg["parent_header"] = {"session": session_id}
    kernel.session.send(kernel.iopub_socket, msg)
    return msg_id


def read_reply(msg_id, timeout_sec=None):
    kernel = _kernel()
    deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
    while deadline is None or time.monotonic() < deadline:
        _, reply = kernel.session.recv(kernel.stdin_socket)
        if reply is None:
            time.sleep(0.025)
            continue
        value = reply.get("content", {}).get("value")
        if not isinstance(value, dict) or value.get("type") != "colab_reply":
            continue
        if value.get("colab_msg_id") != msg_id:
            continue
        if "error" in value:
            raise MessageError(value["error"])
        return value.get("data")
    raise TimeoutError("no reply to colab_request %d" % msg_id)


def blocking_request(request_type, request, timeout_sec=None):
    return read_reply(send_request(request_type, request), timeout_sec)
'''

_DRIVE = '''"""google.colab.drive, emulator copy: mount() asks the frontend for credentials."""

from google.colab import _message


def mount(mountpoint="/content/drive", force_remount=False, timeout_ms=120000, readonly=False):
    _message.blocking_request(
        "request_auth", {"authType": "dfs_ephemeral"}, timeout_sec=timeout_ms / 1000
    )
    print("Mounted at " + mountpoint)


def flush_and_unmount(timeout_ms=86400000):
    pass
'''

_ERRORS = '''"""google.colab.errors, emulator copy: the base of Colab's own errors."""


class Error(Exception):
    """Base class for Colab's errors."""
'''

_USERDATA = '''"""google.colab.userdata, emulator copy: get() asks the frontend for a secret."""

import re
import threading

from google.colab import _message, errors


class NotebookAccessError(Exception):
    """The frontend holds the secret but did not grant this notebook access to it."""

    def __init__(self, key):
        super().__init__("this notebook was not granted the secret %s" % key)


class SecretNotFoundError(errors.Error):
    """The frontend holds no secret of that name."""

    def __init__(self, key):
        super().__init__("no secret named %s exists" % key)


class TimeoutException(errors.Error):
    """No frontend answered within 10 s."""

    def __init__(self, key):
        super().__init__(
            "no answer to the request for secret %s within 10 s (only a frontend that holds "
            "secrets answers it)" % key
        )


_lock = threading.Lock()  # one request at a time: replies are read from one stdin socket


def get(key):
    if not key or not isinstance(key, str):
        raise ValueError("a secret name must be a non-empty string")
    if re.search(r"\\s", key):
        raise ValueError("a secret name has no whitespace in it")
    with _lock:
        try:
            reply = _message.blocking_request("GetSecret", {"key": key}, timeout_sec=10)
        except TimeoutError:
            reply = None
    if not reply:
        raise TimeoutException(key)
    if not reply.get("exists", False):
        raise SecretNotFoundError(key)
    if not reply.get("access", False):
        raise NotebookAccessError(key)
    return reply.get("payload", "")
'''

_COLAB_INIT = (
    '"""google.colab, emulator copy (drive, userdata and what they need)."""\n\n'
    '__version__ = "0.0.emulator"\n'
)
_GOOGLE_INIT = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"


def write_kernel_site(directory: str) -> str:
    """Write the package under ``directory/site`` and return that path (for PYTHONPATH)."""
    site = Path(directory) / "site"
    colab = site / "google" / "colab"
    colab.mkdir(parents=True, exist_ok=True)
    (site / "google" / "__init__.py").write_text(_GOOGLE_INIT)
    (colab / "__init__.py").write_text(_COLAB_INIT)
    (colab / "_message.py").write_text(_MESSAGE)
    (colab / "drive.py").write_text(_DRIVE)
    (colab / "errors.py").write_text(_ERRORS)
    (colab / "userdata.py").write_text(_USERDATA)
    return str(site)
