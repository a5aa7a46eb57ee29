"""A real Jupyter server on 127.0.0.1 for tests: ``with JupyterServer() as server: server.url``.

``nodelay=True`` (the default) makes its kernel WebSockets set TCP_NODELAY, as a well-configured
server does; ``nodelay=False`` is a stock jupyter_server, whose kernel sockets leave Nagle's
algorithm on.

The token never goes on the server's command line, which every local user can read in
``/proc/<pid>/cmdline``, nor into its environment, which its kernels inherit: it goes in a file of
mode 0600, in a directory of mode 0700, that ``JUPYTER_TOKEN_FILE`` names and that is removed as
soon as the server has read it.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import Any

import httpx
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection


class NoDelayConnection(ZMQChannelsWebsocketConnection):
    """A kernel WebSocket connection that turns Nagle's algorithm off on its socket."""

    def connect(self) -> Any:
        self.websocket_handler.set_nodelay(True)
        return super().connect()


#: How a server is started: jupyter_server's own entry point, once ``rfc3987_syntax`` has been
#: made unimportable. jsonschema (through jupyter_events) imports that package, where installed,
#: for its ``iri`` and ``iri-reference`` format checks, which no Jupyter schema uses; importing
#: it compiles dozens of Lark parsers, 2-3 s of CPU for every server started.
_BOOT = (
    "import sys; sys.modules.setdefault('rfc3987_syntax', None); "
    "from jupyter_server import serverapp; serverapp.launch_new_instance()"
)


class _PortTaken(Exception):
    """The port chosen for the server was taken before it could bind it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class JupyterServer:
    """A jupyter_server subprocess bound to 127.0.0.1 with a random token (never on its argv)."""

    #: How long ``stop()`` lets the server shut its kernels down before killing it.
    stop_timeout = 15.0

    def __init__(
        self,
        *,
        nodelay: bool = True,
        root_dir: str | None = None,
        python: str | None = None,
        extra_args: tuple[str, ...] = (),
        start_timeout: float = 60.0,
    ) -> None:
        self.nodelay = nodelay
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="colabremote-jupyter-")
        self.root_dir = root_dir or self._tmp.name
        self.python = python or sys.executable
        self.extra_args = extra_args
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log = open(os.path.join(self._tmp.name, "server.log"), "wb")  # noqa: SIM115

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs, else None."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def _write_token_file(self) -> str:
        """A file holding only the token: mode 0600, in a fresh directory of mode 0700 outside
        the server's root (so the contents API cannot list it)."""
        directory = tempfile.mkdtemp(prefix="colabremote-jupyter-token-")
        path = os.path.join(directory, "token")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.token)  # read as is: no newline
        return path

    #: How many ports to try: a free port can be taken by another process before the server
    #: binds it (many servers start at once in a test run).
    PORT_ATTEMPTS = 5

    def start(self) -> JupyterServer:
        token_file = self._write_token_file()
        try:
            attempt = 1
            while True:
                try:
                    return self._start(token_file)
                except _PortTaken:
                    if attempt == self.PORT_ATTEMPTS:
                        raise RuntimeError(
                            f"jupyter_server found no free port in {attempt} tries"
                        ) from None
                attempt += 1
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
        except BaseException:
            self.stop()  # nothing half-started is left: no process, no open log, no temp dir
            raise
        finally:
            # Read once at start-up; nothing needs it afterwards.
            os.unlink(token_file)
            os.rmdir(os.path.dirname(token_file))

    def _start(self, token_file: str) -> JupyterServer:
        args = [
            self.python,
            "-c",
            _BOOT,
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.log_level=WARN",
            *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
            *self.extra_args,
        ]
        if self.nodelay:
            args.append(
                "--ServerApp.kernel_websocket_connection_class="
                "colabremote.testing._jupyter.NoDelayConnection"
            )
        env = dict(os.environ, JUPYTER_PLATFORM_DIRS="1", JUPYTER_TOKEN_FILE=token_file)
        env.pop("JUPYTER_TOKEN", None)  # it would win over the file
        # ipykernel leaves file-descriptor output (subprocesses, C libraries) uncaptured when it
        # sees this variable (pytest's own capture); kernels here capture it, as Colab's do.
        env.pop("PYTEST_CURRENT_TEST", None)
        env["JUPYTER_RUNTIME_DIR"] = os.path.join(self._tmp.name, "runtime")
        # Its own session and no terminal stdin: a Ctrl-C typed at the user's terminal (a
        # REPL's) reaches only the user's process, and the server never prompts on that
        # terminal ("Shut down this Jupyter server (y/[n])?") nor reads the user's next line.
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=env,
            cwd=self.root_dir,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        headers = {"Authorization": f"token {self.token}"}
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = self.log_text()
                if f"port {self.port} is not available" in log:
                    self._process = None
                    raise _PortTaken(self.port)
                raise RuntimeError(f"jupyter_server exited:\n{log}")
            try:
                if httpx.get(f"{self.url}/api/status", headers=headers, timeout=2).is_success:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"jupyter_server did not start in {self.start_timeout} s")

    def log_text(self) -> str:
        """The server's output so far, with its token redacted."""
        self._log.flush()
        with open(self._log.name, "rb") as f:
            return f.read().decode(errors="replace").replace(self.token, "<redacted>")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            self._log.flush()
            stopping_at = os.path.getsize(self._log.name)
            process.terminate()
            deadline = time.monotonic() + self.stop_timeout
            while process.poll() is None:
                if time.monotonic() > deadline or self._stop_failed(stopping_at):
                    process.kill()  # its kernels notice their parent is gone, and exit
                    break
                time.sleep(0.05)
            process.wait()
        self._log.close()
        self._tmp.cleanup()

    def _stop_failed(self, since: int) -> bool:
        """Whether the server's own stop raised, after which it never exits: jupyter_client
        fails to shut down a kernel it restarted after a crash (its ``ready`` future is never
        set, and asking for its exception raises InvalidStateError)."""
        with open(self._log.name, "rb") as f:
            f.seek(since)
            text = f.read()
        return b"ServerApp._stop()" in text and b"exception=" in text

    def __enter__(self) -> JupyterServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<JupyterServer {self.url} nodelay={self.nodelay}>"
