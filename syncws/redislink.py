"""What the Redis fan-outs share about talking to Redis.

:mod:`syncws.fanout` (pub/sub) and :mod:`syncws.streams` (streams) both
import redis-py only when a Redis fan-out is made (it is an optional extra:
``pip install 'syncws[redis]'``), make their clients with the same options,
and wait between attempts to reach Redis the same way.
"""

from __future__ import annotations

import random
from typing import Any, Dict, Optional

__all__ = ["Backoff", "client_options", "import_redis"]


def import_redis(user: str) -> Any:
    """redis-py, imported now.

    Args:
        user: the class that needs it, named in the error.

    Raises:
        ImportError: redis-py isn't installed; the text says how to install it.
    """
    try:
        import redis
        import redis.backoff
        import redis.retry
    except ImportError as exc:
        raise ImportError(f"{user} needs redis-py: pip install 'syncws[redis]'") from exc
    return redis


def client_options(redis: Any, timeout: Optional[float]) -> Dict[str, Any]:
    """Keyword arguments for ``redis.Redis.from_url``: every command and connection bounded by ``timeout``.

    redis-py's own retries are off: they would block a fan-out's thread out
    of its sight, and each fan-out has its own policy (:class:`Backoff`).
    """
    return dict(
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
    )


class Backoff:
    """Delays between attempts to reach Redis: none at first, then growing.

    The first retry is immediate; then ``first``, doubled at each failure up
    to ``cap``, each one shortened at random by up to half so that many
    processes don't retry in step. :meth:`reset` after a success.
    """

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self._next = 0.0

    def reset(self) -> None:
        """Start again with an immediate retry."""
        self._next = 0.0

    def next(self) -> float:
        """The delay before the next attempt."""
        delay = self._next
        self._next = min(max(self._next * 2, self.first), self.cap)
        return delay * (0.5 + random.random() / 2)
