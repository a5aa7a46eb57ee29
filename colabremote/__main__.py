"""``python -m colabremote``: the same as the ``colabremote`` command."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
