"""``python -m audiencekit``: the command line (the same as the ``audiencekit`` command)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
