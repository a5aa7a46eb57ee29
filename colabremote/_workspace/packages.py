"""Packages on the runtime: ``Session(pip=..., requirements=...)`` and ``pip_install``.

The installer is ``uv pip`` where the runtime has ``uv`` on PATH (Colab's image does), else
``python -m pip``, always for the kernel's own interpreter. A spec installed once is recorded
on the runtime (a file under ``~/.cache/colabremote/pip/``, keyed by a hash of the spec and the
kernel's interpreter), so installing it again, from this session or a later one attached to the
same runtime, is one quick round trip. Only a successful install is recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .._http import scrub
from ..exceptions import ConfigurationError, PackageInstallError, RestartNeededWarning
from . import Caller, by_value

#: How many of the installer's last lines a PackageInstallError carries.
TAIL_LINES = 20

_USERINFO = re.compile(r"(://)[^/@\s]+@")
_COLOURS = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class PackageSpec:
    """What to install: requirement strings and a requirements file's text (either may be
    empty). ``key`` names it on the runtime: the same packages give the same key."""

    requirements: tuple[str, ...]
    file_text: str | None = None

    @property
    def key(self) -> str:
        text = self.file_text
        if text is not None:
            text = "\n".join(line.strip() for line in text.splitlines() if line.strip())
        canonical = json.dumps([sorted(set(self.requirements)), text])
        return hashlib.sha256(canonical.encode()).hexdigest()


def package_spec(specs: Any, requirements: Any, *, specs_name: str = "pip") -> PackageSpec | None:
    """Check what the user passed where they passed it; None when there is nothing to install.
    Options (``--index-url``, ``--find-links``) belong in a requirements file."""
    if isinstance(specs, str):
        specs = [specs]
    if specs is None:
        strings: list[str] = []
    elif isinstance(specs, Iterable) and not isinstance(specs, (bytes, dict)):
        strings = list(specs)
    else:
        raise ConfigurationError(
            f"{specs_name}={specs!r} is not a list of requirements; pass strings such as "
            f"{specs_name}=['transformers==4.57.*', 'datasets']"
        )
    cleaned = []
    for spec in strings:
        if not isinstance(spec, str) or not spec.strip():
            raise ConfigurationError(
                f"{specs_name} has {spec!r}, which is not a requirement; pass non-empty strings "
                "such as 'numpy>=2'"
            )
        if spec.strip().startswith("-"):
            raise ConfigurationError(
                f"{specs_name} has the option {spec!r}; put installer options (an index URL, "
                "--find-links) in a requirements file and pass requirements='requirements.txt'"
            )
        cleaned.append(spec.strip())
    file_text = None
    if requirements is not None:
        if not isinstance(requirements, (str, os.PathLike)):
            raise ConfigurationError(
                f"requirements={requirements!r} is not a file path; pass the path of a "
                "requirements file such as requirements='requirements.txt'"
            )
        path = os.fspath(requirements)
        if not os.path.isfile(path):
            raise ConfigurationError(
                f"requirements={path!r} is not a file here; pass the path of an existing "
                "requirements file (relative to the working directory, "
                f"{os.getcwd()})"
            )
        with open(path, encoding="utf-8") as file:
            file_text = file.read()
    if not cleaned and file_text is None:
        return None
    return PackageSpec(tuple(cleaned), file_text)


async def install(session: Caller, spec: PackageSpec) -> None:
    """Install ``spec`` on the session's runtime unless it is recorded there as done; warn for
    each package the kernel had imported whose version the install changed."""
    report = await session.call(
        _INSTALL,
        (list(spec.requirements), spec.file_text, spec.key, TAIL_LINES),
        timeout=None,
        name="pip install",
    )
    if report["status"] == "failed":
        command = _clean(" ".join(shlex.quote(part) for part in report["command"]))
        tail = tuple(_clean(line) for line in report["tail"])
        lines = "\n".join(f"  {line}" for line in tail) or "  (no output)"
        raise PackageInstallError(
            f"installing packages on the runtime failed (exit status {report['returncode']}); "
            f"nothing was recorded as installed. Fix the requirements and install again.\n"
            f"Command: {command}\nIts last lines:\n{lines}",
            command=command,
            returncode=int(report["returncode"]),
            tail=tail,
        )
    for package, old, new in report.get("changed", ()):
        warnings.warn(
            RestartNeededWarning(
                f"{package} is now {new} on the runtime, but the kernel still runs {old}, which "
                f"it had imported; to use {new}, start a fresh kernel: open a new session and "
                "close this one (on Colab, to keep the runtime and what was installed on it, "
                "open the new session with endpoint= this runtime's endpoint before closing "
                "this one)",
                package=package,
                old=old,
                new=new,
            ),
            stacklevel=2,
        )


def _clean(text: str) -> str:
    """``text`` without terminal colours, and without credentials an index URL may carry
    (``https://user:token@host``)."""
    return scrub(_USERINFO.sub(r"\1***@", _COLOURS.sub("", text)))


def _install_on_kernel(  # noqa: PLR0915 - sent whole: it cannot call helpers here
    requirements: list[str], file_text: str | None, spec_key: str, tail_lines: int
) -> dict[str, Any]:
    """Runs in the kernel: install unless recorded, streaming the installer's output."""
    import collections
    import contextlib
    import hashlib
    import importlib
    import json
    import os
    import re
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    from importlib import metadata

    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(cache, "colabremote", "pip")
    key = hashlib.sha256(f"{spec_key}\0{sys.executable}".encode()).hexdigest()[:32]
    marker = os.path.join(folder, key)
    if os.path.exists(marker):
        return {"status": "done"}

    def normal(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    def versions() -> dict[str, str]:
        found: dict[str, str] = {}
        for dist in metadata.distributions():  # in sys.path order: the first is what imports
            name = dist.metadata["Name"]
            if name:
                found.setdefault(normal(name), dist.version)
        return found

    before = versions()
    with tempfile.TemporaryDirectory(prefix="colabremote-pip-") as scratch:
        args = list(requirements)
        if file_text is not None:
            listed = os.path.join(scratch, "requirements.txt")
            with open(listed, "w", encoding="utf-8") as file:
                file.write(file_text)
            args += ["-r", listed]
        uv = shutil.which("uv")
        if uv:
            command = [uv, "pip", "install", "--python", sys.executable, *args]
        else:
            command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
            command += args
        tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        process = subprocess.Popen(  # noqa: S603 - the user's own requirements
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so an interrupt stops all of it
            text=True,
            errors="replace",
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                tail.append(line.rstrip("\n"))
                sys.stdout.write(line)
                sys.stdout.flush()
            returncode = process.wait()
        except BaseException:  # interrupted: stop the installer and whatever it started
            with contextlib.suppress(ProcessLookupError):  # the group has already gone
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        finally:
            if process.stdout is not None:
                process.stdout.close()
    if returncode != 0:
        return {
            "status": "failed",
            "returncode": returncode,
            "tail": list(tail),
            "command": command,
        }
    importlib.invalidate_caches()  # new packages import in this kernel without a restart
    after = versions()
    changed = [
        (name, old, after[name]) for name, old in before.items() if after.get(name, old) != old
    ]
    if changed:
        imported = {
            normal(dist)
            for module, dists in metadata.packages_distributions().items()
            if module in sys.modules
            for dist in dists
        }
        changed = [entry for entry in changed if entry[0] in imported]
    os.makedirs(folder, exist_ok=True)
    partial = f"{marker}.{os.getpid()}.tmp"
    with open(partial, "w", encoding="utf-8") as file:
        json.dump({"requirements": requirements, "python": sys.executable}, file)
    os.replace(partial, marker)
    return {"status": "installed", "changed": changed}


_INSTALL = by_value(_install_on_kernel, "colabremote-pip")
