"""The emulator is quiet by default: its access log and the errors of requests it fails reach
the user's terminal only with ``ColabEmulator(verbose=True)`` (or a logging setup of the user's
own, through the root logger as usual)."""

from __future__ import annotations

import logging
import sys

#: The loggers the emulator's servers write to: tornado's (access log, uncaught errors) and ours.
LOGGERS = ("tornado", "colabremote.emulator")


def _quiet() -> None:
    """Keep these loggers from Python's last-resort handler, which prints warnings to stderr
    when the program set up no logging."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())


class VerboseLogs:
    """While attached: the access log and request errors on stderr."""

    def __init__(self) -> None:
        self._handler = logging.StreamHandler(sys.stderr)
        self._handler.setFormatter(logging.Formatter("colab-emulator: %(message)s"))
        self._levels: dict[str, int] = {}

    def attach(self) -> None:
        for name in LOGGERS:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
            logger.addHandler(self._handler)

    def detach(self) -> None:
        for name, level in self._levels.items():
            logger = logging.getLogger(name)
            logger.removeHandler(self._handler)
            logger.setLevel(level)
        self._levels.clear()


_quiet()
