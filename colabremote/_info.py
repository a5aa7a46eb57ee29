"""What a session runs on: plain frozen records, never holding a secret."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SessionInfo:
    """What the session's kernel runs on (``s.info()``). Never holds secrets."""

    backend: str
    python: str
    implementation: str
    platform: str
    hostname: str
    pid: int
    cwd: str
    gpus: tuple[dict[str, str], ...]
    tpus: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def python_version(self) -> tuple[int, int]:
        major, minor = self.python.split(".")[:2]
        return int(major), int(minor)


@dataclass(frozen=True)
class RuntimeInfo:
    """A Colab runtime (``s.runtime()``): what it is and where its proxy is, never the proxy
    token."""

    endpoint: str
    accelerator: str
    variant: str | None
    machine_shape: str | None
    runtime_version: str | None
    idle_timeout: float | None
    proxy_url: str | None
    release_on_close: bool
