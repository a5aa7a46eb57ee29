"""The public session classes.

:class:`AsyncSession` is written once: each method awaits the session's core on colabremote's
private event loop. :class:`Session` derives every method from it with :func:`_blocking`, which
runs the same coroutine on that loop and waits, so the two APIs cannot drift and each docstring
lives in one place.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import os
import types
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, overload

from ._backends.base import Backend
from ._backends.factory import make_backend
from ._detached.public import AsyncRemoteCall, CallStatus, RemoteCall
from ._http import TokenSource
from ._info import RuntimeInfo, SessionInfo
from ._kernel.client import OutputHandler
from ._loop import loop_thread
from ._remote import RemoteDecorator, RemoteFunction, remote
from ._session.core import State, _Core, _silent, outcome_value
from ._session.exit import release_on_sigterm
from ._state import refs as _refs
from ._state.classes import RemoteClass
from ._state.refs import Ref
from ._tracebacks import public, public_async
from ._validation import environment, seconds, secret_names, text
from ._workspace import files as _files
from ._workspace import packages as _packages
from ._workspace import ports as _ports
from ._workspace import shell as _shell
from ._workspace import terminal as _terminal
from ._workspace.files import SyncResult
from ._workspace.packages import package_spec
from ._workspace.secrets import KernelEnvironment
from ._workspace.shell import ShellResult
from ._workspace.terminal import AsyncTerminal, Terminal, terminal_size_option
from .exceptions import ConfigurationError

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

CredentialKind = Literal["drive", "google"]
"""``allow_credentials=``: what code on a Colab runtime may ask this session for: ``"drive"``
(``drive.mount()``) and ``"google"`` (``google.colab.auth.authenticate_user()``)."""

ProgressOption = Callable[[str], None] | bool | None
"""``progress=``: a callable that receives one-line descriptions of slow steps, False for
silence (no transfer bars either), or None/True for the default (stderr on a terminal)."""

ModulePatterns = Iterable[str | os.PathLike[str]]
"""``exclude_modules=``: local modules never sent to the kernel, even when a function reaches
them: file paths or globs (``"secrets.py"``, ``"scratch/*"``, relative to the working directory)
and module names or globs (``"secrets"``, ``"mypkg.*"``)."""

SecretsOption = Iterable[str] | Mapping[str, str]
"""``secrets=``: names of secrets to read when the session opens (from the environment variable
of that name, else the OS keyring, service ``colabremote-secrets``), or a mapping of names to
values. On the kernel each is an environment variable; on Colab ``userdata.get(name)`` too."""


class _SessionBase:
    """What Session and AsyncSession share: construction, ``remote`` and the description."""

    # One signature per backend, so type checkers and IDEs show which options each one takes.
    @overload
    def __init__(
        self,
        backend: Literal["local"] = "local",
        *,
        python: str | os.PathLike[str] | None = None,
        cwd: str | None = None,
        on_output: OutputHandler | None = None,
        progress: ProgressOption = None,
        exclude_modules: ModulePatterns = (),
        trust_kernel: bool = True,
        pip: Iterable[str] | None = None,
        requirements: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        secrets: SecretsOption | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        backend: Literal["jupyter"],
        *,
        url: str,
        token: str | None = None,
        kernel_name: str = "python3",
        kernel_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        on_output: OutputHandler | None = None,
        progress: ProgressOption = None,
        exclude_modules: ModulePatterns = (),
        trust_kernel: bool = True,
        pip: Iterable[str] | None = None,
        requirements: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        secrets: SecretsOption | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        backend: Literal["colab"],
        *,
        gpu: str | None = None,
        tpu: str | None = None,
        high_memory: bool = False,
        runtime_version: str | None = None,
        endpoint: str | None = None,
        release: bool | None = None,
        base_url: str | None = None,
        credentials: TokenSource | None = None,
        use_adc: bool | None = None,
        keep_alive_seconds: float = 60.0,
        assign_timeout: float = 200.0,
        api: Literal["v1", "v1beta"] = "v1",
        allow_credentials: Iterable[CredentialKind] = (),
        on_output: OutputHandler | None = None,
        progress: ProgressOption = None,
        exclude_modules: ModulePatterns = (),
        trust_kernel: bool = True,
        pip: Iterable[str] | None = None,
        requirements: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        secrets: SecretsOption | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        backend: Literal["emulator"],
        *,
        gpu: str | None = None,
        tpu: str | None = None,
        high_memory: bool = False,
        runtime_version: str | None = None,
        api: Literal["v1", "v1beta"] = "v1",
        allow_credentials: Iterable[CredentialKind] = (),
        python: str | os.PathLike[str] | None = None,
        on_output: OutputHandler | None = None,
        progress: ProgressOption = None,
        exclude_modules: ModulePatterns = (),
        trust_kernel: bool = True,
        pip: Iterable[str] | None = None,
        requirements: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        secrets: SecretsOption | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        backend: Backend,
        *,
        on_output: OutputHandler | None = None,
        progress: ProgressOption = None,
        exclude_modules: ModulePatterns = (),
        trust_kernel: bool = True,
        pip: Iterable[str] | None = None,
        requirements: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        secrets: SecretsOption | None = None,
    ) -> None: ...

    @public
    def __init__(
        self,
        backend: str | Backend = "local",
        *,
        on_output: OutputHandler | None = None,
        progress: ProgressOption = None,
        exclude_modules: ModulePatterns = (),
        trust_kernel: bool = True,
        pip: Iterable[str] | None = None,
        requirements: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        secrets: SecretsOption | None = None,
        **options: Any,
    ) -> None:
        if on_output is not None and not callable(on_output):
            raise ConfigurationError(
                f"on_output={on_output!r} is not callable; pass a function (stream, text) -> None"
            )
        if not (progress is None or isinstance(progress, bool) or callable(progress)):
            raise ConfigurationError(
                f"progress={progress!r} is neither True, False nor a function; pass False for "
                "silence or a function that takes one line of text"
            )
        packages = package_spec(pip, requirements)
        names, given = secret_names(secrets)
        kernel_environment = KernelEnvironment(environment(env), names, given)
        progress_fn: Callable[[str], None] | None
        if progress is False:
            progress_fn = _silent
        elif progress is True or progress is None:
            progress_fn = None
        else:
            progress_fn = progress
        self._core = _Core(
            make_backend(backend, options),
            remake_backend=lambda: make_backend(backend, options),
            on_output=on_output,
            progress=progress_fn,
            exclude_modules=exclude_modules,
            trust_kernel=trust_kernel,
            packages=packages,
            environment=kernel_environment,
        )
        self._loop = loop_thread()
        release_on_sigterm(self._core.backend)

    @property
    def backend(self) -> str:
        """The backend's name: ``"local"``, ``"jupyter"``, ``"colab"`` or ``"emulator"``."""
        return self._core.backend.name

    @property
    def closed(self) -> bool:
        return self._core.state is State.CLOSED

    @overload
    def remote(self, fn: type[T], /, *, timeout: float | None = None) -> RemoteClass[T]: ...

    @overload
    def remote(
        self,
        fn: Callable[P, R],
        /,
        *,
        timeout: float | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (),
    ) -> RemoteFunction[P, R]: ...

    @overload
    def remote(
        self,
        fn: None = None,
        /,
        *,
        timeout: float | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (),
    ) -> RemoteDecorator: ...

    @public
    def remote(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        timeout: float | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (),
    ) -> RemoteFunction[..., Any] | RemoteDecorator:
        """Decorate a function so calling it runs it on this session's kernel; on a class,
        its instances live on the kernel (calling it returns a handle). ``retries=``: see
        :func:`colabremote.remote`."""
        if fn is None:
            return remote(timeout=timeout, session=self, retries=retries, retry_on=retry_on)
        return remote(fn, timeout=timeout, session=self, retries=retries, retry_on=retry_on)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.backend!r} state={self._core.state.value!r}>"

    def __reduce__(self) -> Any:
        raise TypeError(
            "a colabremote Session cannot be sent to the kernel; create what the remote "
            "function needs inside it"
        )

    async def _run(self, coro: Coroutine[Any, Any, R]) -> R:
        """Await ``coro`` on the private loop (directly, when already there)."""
        if asyncio.get_running_loop() is self._loop.loop:
            return await coro
        return await asyncio.wrap_future(self._loop.submit(coro))


