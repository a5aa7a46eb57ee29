"""Only the local modules a function can reach go to the kernel, minus those excluded."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import colabremote as cr
from colabremote._serialization import LocalModules, ModuleExclusions, pack_function
from colabremote.exceptions import ConfigurationError

from .conftest import BackendSpec

MODULES = (
    "reach_app",
    "reach_helpers",
    "reach_secrets",
    "reach_extra",
    "reach_types",
    "reach_a",
    "reach_pkg",
    "reach_pkg.sub",
    "reach_pkg.leaf",
)


def write(folder: Path, files: dict[str, str]) -> None:
    for relpath, text in files.items():
        path = folder / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    importlib.invalidate_caches()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A project on sys.path: ``reach_app`` (the function) imports ``reach_helpers``, which it
    uses, and ``reach_secrets``, which it does not."""
    write(
        tmp_path,
        {
            "reach_app.py": """
                import reach_helpers
                import reach_secrets

                def compute(x):
                    return reach_helpers.double(x)

                def leak():
                    return reach_secrets.API_KEY
            """,
            "reach_helpers.py": """
                def double(x):
                    return 2 * x
            """,
            "reach_secrets.py": """
                API_KEY = "sk-do-not-ship"
            """,
        },
    )
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in MODULES:
        sys.modules.pop(name, None)


def app_function(name: str) -> Callable[..., Any]:
    return getattr(importlib.import_module("reach_app"), name)  # type: ignore[no-any-return]


def shipped_files() -> list[str]:
    """On the kernel: the module files it received (the agent's sources directory)."""
    import os
    import sys

    found = []
    for entry in sys.path:
        if os.path.basename(entry).startswith("colabremote-src-"):
            for root, _, names in os.walk(entry):
                found += [
                    os.path.relpath(os.path.join(root, n), entry).replace(os.sep, "/")
                    for n in names
                    if n.endswith(".py")
                ]
    return sorted(found)


def loaded(name: str) -> bool:
    import sys

    return name in sys.modules


def test_a_module_the_function_does_not_reach_stays_here(
    session: cr.Session, project: Path
) -> None:
    compute = app_function("compute")
    assert "reach_secrets" in sys.modules  # loaded here, by the function's own module
    assert session.remote(compute)(21) == 42
    files = session.remote(shipped_files)()
    assert "reach_helpers.py" in files
    assert "reach_secrets.py" not in files
    assert not session.remote(loaded)("reach_secrets")


def test_imports_are_followed_from_module_to_module(session: cr.Session, project: Path) -> None:
    """a -> pkg.sub -> pkg.leaf: the last one is never imported here, and only by a relative
    import inside a function."""
    write(
        project,
        {
            "reach_a.py": """
                from reach_pkg.sub import middle

                def top():
                    return "a" + middle()
            """,
            "reach_pkg/__init__.py": "",
            "reach_pkg/sub.py": """
                def middle():
                    from . import leaf

                    return "b" + leaf.bottom()
            """,
            "reach_pkg/leaf.py": """
                def bottom():
                    return "c"
            """,
        },
    )
    top = importlib.import_module("reach_a").top
    assert "reach_pkg.leaf" not in sys.modules
    assert session.remote(top)() == "abc"
    # reach_a itself is not needed there: top travels by value.
    files = set(session.remote(shipped_files)())
    assert {"reach_pkg/__init__.py", "reach_pkg/sub.py", "reach_pkg/leaf.py"} <= files


def test_an_edited_module_is_sent_again_with_what_it_now_imports(
    session: cr.Session, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session._core.modules, "RESCAN_SECONDS", 0.0)  # look for edits every call
    f = session.remote(app_function("compute"))
    assert f(1) == 2
    write(
        project,
        {
            "reach_helpers.py": """
                def double(x):
                    import reach_extra

                    return reach_extra.FACTOR * x
            """,
            "reach_extra.py": "FACTOR = 3\n",
        },
    )
    assert f(1) == 3
    assert "reach_extra" not in sys.modules  # never imported here: found in the edited source


def total(point: Any) -> Any:
    return point.x + point.y


def test_the_module_of_an_argument_class_is_sent(session: cr.Session, project: Path) -> None:
    write(
        project,
        {
            "reach_types.py": """
                from dataclasses import dataclass

                @dataclass
                class Point:
                    x: int
                    y: int
            """
        },
    )
    point = importlib.import_module("reach_types").Point(2, 3)
    assert session.remote(total)(point) == 5
    assert "reach_types.py" in session.remote(shipped_files)()


@pytest.fixture
def excluding_session(
    backend: BackendSpec, project: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[cr.Session]:
    # The pattern is relative to the working directory (not the project: a local kernel
    # started there could import the file from its own working directory).
    monkeypatch.chdir(project.parent)
    with backend.session(exclude_modules=[f"{project.name}/reach_helpers.py"]) as s:
        yield s


def test_an_excluded_module_is_not_sent_and_the_failure_says_why(
    excluding_session: cr.Session,
) -> None:
    with pytest.raises(ModuleNotFoundError, match=r"exclude_modules has '.*/reach_helpers\.py'"):
        excluding_session.remote(app_function("compute"))(1)
    assert "reach_helpers.py" not in excluding_session.remote(shipped_files)()


# -- what a function reaches, without a kernel ---------------------------------------------------


def reach(fn: Callable[..., Any], exclude: list[str] | None = None) -> list[str]:
    reached: set[str] = set()
    pack_function(fn, kernel_python=sys.version_info[:3], reached=reached)
    return [f.path for f in LocalModules(exclude or ()).pending(reached)]


def test_reach_is_what_the_function_uses(project: Path) -> None:
    assert reach(app_function("compute")) == ["reach_helpers.py"]
    assert reach(app_function("leak")) == ["reach_secrets.py"]


def test_a_reached_module_brings_what_it_imports(project: Path) -> None:
    write(project, {"reach_helpers.py": "import reach_secrets\n\ndef double(x):\n    return x\n"})
    assert reach(app_function("compute")) == ["reach_helpers.py", "reach_secrets.py"]
    assert reach(app_function("compute"), ["reach_secrets"]) == ["reach_helpers.py"]


def test_exclusion_patterns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    here = str(tmp_path)
    exclusions = ModuleExclusions(["secrets.py", "scratch/*", "private", "gen_*", "~/keys"])
    assert exclusions.match("secrets", os.path.join(here, "secrets.py")) == "secrets.py"
    assert exclusions.match("a.b", os.path.join(here, "scratch", "a", "b.py")) == "scratch/*"
    assert exclusions.match("private.sub", os.path.join(here, "x.py")) == "private"
    assert exclusions.match("gen_models", os.path.join(here, "gen_models.py")) == "gen_*"
    keys = os.path.join(os.path.expanduser("~"), "keys", "k.py")
    assert exclusions.match("k", keys) == "~/keys"  # a folder covers what is in it
    assert exclusions.match("helpers", os.path.join(here, "helpers.py")) is None
    assert exclusions.match("privateer", os.path.join(here, "lib", "secrets.py")) is None
    assert ModuleExclusions("secrets.py").match("secrets", "secrets.py") == "secrets.py"
    with pytest.raises(ConfigurationError, match="empty pattern"):
        ModuleExclusions([""])
