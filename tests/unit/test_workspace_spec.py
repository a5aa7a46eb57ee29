"""What ``pip=``, ``requirements=`` and ``pip_install`` accept, checked where they are passed,
and the key that names an install on the runtime. No kernel is started here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import colabremote as cr
from colabremote._workspace.packages import PackageSpec, _clean, package_spec
from colabremote.exceptions import ConfigurationError


@pytest.mark.parametrize(
    ("pip", "match"),
    [
        (123, "pip=123 is not a list of requirements"),
        ([""], "pip has '', which is not a requirement"),
        (["numpy", 5], "pip has 5"),
        (["--index-url", "https://example.invalid"], "put installer options .* requirements file"),
    ],
)
def test_bad_requirements_fail_at_construction(pip: object, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        cr.Session("local", pip=pip)  # type: ignore[call-overload]


def test_a_missing_requirements_file_fails_at_construction(tmp_path: Path) -> None:
    missing = tmp_path / "requirements.txt"
    named = re.escape(f"requirements='{missing}' is not a file here")
    with pytest.raises(ConfigurationError, match=named):
        cr.Session("local", requirements=missing)
    s = cr.Session("local")
    with pytest.raises(ConfigurationError, match=named):
        s.pip_install("numpy", requirements=missing)
    assert "state='new'" in repr(s)  # refused before the session opened: no kernel started
    s.close()
    with pytest.raises(ConfigurationError, match="requirements=42 is not a file path"):
        cr.Session("local", requirements=42)  # type: ignore[call-overload]


def test_pip_install_needs_something_to_install() -> None:
    s = cr.Session("local")
    with pytest.raises(ConfigurationError, match="pip_install\\(\\) was given nothing"):
        s.pip_install()
    with pytest.raises(ConfigurationError, match="pip_install\\(\\*specs\\) has ''"):
        s.pip_install("")
    s.close()


def test_nothing_to_install_is_none_and_a_string_is_one_requirement() -> None:
    assert package_spec(None, None) is None
    assert package_spec([], None) is None
    assert package_spec("numpy", None) == PackageSpec(("numpy",))


def test_the_key_ignores_order_duplicates_and_blank_lines(tmp_path: Path) -> None:
    first = tmp_path / "a.txt"
    first.write_text("numpy\n\n  pandas  \n", encoding="utf-8")
    second = tmp_path / "b.txt"
    second.write_text("numpy\npandas\n", encoding="utf-8")
    a = package_spec(["b", "a", "a"], first)
    b = package_spec([" a ", "b"], second)
    assert a is not None and b is not None
    assert a.key == b.key
    assert a.key != PackageSpec(("a", "b", "c")).key
    assert PackageSpec(("a",)).key != PackageSpec(("a",), "").key


def test_messages_lose_index_credentials_and_colours() -> None:
    line = "\x1b[31mERROR: https://user:s3cret-token@pypi.example/simple failed\x1b[0m"
    cleaned = _clean(line)
    assert "s3cret-token" not in cleaned
    assert "\x1b" not in cleaned
    assert cleaned == "ERROR: https://***@pypi.example/simple failed"
