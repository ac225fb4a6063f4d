"""What the Redis fan-outs share about talking to Redis.

:mod:`syncws.fanout` (pub/sub) and :mod:`syncws.streams` (streams) both
import redis-py only when a Redis fan-out is made (it is an optional extra:
``pip install 'syncws[redis]'``), make their clients with the same options,
and wait between attempts to reach Redis the same way.
"""

from __future__ import annotations

import random
from typing import Any, Dict, Optional

from .settings import check_seconds

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


def check_durations(**durations: float) -> None:
    """Refuse a Redis fan-out's durations that aren't finite numbers of seconds >= 0.

    A NaN would pass every comparison meant to bound it (a thread that waits
    ``nan`` seconds spins), an infinity would wait forever for Redis.

    Raises:
        TypeError: a duration isn't a number.
        ValueError: a duration is NaN, negative or infinite (the message
            names it).
    """
    for name, value in durations.items():
        if check_seconds(name, value) is None:
            raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")


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
