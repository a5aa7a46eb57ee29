"""Where a runtime's files live: ``/content``, as on Colab, where this machine allows it.

Colab code opens absolute paths (``/content/data.csv``). A runtime whose root is ``/content``
runs that code unchanged, so the emulator makes ``/content`` and uses it when it can. It creates
the directory itself, never takes one that was there before (it may be the user's), holds it
with ``flock`` so one runtime on the machine has it at a time, and removes it when the runtime
is released, as Colab wipes a released runtime's disk. Every other runtime gets a temp folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil

from ...exceptions import ConfigurationError

LOG = logging.getLogger("colabremote.emulator")

COLAB_CONTENT = "/content"
#: The default of ``ColabEmulator(content_root=...)``; the test suite sets it to "temp".
CONTENT_ROOT_ENV = "COLABREMOTE_EMULATOR_CONTENT_ROOT"


def content_root_setting(value: str | os.PathLike[str] | None) -> str:
    """The checked ``content_root``: "auto", "temp" or an absolute path; None reads the
    environment variable (default "auto")."""
    source = "content_root"
    if value is None:
        value = os.environ.get(CONTENT_ROOT_ENV) or "auto"
        source = CONTENT_ROOT_ENV
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(
            f'{source} must be "auto", "temp" or an absolute path (str or os.PathLike), not '
            f"{type(value).__name__}"
        )
    text = os.fspath(value)
    if text in ("auto", "temp"):
        return text
    if not os.path.isabs(text):
        raise ConfigurationError(
            f'{source} is {text!r}: give "auto" (/content where it can be made), "temp" (a '
            "temp folder per runtime) or an absolute path"
        )
    return os.path.normpath(text)


class HeldRoot:
    """A directory this emulator created for one runtime, locked until :meth:`remove`."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd = fd

    def remove(self) -> None:
        """Delete the directory and what the runtime put in it, then let others have it."""
        try:
            shutil.rmtree(self.path)
        except OSError as exc:
            LOG.warning("could not remove the runtime folder %s: %s", self.path, exc)
        finally:
            os.close(self._fd)  # closing drops the lock


def claim(path: str) -> HeldRoot | str:
    """Create ``path`` and hold it, or say why it cannot be this runtime's root."""
    if os.name != "posix":
        return "this is not a Linux or macOS machine"
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return _why_taken(path)
    except OSError as exc:
        return f"{path} cannot be created here ({exc.strerror})"
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    # Blocking: another emulator that found it existing holds it for an instant, to ask why.
    fcntl.flock(fd, fcntl.LOCK_EX)
    return HeldRoot(path, fd)


def _why_taken(path: str) -> str:
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return f"{path} exists and is not a directory this emulator may use"
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return f"another runtime of an emulator on this machine has {path}"
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return (
        f"{path} was there already, and the emulator never touches a folder it did not make "
        "(if an emulator that was killed left it, delete it)"
    )


def explain_fallback(endpoint: str, wanted: str, reason: str, root: str) -> None:
    """One INFO line: this runtime's files are in a temp folder, and why."""
    LOG.info(
        "runtime %s keeps its files in %s, not %s, because %s; remote code should use relative "
        "paths (its working directory is the runtime's content root)",
        endpoint,
        root,
        wanted,
        reason,
    )