class AsyncSession(_SessionBase):
    """A kernel to run functions on, from ``async`` code: ``async with AsyncSession() as s``.

    ``AsyncSession(backend="local")`` starts a kernel on this machine (``python=`` picks another
    interpreter); ``backend="jupyter"`` uses any Jupyter server (``url=``, ``token=``);
    ``backend="colab"`` a Colab runtime; ``backend="emulator"`` a Colab emulator on 127.0.0.1.
    The kernel starts on first use or on ``async with``; ``close()`` releases it. Your own
    modules that a called function reaches are sent to the kernel, except ``exclude_modules=``.
    ``trust_kernel=False``, for a kernel others can run code in, rebuilds results only as plain
    data and exceptions only from their type name and text, never arbitrary objects.
    ``pip=`` (requirement strings) and ``requirements=`` (a local requirements file) install
    packages on the runtime at open, before the first call (see :meth:`pip_install`).
    ``env=`` sets environment variables on the kernel, and ``secrets=`` tokens read here at open
    (from the environment, else the OS keyring), kept out of logs and reprs; both are set again
    on a restarted kernel. :class:`Session` is the same, for ordinary (blocking) code.
    """

    @public_async
    async def open(self) -> AsyncSession:
        """Start (or attach to) the kernel now rather than on first use."""
        await self._run(self._core.open())
        return self

    @public_async
    async def close(self) -> None:
        """Release the kernel (and a Colab runtime this session assigned)."""
        if self._core.state is not State.CLOSED:
            await self._run(self._core.close())

    @public_async
    async def __aenter__(self) -> AsyncSession:
        return await self.open()

    @public_async
    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @public_async
    async def exec(self, code: str, *, timeout: float | None = None) -> None:
        """Run code in the kernel as a notebook cell; what it prints appears here as it is
        printed. On IPython kernels (all of Colab's) cell syntax works: ``!cmd``, ``%magic``,
        ``%%bash``."""
        text("code", code, what="Python source code", example="'print(1)'")
        await self._run(self._core.exec(code, seconds("timeout", timeout, example="60")))

    @public_async
    async def eval(self, expression: str, *, timeout: float | None = None) -> Any:
        """The value of a Python expression, evaluated in the kernel's namespace (where
        :meth:`exec` ran), sent back by value like a remote function's result; what the
        expression raises is raised here."""
        text("expression", expression, what="a Python expression", example="'x + 1'")
        limit = seconds("timeout", timeout, example="60")
        outcomes, _seconds = await self._run(
            self._core.run(_EVALUATE, [((expression,), {})], timeout=limit, name="eval")
        )
        return outcome_value(outcomes[0], "eval")

    @public_async
    async def put(self, value: T) -> Ref[T]:
        """Keep ``value`` on the kernel (one upload) and return a :class:`Ref` to it. Pass the
        ref to this session's remote functions, also inside lists and dicts: it arrives as the
        value, with no transfer. The kernel forgets the value when the ref is dropped."""
        origin = _refs.caller_origin("put()")
        return await self._run(_refs.put(self, value, origin))

    @public_async
    async def pip_install(
        self, *specs: str, requirements: str | os.PathLike[str] | None = None
    ) -> None:
        """Install packages on the runtime (``uv pip`` where it has uv, else pip), streaming the
        installer's output; they import in the running kernel at once. The same packages on the
        same runtime install once: again, it is a quick no-op."""
        spec = package_spec(specs, requirements, specs_name="pip_install(*specs)")
        if spec is None:
            raise ConfigurationError(
                "pip_install() was given nothing to install; pass requirements such as "
                "pip_install('peft') or requirements='requirements.txt'"
            )
        await self._run(_packages.install(self._core, spec))

    @public_async
    async def shell(
        self, command: str, *, check: bool = False, timeout: float | None = None
    ) -> ShellResult:
        """Run a shell command on the runtime (``/bin/sh -c``, in the kernel's working
        directory), streaming its output; ``check=True`` raises ShellCommandError on a nonzero
        exit. A timeout or Ctrl-C kills the command and what it started."""
        text("command", command, what="a shell command", example="'nvidia-smi'")
        limit = seconds("timeout", timeout, example="60")
        return await self._run(_shell.run(self._core, command, check=check, timeout=limit))

    def forward(
        self, port: int, *, local_port: int = 0
    ) -> contextlib.AbstractAsyncContextManager[str]:
        """``async with s.forward(6006) as url``: ``url`` (http://127.0.0.1:<local_port>) reaches
        port ``port`` on the runtime, HTTP and WebSockets, until the block ends. Nothing
        listening there is a ConfigurationError at once."""
        _ports.check_port("port", port)
        _ports.check_port("local_port", local_port, zero_ok=True)
        return _forwarding(self, port, local_port)

    @public_async
    async def info(self) -> SessionInfo:
        """Python version, platform, hostname, GPUs and backend of the kernel."""
        return await self._run(self._core.info())

    @public_async
    async def runtime(self) -> RuntimeInfo:
        """The Colab runtime this session holds (Colab and emulator sessions only)."""
        await self._run(self._core.ready_client())
        return self._core.backend.runtime_info()

    @public_async
    async def upload(
        self, local: str | os.PathLike[str], remote: str, *, progress: bool = True
    ) -> None:
        """Copy a local file to the kernel's machine (on Colab, for example to
        ``/content/data.csv``). A progress bar shows on a terminal unless ``progress=False``."""
        await self._run(self._core.transfer("upload", os.fspath(local), remote, progress))

    @public_async
    async def download(
        self,
        remote: str,
        local: str | os.PathLike[str],
        *,
        progress: bool = True,
        delete: bool = False,
        exclude: Iterable[str] | str = (),
    ) -> SyncResult:
        """Copy a file, or mirror a folder, from the kernel's machine here; each local file
        appears whole or not at all. A folder (relative to the kernel's working directory)
        fetches only files whose content differs, skips ``exclude=`` patterns (gitignore
        syntax), and with ``delete=True`` removes local files the remote folder lacks."""
        return await self._run(
            _files.download(
                self._core,
                remote,
                local,
                progress=progress and self._core.show_progress,
                delete=delete,
                exclude=exclude,
            )
        )

    @public_async
    async def sync(
        self,
        local_dir: str | os.PathLike[str],
        remote_dir: str,
        *,
        exclude: Iterable[str] | str = (),
        delete: bool = False,
        progress: bool = True,
        gitignore: bool = True,
    ) -> SyncResult:
        """Make ``remote_dir`` on the runtime (relative to the kernel's working directory) hold
        what the local folder holds, sending only files whose content differs, in chunks,
        verified by sha256 on arrival. ``.gitignore`` files (unless ``gitignore=False``),
        ``exclude=`` patterns and ``.git`` stay out; ``delete=True`` removes remote files the
        local folder lacks (nothing is deleted otherwise)."""
        return await self._run(
            _files.sync(
                self._core,
                local_dir,
                remote_dir,
                exclude=exclude,
                delete=delete,
                gitignore=gitignore,
                progress=progress and self._core.show_progress,
            )
        )

    @public_async
    async def call(self, call_id: str) -> AsyncRemoteCall[Any]:
        """The detached call ``call_id`` (``call.id`` of a ``f.spawn(...)``, from any process) on
        this session's runtime: its logs, status, result and cancel. Reads the runtime's files,
        so it works while the kernel is busy; on Colab, open the session with ``endpoint=``."""
        from ._detached import calls as _calls

        found = await self._run(_calls.attach(self._core, call_id))
        return AsyncRemoteCall(found, self._loop)

    @public_async
    async def calls(self) -> list[CallStatus]:
        """The detached calls on this session's runtime (every process's), oldest first."""
        from ._detached import calls as _calls

        return await self._run(_calls.list_calls(self._core))

    @public_async
    async def terminal(self, *, cols: int | None = None, rows: int | None = None) -> AsyncTerminal:
        """Open an interactive terminal on the runtime (a shell on a pseudo-terminal there; on
        Colab its ``/colab/tty``): ``async with await s.terminal() as t``. ``cols`` and
        ``rows`` set its window size."""
        size = terminal_size_option(cols, rows)
        core = await self._run(_terminal.open_terminal(self._core, size))
        return AsyncTerminal(core, self._loop)


