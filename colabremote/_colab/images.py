"""Colab's runtime images and the Python each one runs: what ``runtime_version=`` chooses from.

Colab names pinned images by a label (``"2026.04"``); without a label a runtime gets the default
(latest) image. The service lists the labels it offers (the ``runtime_version_names`` experiment
flag) but not their Python, so that comes from the table here, kept in this one place.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence

from ..exceptions import ConfigurationError

#: The Python (major, minor) of Colab's default image. Source: Colab's runtime release notes,
#: as summarised in issue 12 (checked 2026-12).
DEFAULT_IMAGE_PYTHON = (3, 13)
#: Pinned images, newest first, and their Python (same source and date).
IMAGE_PYTHONS: dict[str, tuple[int, int]] = {
    "2026.07": (3, 12),
    "2026.04": (3, 12),
    "2025.07": (3, 11),
}
#: ``runtime_version="match"``: the image whose Python is this one's, where Colab offers it.
MATCH = "match"

_PYTHON_LIKE = re.compile(r"^(py(thon)?)?\s*3(\.\d+){1,2}$", re.IGNORECASE)


def python_label(python: Sequence[object]) -> str:
    """``3.12`` for (3, 12, ...)."""
    return f"{python[0]}.{python[1]}"


def describe_images(offered: Iterable[str]) -> str:
    """The labels, each with its Python where the table knows it, for error messages."""
    parts = []
    for label in offered:
        python = IMAGE_PYTHONS.get(label)
        parts.append(f"{label!r} (Python {python_label(python)})" if python else repr(label))
    default = f"None (the default image, Python {python_label(DEFAULT_IMAGE_PYTHON)})"
    return ", ".join([*parts, default, repr(MATCH)])


def check_runtime_version(value: str | None) -> str | None:
    """``runtime_version=`` as given, checked where the user passes it: a Python version given
    where an image label belongs (``"3.12"``) is a ConfigurationError naming the images."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            f"runtime_version={value!r} is not a Colab runtime version; use one of "
            f"{describe_images(IMAGE_PYTHONS)}"
        )
    value = value.strip()
    if value.lower() == MATCH:
        return MATCH
    if _PYTHON_LIKE.match(value):
        raise ConfigurationError(
            f"runtime_version={value!r} is a Python version, not a Colab runtime image; pass "
            f"runtime_version='match' for the image that runs this Python "
            f"({python_label(sys.version_info)}) where Colab offers one, or one of "
            f"{describe_images(IMAGE_PYTHONS)}"
        )
    return value


def choose_image(
    wanted: str | None, offered: Sequence[str] | None, python: Sequence[int] | None = None
) -> str | None:
    """The label to ask Colab for (``None``: the default image).

    ``offered`` is the service's live list (``None`` when it could not be read: then the table's
    labels stand in for it). ``"match"`` takes the default image when its Python is ``python``'s
    (default: this one's), else the newest offered image that runs it, else the default. A
    label Colab does not offer is a ConfigurationError listing those it does.
    """
    if wanted is None:
        return None
    labels = list(IMAGE_PYTHONS) if offered is None else list(offered)
    if wanted != MATCH:
        if offered is not None and wanted not in offered:
            raise ConfigurationError(
                f"runtime_version={wanted!r} is not a runtime version Colab offers this "
                f"account; use one of {describe_images(labels)}"
            )
        return wanted
    local = tuple(python[:2]) if python is not None else sys.version_info[:2]
    if local == DEFAULT_IMAGE_PYTHON:
        return None
    matching = sorted((x for x in labels if IMAGE_PYTHONS.get(x) == local), reverse=True)
    return matching[0] if matching else None
