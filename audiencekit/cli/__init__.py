"""The ``audiencekit`` command line (the ``cli`` extra: click and rich).

Providers come from the registry (:mod:`audiencekit.providers`), built-in or installed.
Credentials come from the environment only: each provider's variables (``DEXATEL_API_KEY``,
``BATCH_API_KEY`` and ``BATCH_PROJECT_KEY`` for the built-ins); base URLs from ``--NAME-url``
or the provider's variable (``DEXATEL_BASE_URL``, ``BATCH_BASE_URL``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: the process's arguments); return its exit code."""
    try:
        from ._app import build_app
    except ImportError as exc:  # click or rich missing: the cli extra is not installed
        print(
            f"audiencekit: the command line needs the cli extra ({exc.name} is missing): "
            "pip install 'audiencekit[cli]'",
            file=sys.stderr,
        )
        return 1
    code: int = build_app().main(argv, standalone_mode=False)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
