"""The user's own modules: shipped as source and importable on the kernel."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import colabremote as cr


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A throwaway project folder on sys.path, with a package and a plain module."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("VERSION = 'v1'\n")
    (tmp_path / "mypkg" / "geometry.py").write_text(
        textwrap.dedent(
            """
            from . import VERSION

            def area(w, h):
                return w * h

            def version():
                return VERSION
            """
        )
    )
    (tmp_path / "lazy_helper.py").write_text("def answer():\n    return 42\n")
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in ("mypkg", "mypkg.geometry", "lazy_helper"):
        sys.modules.pop(name, None)


def uses_package(w: float, h: float) -> tuple[float, str]:
    from mypkg import geometry  # type: ignore[import-not-found]  # made by the test

    return geometry.area(w, h), geometry.version()


def imports_lazily() -> int:
    import lazy_helper  # type: ignore[import-not-found]  # not importable here at all

    return int(lazy_helper.answer())


def kernel_module_file(name: str) -> str:
    return str(importlib.import_module(name).__file__)


def test_local_package_is_importable_remotely(session: cr.Session, project: Path) -> None:
    importlib.import_module("mypkg.geometry")
    assert session.remote(uses_package)(2, 5) == (10, "v1")
    # The kernel imported its own shipped copy, not this machine's file.
    assert session.remote(kernel_module_file)("mypkg.geometry") != str(
        project / "mypkg" / "geometry.py"
    )


def test_module_imported_only_inside_the_function(session: cr.Session, project: Path) -> None:
    assert session.remote(imports_lazily)() == 42


def test_edited_module_is_shipped_again(session: cr.Session, project: Path) -> None:
    importlib.import_module("mypkg.geometry")
    f = session.remote(uses_package)
    assert f(1, 1)[1] == "v1"
    (project / "mypkg" / "__init__.py").write_text("VERSION = 'v2'\n")
    import time

    time.sleep(1.1)  # edits are looked for at most once a second
    assert f(1, 1)[1] == "v2"


def append_line(path: str, text: str) -> None:
    from mypkg import geometry  # reaches a local module: the first call ships it

    with open(path, "a") as f:
        f.write(f"{text} {geometry.area(1, 1)}\n")


def test_calls_keep_their_order_when_modules_are_shipped(
    session: cr.Session, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first call ships new modules; the calls submitted after it must not overtake it."""
    # The kernel may hold an earlier test's edit of mypkg: the first call sends this version.
    monkeypatch.setattr(session._core.modules, "RESCAN_SECONDS", 0.0)
    log = tmp_path / "order.log"
    f = session.remote(append_line)
    futures = [f.submit(str(log), f"call {i}") for i in range(10)]
    for future in futures:
        future.result(timeout=60)
    assert log.read_text().splitlines() == [f"call {i} 1" for i in range(10)]


def test_shipped_sources_are_removed_when_the_kernel_exits(project: Path) -> None:
    with cr.Session("local", progress=False) as session:
        session.remote(uses_package)(1, 1)  # reaches mypkg.geometry, so ships it
        shipped = Path(session.remote(kernel_module_file)("mypkg.geometry"))
        assert shipped.is_file()
    folder = shipped.parent.parent  # .../colabremote-src-*/mypkg/geometry.py
    assert folder.name.startswith("colabremote-src-")
    assert not folder.exists()


def test_a_project_symlinked_into_site_packages_is_local(tmp_path: Path) -> None:
    """``flit install --symlink`` puts a link in site-packages: the file is still the user's."""
    from colabremote._serialization import _is_local_file

    project = tmp_path / "project"
    project.mkdir()
    (project / "mine.py").write_text("X = 1\n")
    site = tmp_path / "env" / "lib" / "site-packages"
    site.mkdir(parents=True)
    (site / "mine.py").symlink_to(project / "mine.py")
    (site / "installed.py").write_text("Y = 2\n")
    excluded = (str(tmp_path / "env") + os.sep,)
    assert _is_local_file(str(site / "mine.py"), excluded)
    assert not _is_local_file(str(site / "installed.py"), excluded)
    assert _is_local_file(str(project / "mine.py"), excluded)


def child_runs_exit_hooks_then_folder_exists(name: str) -> bool:
    import atexit
    import importlib
    import os

    folder = os.path.dirname(os.path.dirname(str(importlib.import_module(name).__file__)))
    pid = os.fork()
    if pid == 0:  # a child of the kernel, leaving the way a normal exit would
        atexit._run_exitfuncs()
        os._exit(0)
    os.waitpid(pid, 0)
    return os.path.isdir(folder)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_leaves_the_shipped_sources_alone(
    session: cr.Session, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel may hold an earlier test's edit: look at this project's files at once.
    monkeypatch.setattr(session._core.modules, "RESCAN_SECONDS", 0.0)
    assert session.remote(uses_package)(1, 2) == (2, "v1")  # ships mypkg.geometry
    assert session.remote(child_runs_exit_hooks_then_folder_exists)("mypkg.geometry")
    assert session.remote(uses_package)(1, 2) == (2, "v1")  # still importable
