"""What the stress tests measure: memory, threads, descriptors, time."""

from __future__ import annotations

import os
import threading


def rss_mib() -> float:
    """This process's resident set size, in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fd_count() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def thread_count() -> int:
    """Live Python threads of this process."""
    return threading.active_count()


def busy_thread_count() -> int:
    """Live Python threads of this process, but those idle in syncws' pool.

    A thread whose connection ended waits idle (``syncws-idle``) for up to
    ``syncws.threadpool.LINGER`` seconds for another: how many do depends
    on how fast the previous connections' threads got there.
    """
    return sum(thread.name != "syncws-idle" for thread in threading.enumerate())
