"""The user's own modules: shipped as source and importable on the kernel."""

from __future__ import annotations

import importlib
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
    from mypkg import geometry

    return geometry.area(w, h), geometry.version()


def imports_lazily() -> int:
    import lazy_helper  # not imported locally at all

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
    with open(path, "a") as f:
        f.write(text + "\n")


def test_calls_keep_their_order_when_modules_are_shipped(
    session: cr.Session, project: Path, tmp_path: Path
) -> None:
    """The first call ships new modules; the calls submitted after it must not overtake it."""
    importlib.import_module("mypkg.geometry")  # something new to ship
    log = tmp_path / "order.log"
    f = session.remote(append_line)
    futures = [f.submit(str(log), f"call {i}") for i in range(10)]
    for future in futures:
        future.result(timeout=60)
    assert log.read_text().splitlines() == [f"call {i}" for i in range(10)]


def test_shipped_sources_are_removed_when_the_kernel_exits(project: Path) -> None:
    importlib.import_module("mypkg.geometry")  # imported here, so shipped
    with cr.Session("local", progress=False) as session:
        shipped = Path(session.remote(kernel_module_file)("mypkg.geometry"))
        assert shipped.is_file()
    folder = shipped.parent.parent  # .../colabremote-src-*/mypkg/geometry.py
    assert folder.name.startswith("colabremote-src-")
    assert not folder.exists()