def _evaluate(expression: str) -> Any:
    """Runs in the kernel: ``expression`` evaluated in the namespace the kernel's code runs in
    (IPython's user namespace; ``__main__`` in a plain interpreter)."""
    import __main__

    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    namespace = shell.user_ns if shell is not None else vars(__main__)
    return eval(expression, namespace)  # noqa: S307 - evaluating the caller's code is the point


#: ``_evaluate`` as a function of no importable module, so that it is sent to the kernel by value
#: (the kernel need not have colabremote installed).
_EVALUATE = types.FunctionType(
    _evaluate.__code__, {"__name__": "colabremote-eval", "__builtins__": builtins}, "_evaluate"
)


@contextlib.asynccontextmanager
async def _forwarding(session: _SessionBase, port: int, local_port: int) -> AsyncIterator[str]:
    """A forward's life: started on the private loop, stopped there when the block ends."""
    start = _ports.start_forward(session._core, port, local_port)
    started = await public_async(session._run)(start)
    try:
        yield started if isinstance(started, str) else started.url
    finally:
        if not isinstance(started, str):
            await session._run(started.stop())


def _blocking(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Session, P], R]:
    """The blocking form of an AsyncSession method: the same coroutine, run on the private loop
    while the caller's thread waits (Ctrl-C cancels it, which interrupts remote work)."""

    def call(self: Session, /, *args: P.args, **kwargs: P.kwargs) -> R:
        # The coroutine touches only what both classes share (_SessionBase).
        return self._loop.run(method(self, *args, **kwargs))

    return functools.wraps(method)(public(call))


