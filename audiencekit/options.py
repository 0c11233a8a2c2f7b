"""The settings a user passes: how requests are retried (:class:`RetryPolicy`), how a write is
waited for (:class:`PollPolicy`), and how a client reaches its provider (:class:`ClientOptions`,
for a client built by hand).

They are defined in the internal :mod:`audiencekit.core` and re-exported here, their public
home: ``from audiencekit.options import RetryPolicy``.
"""

from __future__ import annotations

from .core.poll import PollPolicy
from .core.transport import ClientOptions, RetryPolicy

__all__ = ["ClientOptions", "PollPolicy", "RetryPolicy"]
