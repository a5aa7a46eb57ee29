"""The check that the ``[emulator]`` extra is installed, made before anything imports it, so that
its absence is one line naming the extra rather than an ImportError from deep inside."""

from __future__ import annotations

import importlib.util

from ..exceptions import ConfigurationError

#: The modules the emulator extra brings (see pyproject.toml).
EMULATOR_MODULES = ("jupyter_server", "tornado", "ipykernel")


def require_emulator_extra(what: str) -> None:
    """Raise ConfigurationError naming the extra when one of its modules is missing."""
    missing = [name for name in EMULATOR_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(
            f"{what} needs the emulator extra (missing: {', '.join(missing)}): "
            "pip install 'colabremote[emulator]'"
        )