class Session(_SessionBase):
    """A kernel to run functions on, from ordinary (blocking) code: ``with Session() as s``.

    ``Session(backend="local")`` starts a kernel on this machine (``python=`` picks another
    interpreter); ``backend="jupyter"`` uses any Jupyter server (``url=``, ``token=``);
    ``backend="colab"`` a Colab runtime; ``backend="emulator"`` a Colab emulator on 127.0.0.1.
    The kernel starts on first use or on ``with``; ``close()`` releases it. Your own modules
    that a called function reaches are sent to the kernel, except ``exclude_modules=``.
    ``env=`` and ``secrets=`` become environment variables on the kernel. Every method is the
    blocking form of the :class:`AsyncSession` method of the same name.
    """

    @public
    def open(self) -> Session:
        """Start (or attach to) the kernel now rather than on first use."""
        self._loop.run(self._core.open())
        return self

    close = _blocking(AsyncSession.close)

    @public
    def __enter__(self) -> Session:
        return self.open()

    @public
    def __exit__(self, *exc_info: object) -> None:
        self.close()

    exec = _blocking(AsyncSession.exec)

    @public
    def put(self, value: T) -> Ref[T]:
        """Keep ``value`` on the kernel and return a :class:`Ref` to it (the blocking form of
        :meth:`AsyncSession.put`)."""
        origin = _refs.caller_origin("put()")
        return self._loop.run(_refs.put(self, value, origin))

    pip_install = _blocking(AsyncSession.pip_install)
    shell = _blocking(AsyncSession.shell)
    eval = _blocking(AsyncSession.eval)

    @contextlib.contextmanager
    def forward(self, port: int, *, local_port: int = 0) -> Iterator[str]:
        """``with s.forward(6006) as url``: ``url`` (http://127.0.0.1:<local_port>) reaches port
        ``port`` on the runtime, HTTP and WebSockets, until the block ends (the blocking form of
        :meth:`AsyncSession.forward`)."""
        _ports.check_port("port", port)
        _ports.check_port("local_port", local_port, zero_ok=True)
        started = public(self._loop.run)(_ports.start_forward(self._core, port, local_port))
        try:
            yield started if isinstance(started, str) else started.url
        finally:
            if not isinstance(started, str):
                self._loop.run(started.stop())

    info = _blocking(AsyncSession.info)
    runtime = _blocking(AsyncSession.runtime)
    upload = _blocking(AsyncSession.upload)
    download = _blocking(AsyncSession.download)
    sync = _blocking(AsyncSession.sync)

    @public
    def call(self, call_id: str) -> RemoteCall[Any]:
        """The detached call ``call_id`` on this session's runtime (the blocking form of
        :meth:`AsyncSession.call`)."""
        from ._detached import calls as _calls

        return RemoteCall(self._loop.run(_calls.attach(self._core, call_id)), self._loop)

    calls = _blocking(AsyncSession.calls)

    @public
    def terminal(self, *, cols: int | None = None, rows: int | None = None) -> Terminal:
        """Open an interactive terminal on the runtime: ``with s.terminal() as t`` for programs
        (``t.send``, ``t.expect``, ``t.resize``), ``s.terminal().interact()`` for people (this
        terminal in raw mode until the remote shell exits; its exit status)."""
        size = terminal_size_option(cols, rows)
        core = self._loop.run(_terminal.open_terminal(self._core, size))
        return Terminal(core, self._loop)
