"""Tiny hand-built wheels and kernel venvs, for tests that install packages on a runtime
without an index and without touching the test suite's own environment."""

from __future__ import annotations

import base64
import hashlib
import sysconfig
import venv
import zipfile
from pathlib import Path


def build_wheel(folder: Path, name: str, version: str) -> Path:
    """A pure-Python wheel by hand: ``name/__init__.py`` with VERSION, and its dist-info."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'VERSION = "{version}"\n',
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: colabremote-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def kernel_venv(folder: Path) -> str:
    """A venv whose site-packages also reaches this one's (processed as a site dir, so
    editable installs work there too); returns its python."""
    venv.create(folder, with_pip=False, symlinks=True)
    python = folder / "bin" / "python"
    purelib = sysconfig.get_path("purelib", vars={"base": str(folder), "platbase": str(folder)})
    ours = sysconfig.get_path("purelib")
    Path(purelib, "_colabremote_tests.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n", encoding="utf-8"
    )
    return str(python)
