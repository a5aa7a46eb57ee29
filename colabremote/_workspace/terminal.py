"""An interactive terminal on the runtime: a shell on a pseudo-terminal there, keys in, output out.

Three wires carry it, one per kind of backend (:class:`Channel`):

- Colab (and the emulator): the runtime's ``/colab/tty`` WebSocket, JSON text frames
  ``{"data": keys}`` and ``{"cols": N, "rows": M}`` up, ``{"data": output}`` down;
- Jupyter servers: jupyter_server_terminals' ``/api/terminals`` (terminado's frames);
- local: a shell on a pseudo-terminal of this machine.

None of them says how the shell ended, so :class:`TerminalCore` asks the shell itself: when
it opens, it types one setup line that sets an ``EXIT`` trap printing a marker with ``$?`` and a
random nonce, and prints a "ready" marker. Output up to the ready marker (the echoed setup line)
is dropped, and the exit marker is cut out of the output and becomes :attr:`exit_status`.
"""

from __future__ import annotations

import abc
import asyncio
import codecs
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from .._kernel.websocket import open_websocket
from ..exceptions import ConfigurationError, ConnectionLost, RemoteTimeout

if TYPE_CHECKING:
    from .._loop import LoopThread
    from .._session.core import _Core

T = TypeVar("T")

#: What the shell prints when it is ready (``<tag>_<nonce>``) and when it exits
#: (``<tag>_<nonce>:<status>``). The setup line spells them with a space instead of the ``_``,
#: so its echo never matches.
READY_TAG = "__colabremote_ready"
EXIT_TAG = "__colabremote_exit"
#: How long :meth:`TerminalCore.aclose` waits for the shell to end after ``exit``.
CLOSE_GRACE = 5.0
#: How long closing waits before typing ``exit`` again.
EXIT_RETRY = 0.5
#: How long opening waits for the shell to print its ready marker.
READY_TIMEOUT = 60.0
_SIZE_LIMIT = 10_000


def setup_line(nonce: str) -> str:
    """The line typed into the remote shell first (POSIX shells: sh, bash, zsh). The leading
    space keeps it out of bash's history where ``HISTCONTROL`` ignores such lines (Colab's)."""
    return (
        f" trap 'printf \"%s_%s:%d\\n\" {EXIT_TAG} {nonce} $?' EXIT;"
        f" printf '%s_%s\\n' {READY_TAG} {nonce}\n"
    )


def colab_tty_url(runtime_url: str) -> str:
    """``/colab/tty`` at a runtime proxy's origin, as Colab's clients open it: the scheme made
    ``ws``/``wss``, any path and query of the runtime URL dropped."""
    parts = urlsplit(runtime_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, "/colab/tty", "", ""))


