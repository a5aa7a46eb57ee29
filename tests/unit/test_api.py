"""The public surface: pinned names, import hygiene, and the blocking API derived from the async
one. No kernel is started here."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import pytest

import colabremote as cr
import colabremote.testing
from colabremote import exceptions

PUBLIC = {
    "AsyncSession",
    "ColabRemoteError",
    "OutputDroppedWarning",
    "ColabTermsWarning",
    "PackageInstallError",
    "PythonMismatchWarning",
    "Ref",
    "RemoteClass",
    "RemoteError",
    "RemoteCall",
    "RemoteFunction",
    "RemoteInstance",
    "RemoteMethod",
    "RemoteTimeout",
    "AsyncRemoteCall",
    "CallStatus",
    "RestartNeededWarning",
    "RuntimeInfo",
    "Session",
    "SessionInfo",
    "ShellCommandError",
    "ShellResult",
    "SyncResult",
    "__version__",
    "default_session",
    "exceptions",
    "remote",
}


def test_public_names_are_pinned() -> None:
    """A change here is a change to the public API: update CHANGELOG.md with it."""
    assert set(cr.__all__) == PUBLIC
    for name in cr.__all__:
        assert hasattr(cr, name), name
    public_modules = {
        name
        for name in dir(cr)
        if name.isidentifier() and not name.startswith("_") and inspect.ismodule(getattr(cr, name))
    }
    assert public_modules <= {"exceptions", "testing"}


def test_every_exception_is_exported_and_drawn_in_the_tree() -> None:
    classes = {
        name
        for name, value in vars(exceptions).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == exceptions.__name__
    }
    assert classes == set(exceptions.__all__)
    tree = exceptions.__doc__ or ""
    for name in classes - {"ColabRemoteError", "RemoteTraceback"}:
        assert f" {name} " in tree, f"{name} is missing from the tree in exceptions.py"


def test_testing_exports_exist() -> None:
    for name in colabremote.testing.__all__:
        assert hasattr(colabremote.testing, name), name


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    assert cr.__version__ == version("colabremote")


def _fresh_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_importing_colabremote_loads_nothing_from_testing_or_servers() -> None:
    loaded = _fresh_python(
        """
        import sys
        import colabremote
        print(" ".join(sorted(sys.modules)))
        """
    ).split()
    assert not [m for m in loaded if m.startswith("colabremote.testing")]
    assert not [m for m in loaded if m.split(".")[0] in ("jupyter_server", "google")]


def test_session_methods_are_derived_from_the_async_ones() -> None:
    """One implementation: each blocking method wraps the AsyncSession method of that name and
    keeps its signature and docstring."""
    for name in ("close", "exec", "info", "runtime", "upload", "download", "sync"):
        blocking = getattr(cr.Session, name)
        asynchronous = getattr(cr.AsyncSession, name)
        assert inspect.iscoroutinefunction(asynchronous)
        assert not inspect.iscoroutinefunction(blocking)
        assert blocking.__wrapped__ is asynchronous
        assert blocking.__doc__ == asynchronous.__doc__
        assert inspect.signature(blocking) == inspect.signature(asynchronous)


def test_info_and_runtime_are_methods_not_properties() -> None:
    for cls in (cr.Session, cr.AsyncSession):
        assert callable(cls.info) and callable(cls.runtime)
        assert not isinstance(inspect.getattr_static(cls, "info"), property)


def test_unknown_backend_option_is_a_configuration_error() -> None:
    with pytest.raises(exceptions.ConfigurationError, match="does not take gpu"):
        cr.Session("local", gpu="T4")  # type: ignore[call-overload]


def test_remote_keeps_the_function_and_its_options() -> None:
    def scale(x: float, factor: int = 2) -> float:
        return x * factor

    direct = cr.remote(scale, timeout=5)
    assert direct.timeout == 5
    assert direct.local(2.0) == 4.0
    assert direct.__name__ == "scale"
    assert cr.remote(timeout=7)(scale).timeout == 7
    assert cr.remote(direct).timeout == 5  # re-decorating keeps the options


def test_blocking_call_in_ipython_cell_loop_is_allowed() -> None:
    """Notebook cells run inside IPython's event loop; blocking is what the user asked for there.
    (In a plain asyncio app the same call raises BlockingCallError: see the compliance suite.)"""
    out = _fresh_python(
        """
        import asyncio
        from IPython.core.interactiveshell import InteractiveShell
        from colabremote._loop import loop_thread
        from colabremote.exceptions import BlockingCallError

        async def value():
            return 7

        async def cell():
            return loop_thread().run(value())

        async def app():
            try:
                loop_thread().run(value())
            except BlockingCallError:
                return "refused"

        print(asyncio.run(app()))
        InteractiveShell.instance()
        print(asyncio.run(cell()))
        """
    )
    assert out.split() == ["refused", "7"]