def check_size(cols: object, rows: object) -> tuple[int, int]:
    """``(cols, rows)`` if both are sensible terminal dimensions, else ConfigurationError."""
    for name, value in (("cols", cols), ("rows", rows)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < _SIZE_LIMIT:
            raise ConfigurationError(
                f"{name}={value!r} is not a terminal size; pass a whole number of characters "
                f"between 1 and {_SIZE_LIMIT - 1}, such as resize(120, 40)"
            )
    assert isinstance(cols, int) and isinstance(rows, int)
    return cols, rows


def terminal_size_option(cols: object, rows: object) -> tuple[int, int] | None:
    """``terminal(cols=, rows=)``: both or neither."""
    if cols is None and rows is None:
        return None
    if cols is None or rows is None:
        raise ConfigurationError(
            "pass both cols= and rows= (such as terminal(cols=120, rows=40)), or neither"
        )
    return check_size(cols, rows)


class OutputFilter:
    """Turns the shell's raw output into what the user sees: nothing until the ready marker,
    then everything except the exit marker, whose status it keeps. Text that might be the start
    of a marker is held back until the next chunk says which it is."""

    def __init__(self, nonce: str) -> None:
        self._ready_mark = f"{READY_TAG}_{nonce}"
        self._exit = re.compile(rf"{EXIT_TAG}_{nonce}:(\d+)\r?\n")
        self._exit_end = re.compile(rf"{EXIT_TAG}_{nonce}:(\d+)\r?$")
        self._exit_start = f"{EXIT_TAG}_{nonce}:"
        self.ready = False
        self._line_end_next = False
        self.exit_status: int | None = None
        self._pending = ""

    def feed(self, text: str) -> str:
        """The part of ``text`` (after what was held back) that can be shown now."""
        data = self._pending + text
        self._pending = ""
        if not self.ready:
            at = data.find(self._ready_mark)
            if at < 0:
                self._pending = data[-len(self._ready_mark) :]
                return ""
            self.ready = True
            self._line_end_next = True
            data = data[at + len(self._ready_mark) :]
        if self._line_end_next:  # the ready marker's own line end
            if data in ("", "\r"):
                self._pending = data
                return ""
            self._line_end_next = False
            data = data[2:] if data.startswith("\r\n") else data[data.startswith("\n") :]
        found = self._exit.search(data)
        if found is not None:
            self.exit_status = int(found.group(1))
            data = data[: found.start()] + data[found.end() :]
        keep = self._held_back(data)
        self._pending = data[len(data) - keep :]
        return data[: len(data) - keep]

    def _held_back(self, data: str) -> int:
        """How many characters at the end of ``data`` could begin an exit marker."""
        tail = data[-(len(self._exit_start) + 12) :]
        for start in range(len(tail)):
            piece = tail[start:]
            if self._exit_start.startswith(piece) or (
                piece.startswith(self._exit_start)
                and _PARTIAL_STATUS.fullmatch(piece[len(self._exit_start) :])
            ):
                return len(tail) - start
        return 0

    def flush(self) -> str:
        """What was held back, at the end of the output (an exit marker without its line end
        included)."""
        data, self._pending = self._pending, ""
        if not self.ready:
            return ""
        found = self._exit_end.search(data)
        if found is not None:
            self.exit_status = int(found.group(1))
            data = data[: found.start()]
        return data


#: What may follow an exit marker's prefix before its line end has arrived.
_PARTIAL_STATUS = re.compile(r"\d*\r?")


class Channel(abc.ABC):
    """One terminal's wire: keys and sizes go up, output comes down."""

    @abc.abstractmethod
    async def send(self, keys: str) -> None: ...

    @abc.abstractmethod
    async def resize(self, cols: int, rows: int) -> None: ...

    @abc.abstractmethod
    async def receive(self) -> str | None:
        """The next piece of output, or None once the terminal has ended."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Hang up; the shell on the other side ends."""


class _JsonFrames(Channel):
    """A terminal WebSocket that speaks JSON text frames; subclasses say which frames are
    output (:meth:`_output`) and how keys and sizes are framed."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def _send(self, frame: object) -> None:
        try:
            await self._ws.send(json.dumps(frame))
        except ConnectionClosed as exc:
            raise ConnectionLost(f"the terminal WebSocket closed: {exc}") from None

    @abc.abstractmethod
    def _output(self, message: Any) -> tuple[bool, str | None]:
        """(done, text): ``text`` is output when not None; ``done`` ends the terminal."""

    async def receive(self) -> str | None:
        while True:
            try:
                frame = await self._ws.recv()
            except ConnectionClosed:
                return None
            try:
                message = json.loads(frame)
            except ValueError:
                continue  # as Colab's own client: anything but JSON is dropped
            done, text = self._output(message)
            if done or text is not None:
                return text

    async def close(self) -> None:
        await self._ws.close()


class ColabTtyChannel(_JsonFrames):
    """Colab's ``/colab/tty``: JSON text frames both ways."""

    @classmethod
    async def open(cls, url: str, headers: Mapping[str, str]) -> ColabTtyChannel:
        return cls(await open_websocket(url, headers=headers, what="the terminal WebSocket"))

    async def send(self, keys: str) -> None:
        await self._send({"data": keys})

    async def resize(self, cols: int, rows: int) -> None:
        await self._send({"cols": cols, "rows": rows})

    def _output(self, message: Any) -> tuple[bool, str | None]:
        if isinstance(message, dict) and isinstance(message.get("data"), str):
            return False, str(message["data"])
        return False, None


class TerminadoChannel(_JsonFrames):
    """A Jupyter server's terminal (jupyter_server_terminals, terminado's frames):
    ``["stdin", keys]`` and ``["set_size", rows, cols]`` up, ``["stdout", text]`` down,
    ``["disconnect", ...]`` at the end. ``delete`` removes the terminal from the server."""

    def __init__(
        self, ws: ClientConnection, delete: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        super().__init__(ws)
        self._delete = delete

    async def send(self, keys: str) -> None:
        await self._send(["stdin", keys])

    async def resize(self, cols: int, rows: int) -> None:
        await self._send(["set_size", rows, cols])

    def _output(self, message: Any) -> tuple[bool, str | None]:
        if not isinstance(message, list) or not message:
            return False, None
        if message[0] == "stdout" and len(message) > 1 and isinstance(message[1], str):
            return False, message[1]
        return message[0] == "disconnect", None

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self._delete()


class PtyShell:
    """A shell on a new pseudo-terminal of this machine, in a session of its own (the terminal
    is its controlling one, so Ctrl-C and window sizes reach its foreground job). Used by the
    local backend and by the emulator's ``/colab/tty``."""

    def __init__(self, cwd: str | None, env: Mapping[str, str]) -> None:
        import fcntl  # noqa: F401 - POSIX only: fail here, not halfway
        import termios  # noqa: F401

        shell = _shell()
        self.master, follower = os.openpty()
        try:
            self.process = subprocess.Popen(  # noqa: S603 - the user's own shell
                [shell, "-i"],
                stdin=follower,
                stdout=follower,
                stderr=follower,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                preexec_fn=_take_terminal,  # noqa: PLW1509 - an ioctl, no locks taken
                close_fds=True,
            )
        except BaseException:
            os.close(self.master)
            raise
        finally:
            os.close(follower)
        os.set_blocking(self.master, False)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._unsent = b""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def start(self, on_output: Callable[[str | None], None]) -> None:
        """Call ``on_output`` on the running loop with each piece of output, then None once
        the shell has exited (even when a job it left behind still holds the terminal)."""
        loop = self._loop = asyncio.get_running_loop()
        ended = False

        def drain() -> bool:
            """Pass on what the terminal holds; whether it has hung up."""
            while True:
                try:
                    data = os.read(self.master, 65536)
                except BlockingIOError:
                    return False
                except OSError:
                    data = b""  # EIO: everything that had the terminal open has let go
                if not data:
                    return True
                text = self._decoder.decode(data)
                if text:
                    on_output(text)

        def end() -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            if not self.closed:
                drain()  # what the shell wrote before it exited, its exit marker included
                loop.remove_reader(self.master)
            tail = self._decoder.decode(b"", final=True)
            if tail:
                on_output(tail)
            on_output(None)

        def readable() -> None:
            if drain():
                end()

        def wait_for_exit() -> None:
            self.process.wait()
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody listens
                loop.call_soon_threadsafe(end)

        loop.add_reader(self.master, readable)
        threading.Thread(target=wait_for_exit, name="colabremote-pty", daemon=True).start()

    def write(self, data: bytes) -> None:
        """Type ``data``; what the terminal cannot take at once goes when it can."""
        if self.closed:
            return
        if self._unsent:
            self._unsent += data
            return
        self._unsent = data
        self._flush()

    def _flush(self) -> None:
        while self._unsent:
            try:
                written = os.write(self.master, self._unsent)
            except BlockingIOError:
                break
            except OSError:
                self._unsent = b""
                return
            self._unsent = self._unsent[written:]
        if self._loop is None:
            return
        if self._unsent:
            self._loop.add_writer(self.master, self._flush)
        else:
            self._loop.remove_writer(self.master)

    def resize(self, cols: int, rows: int) -> None:
        """Set the window size; the shell's foreground job gets SIGWINCH."""
        import fcntl
        import termios

        if not self.closed:
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def kill(self) -> None:
        """End the shell and every process in its session, and let go of the terminal."""
        if self.closed:
            return
        self.closed = True
        kill_session(self.process.pid)
        if self._loop is not None:
            self._loop.remove_reader(self.master)
            self._loop.remove_writer(self.master)
        with contextlib.suppress(OSError):
            os.close(self.master)

    def reap(self) -> int:
        """Wait for the shell's exit status (after :meth:`kill`, at once)."""
        return self.process.wait()


def _shell() -> str:
    """``/bin/bash`` where there is one, else ``/bin/sh``."""
    return shutil.which("bash", path="/bin:/usr/bin") or "/bin/sh"


def _take_terminal() -> None:
    """In the child, after ``setsid``: make its stdin (the new terminal) its controlling one."""
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def kill_session(sid: int) -> None:
    """SIGKILL to every process in session ``sid`` (on Linux, found through ``/proc``; elsewhere
    the session leader's process group), including jobs the shell put in groups of their own."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signal.SIGKILL)
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return
    for pid in pids:
        with contextlib.suppress(OSError):
            if os.getsid(pid) == sid:
                os.kill(pid, signal.SIGKILL)


class LocalPtyChannel(Channel):
    """A shell on a pseudo-terminal of this machine (the local backend)."""

    def __init__(self, cwd: str | None) -> None:
        env = dict(os.environ)
        env.setdefault("TERM", "xterm-256color")
        self.shell = PtyShell(cwd, env)
        self._output: asyncio.Queue[str | None] = asyncio.Queue()
        self.shell.start(self._output.put_nowait)

    async def send(self, keys: str) -> None:
        self.shell.write(keys.encode())

    async def resize(self, cols: int, rows: int) -> None:
        self.shell.resize(cols, rows)

    async def receive(self) -> str | None:
        if self.shell.closed and self._output.empty():
            return None
        return await self._output.get()

    async def close(self) -> None:
        self.shell.kill()
        await asyncio.to_thread(self.shell.reap)
        self._output.put_nowait(None)


class TerminalCore:
    """One open terminal, on colabremote's private event loop: the output read as it arrives,
    the markers handled. :class:`Terminal` and :class:`AsyncTerminal` are its public faces."""

    def __init__(self, channel: Channel, nonce: str) -> None:
        self._channel = channel
        self._filter = OutputFilter(nonce)
        self._buffer = ""
        self._arrived = asyncio.Event()
        self._ended = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read_forever())
        self._closed = False
        #: Receives each piece of shown output as it arrives (``interact`` writes it out).
        self.on_output: Callable[[str], None] | None = None

    @classmethod
    async def open(cls, channel: Channel, size: tuple[int, int] | None = None) -> TerminalCore:
        """Start using ``channel``: set the size, set up the exit marker, wait until ready."""
        nonce = secrets.token_hex(6)
        terminal = cls(channel, nonce)
        try:
            if size is not None:
                await channel.resize(*size)
            await channel.send(setup_line(nonce))
            await terminal._wait_ready()
        except BaseException:
            await terminal.aclose(hang_up_only=True)
            raise
        return terminal

    async def _wait_ready(self) -> None:
        try:
            await asyncio.wait_for(self._until(lambda: self._filter.ready), READY_TIMEOUT)
        except asyncio.TimeoutError:
            raise ConnectionLost(
                f"the remote shell did not answer within {READY_TIMEOUT:g} s; is its shell a "
                "POSIX one (sh, bash, zsh)? Try again, or open the terminal in a notebook"
            ) from None
        if not self._filter.ready:
            raise ConnectionLost("the terminal closed before the remote shell started")

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition() and not self._ended.is_set():
            self._arrived.clear()
            await self._arrived.wait()

    async def _read_forever(self) -> None:
        try:
            while True:
                text = await self._channel.receive()
                if text is None:
                    break
                self._show(self._filter.feed(text))
        except ConnectionLost:
            pass
        finally:
            self._show(self._filter.flush())
            self._ended.set()
            self._arrived.set()

    def _show(self, text: str) -> None:
        if not text:
            return
        if self.on_output is not None:
            self.on_output(text)
        else:
            self._buffer += text
        self._arrived.set()

    @property
    def exit_status(self) -> int | None:
        """The remote shell's exit status, once it has exited (None before, or if the
        connection ended without the shell saying)."""
        return self._filter.exit_status

    @property
    def ended(self) -> bool:
        """Whether the terminal has ended (the shell exited, or the connection closed)."""
        return self._ended.is_set()

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionLost("this terminal is closed; open a new one with s.terminal()")

    async def send(self, keys: str) -> None:
        """Type ``keys`` (text; ``"\\r"`` or ``"\\n"`` is Enter, ``"\\x03"`` Ctrl-C)."""
        if not isinstance(keys, str):
            raise ConfigurationError(
                f"send() takes text, not {type(keys).__name__}; pass str, such as 'ls\\n'"
            )
        self._check_open()
        await self._channel.send(keys)

    async def resize(self, cols: int, rows: int) -> None:
        """Set the remote window size (the shell's foreground program gets SIGWINCH)."""
        size = check_size(cols, rows)
        self._check_open()
        await self._channel.resize(*size)

    async def read(self, timeout: float | None = None) -> str:
        """The output that has arrived, waiting up to ``timeout`` seconds for some when there is
        none yet; ``""`` when nothing came (or the terminal has ended)."""
        if not self._buffer and not self._ended.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._until(lambda: bool(self._buffer)), timeout)
        text, self._buffer = self._buffer, ""
        return text

    async def expect(self, pattern: str | re.Pattern[str], timeout: float = 30.0) -> str:
        """Read until the output matches ``pattern`` (a regular expression); returns the output
        up to the end of the match, and keeps the rest for the next read. RemoteTimeout when
        the output does not match within ``timeout`` seconds, ConnectionLost when the terminal
        ends first."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        match: re.Match[str] | None = None

        def found() -> bool:
            nonlocal match
            match = regex.search(self._buffer)
            return match is not None

        try:
            await asyncio.wait_for(self._until(found), timeout)
        except asyncio.TimeoutError:
            raise RemoteTimeout(
                f"the terminal's output did not match {regex.pattern!r} within {timeout:g} s; "
                f"its last output: {self._buffer[-200:]!r}"
            ) from None
        if match is None:
            raise ConnectionLost(
                f"the terminal ended before its output matched {regex.pattern!r}; its last "
                f"output: {self._buffer[-200:]!r}"
            )
        end = match.end()
        text, self._buffer = self._buffer[:end], self._buffer[end:]
        return text

    async def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the shell has exited (typed ``exit``, for example); its exit status."""
        try:
            await asyncio.wait_for(self._ended.wait(), timeout)
        except asyncio.TimeoutError:
            raise RemoteTimeout(f"the remote shell was still running after {timeout:g} s") from None
        return self.exit_status

    async def aclose(self, *, hang_up_only: bool = False) -> None:
        """End the shell: type ``exit`` (what Colab's tmux-wrapped shell needs), wait a little
        for it to go, then hang up."""
        if self._closed:
            return
        self._closed = True
        try:
            if not hang_up_only:
                await self._type_exit()
        finally:
            try:
                await self._channel.close()
            finally:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader

    async def _type_exit(self) -> None:
        """Ctrl-C then ``exit``, and ``exit`` again every EXIT_RETRY seconds until the shell
        has gone or CLOSE_GRACE is up: readline can swallow the keys typed right after a
        Ctrl-C (bash then runs ``xit``), which would leave the shell running."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_GRACE
        keys = "\x03exit\n"
        while not self._ended.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(ConnectionLost):
                await self._channel.send(keys)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ended.wait(), min(EXIT_RETRY, remaining))
            keys = "exit\n"

    async def interact(self, stdin: int, stdout: int) -> int | None:
        """Connect file descriptors ``stdin`` and ``stdout`` to the terminal until the shell
        exits; the exit status. At the end of a stdin that is not a terminal, type ``exit``."""
        loop = asyncio.get_running_loop()

        def write_out(text: str) -> None:
            data = text.encode()
            while data:
                try:
                    data = data[os.write(stdout, data) :]
                except BlockingIOError:
                    continue

        pending, self._buffer = self._buffer, ""
        if pending:
            write_out(pending)
        self.on_output = write_out
        typed: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(stdin, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(stdin)
            typed.put_nowait(data)

        async def forward() -> None:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            while True:
                data = await typed.get()
                if not data:
                    await self._channel.send("exit\n")  # as Colab's CLI does at piped EOF
                    return
                text = decoder.decode(data)
                if text:
                    await self._channel.send(text)

        try:
            loop.add_reader(stdin, readable)
        except PermissionError:  # a regular file (`< keys.txt`): never blocks, cannot be watched
            while data := os.read(stdin, 65536):
                typed.put_nowait(data)
            typed.put_nowait(b"")
        sender = loop.create_task(forward())
        try:
            await self._ended.wait()
        finally:
            loop.remove_reader(stdin)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionLost):
                await sender
            self.on_output = None
        return self.exit_status


class AsyncTerminal:
    """A terminal on the runtime, from ``async`` code: ``async with await s.terminal() as t``.

    ``send(keys)`` types (``"\\x03"`` is Ctrl-C), ``resize(cols, rows)`` sets the window,
    ``expect(pattern)`` reads until the output matches, ``read()`` takes what has arrived,
    ``wait()`` waits for the shell to exit. ``exit_status`` is the shell's, once it has exited.
    ``close()`` types ``exit`` and hangs up.
    """

    def __init__(self, terminal: TerminalCore, loop: LoopThread) -> None:
        self._terminal = terminal
        self._loop = loop

    async def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if asyncio.get_running_loop() is self._loop.loop:
            return await coro
        return await asyncio.wrap_future(self._loop.submit(coro))

    @property
    def exit_status(self) -> int | None:
        """The remote shell's exit status once it has exited, else None."""
        return self._terminal.exit_status

    @property
    def ended(self) -> bool:
        return self._terminal.ended

    async def send(self, keys: str) -> None:
        """Type ``keys`` (``"\\n"`` is Enter, ``"\\x03"`` Ctrl-C)."""
        await self._run(self._terminal.send(keys))

    async def resize(self, cols: int, rows: int) -> None:
        """Set the remote window size."""
        await self._run(self._terminal.resize(cols, rows))

    async def read(self, timeout: float | None = None) -> str:
        """The output that has arrived, waiting up to ``timeout`` seconds when there is none."""
        return await self._run(self._terminal.read(timeout))

    async def expect(self, pattern: str | re.Pattern[str], timeout: float = 30.0) -> str:
        """Read until the output matches ``pattern``; the output up to the end of the match."""
        return await self._run(self._terminal.expect(pattern, timeout))

    async def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the remote shell has exited; its exit status."""
        return await self._run(self._terminal.wait(timeout))

    async def close(self) -> None:
        """Type ``exit``, wait a little for the shell to end, and hang up."""
        await self._run(self._terminal.aclose())

    async def __aenter__(self) -> AsyncTerminal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class Terminal:
    """A terminal on the runtime, from ordinary (blocking) code: ``with s.terminal() as t``.

    The blocking twin of :class:`AsyncTerminal` (same methods), plus :meth:`interact`, which
    hands this process's own terminal to the remote shell.
    """

    def __init__(self, terminal: TerminalCore, loop: LoopThread) -> None:
        self._terminal = terminal
        self._loop = loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    @property
    def exit_status(self) -> int | None:
        """The remote shell's exit status once it has exited, else None."""
        return self._terminal.exit_status

    @property
    def ended(self) -> bool:
        return self._terminal.ended

    def send(self, keys: str) -> None:
        """Type ``keys`` (``"\\n"`` is Enter, ``"\\x03"`` Ctrl-C)."""
        self._run(self._terminal.send(keys))

    def resize(self, cols: int, rows: int) -> None:
        """Set the remote window size."""
        self._run(self._terminal.resize(cols, rows))

    def read(self, timeout: float | None = None) -> str:
        """The output that has arrived, waiting up to ``timeout`` seconds when there is none."""
        return self._run(self._terminal.read(timeout))

    def expect(self, pattern: str | re.Pattern[str], timeout: float = 30.0) -> str:
        """Read until the output matches ``pattern``; the output up to the end of the match."""
        return self._run(self._terminal.expect(pattern, timeout))

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the remote shell has exited; its exit status."""
        return self._run(self._terminal.wait(timeout))

    def close(self) -> None:
        """Type ``exit``, wait a little for the shell to end, and hang up."""
        self._run(self._terminal.aclose())

    def __enter__(self) -> Terminal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def interact(self) -> int:
        """Hand this terminal (stdin, stdout) to the remote shell until it exits, and return its
        exit status. On a terminal: raw mode (restored on any exit), the window size now and on
        every resize, Ctrl-C passed through. Piped stdin: at its end, ``exit`` is typed."""
        stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
        sys.stdout.flush()
        with _raw_mode(stdin), _window_sizes(stdin, self._resize_soon):
            try:
                status = self._run(self._terminal.interact(stdin, stdout))
            finally:
                self.close()
        if status is None:
            raise ConnectionLost(
                "the terminal connection ended before the remote shell said how it exited"
            )
        return status

    def _resize_soon(self, size: tuple[int, int]) -> None:
        """Send a new window size from a signal handler (any thread), without waiting."""
        self._loop.submit(self._resize_quietly(size))

    async def _resize_quietly(self, size: tuple[int, int]) -> None:
        with contextlib.suppress(ConnectionLost, ConfigurationError):
            await self._terminal.resize(*size)


def terminal_size(fd: int) -> tuple[int, int] | None:
    """``(cols, rows)`` of the terminal on ``fd``, or None when it is not a terminal."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return (size.columns, size.lines) if size.columns and size.lines else None


@contextlib.contextmanager
def _raw_mode(fd: int) -> Any:
    """Raw mode on terminal ``fd`` while inside (every key, Ctrl-C included, goes through as a
    character); the settings come back however the block ends. Not a terminal: nothing."""
    try:
        import termios
        import tty
    except ImportError:  # not POSIX: the keys go through as the console gives them
        yield
        return
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


@contextlib.contextmanager
def _window_sizes(fd: int, send: Callable[[tuple[int, int]], None]) -> Any:
    """Send the window size of terminal ``fd`` now and on every SIGWINCH (main thread only)."""
    size = terminal_size(fd)
    if size is not None:
        send(size)
    if size is None or not hasattr(signal, "SIGWINCH"):
        yield
        return
    try:
        previous = signal.signal(signal.SIGWINCH, lambda _sig, _frame: _resized(fd, send))
    except ValueError:  # not the main thread: sizes stay as they were at the start
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


def _resized(fd: int, send: Callable[[tuple[int, int]], None]) -> None:
    size = terminal_size(fd)
    if size is not None:
        send(size)


async def open_terminal(core: _Core, size: tuple[int, int] | None) -> TerminalCore:
    """A terminal on the session's runtime (started first, if it was not yet)."""
    await core.ready_client()
    channel = await core.backend.open_terminal()
    return await TerminalCore.open(channel, size)
