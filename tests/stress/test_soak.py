"""10,000 connect/close cycles: memory, threads and descriptors stay flat.

Issue 11, point 2: a closed connection stayed in memory until its keepalive
timer would have fired (RSS grew by about 24 MiB per 1,000 cycles, both
sides in one process). Four client threads open, use and close connections
to a server in the same process; RSS is sampled after a warm-up and at the
end. Takes about 30 s on a loaded 2-core machine.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, List

import pytest

import syncws
from conftest import wait_for
from measure import fd_count, rss_mib, thread_count

CYCLES = 10_000
WARMUP = 1_000
CLIENT_THREADS = 4
# Allocator noise over 9,000 cycles; the leak this guards against is ~200 MiB.
MAX_GROWTH_MIB = 6.0

logger = logging.getLogger("syncws.tests.stress")


def echo(ws: Any) -> None:
    ws.send(ws.recv())


def run_cycles(uri: str, count: int) -> None:
    errors: List[BaseException] = []

    def worker(n: int) -> None:
        try:
            for _ in range(n):
                ws = syncws.connect(uri)
                ws.send("ping")
                assert ws.recv() == "ping"
                ws.close()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(count // CLIENT_THREADS,)) for _ in range(CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive(), "a client thread hung"
    assert not errors, errors[0]


@pytest.mark.timeout(240)
def test_ten_thousand_cycles_memory_is_flat() -> None:
    threads_before = thread_count()
    fds_before = fd_count()
    start = time.monotonic()
    # Far keepalive timers: the case where cancelled timers used to pile up.
    with syncws.serve(echo, "127.0.0.1", 0, ping_interval=20, ping_timeout=20) as server:
        uri = f"ws://127.0.0.1:{server.port}"
        run_cycles(uri, WARMUP)
        rss_warm = rss_mib()
        run_cycles(uri, CYCLES - WARMUP)
        rss_end = rss_mib()
    elapsed = time.monotonic() - start
    growth = rss_end - rss_warm
    logger.warning(
        "soak: %d cycles in %.1f s, RSS %.1f -> %.1f MiB (%+.1f MiB)",
        CYCLES, elapsed, rss_warm, rss_end, growth,
    )
    assert growth < MAX_GROWTH_MIB, f"RSS grew by {growth:.1f} MiB over {CYCLES - WARMUP} cycles"
    assert wait_for(lambda: thread_count() <= threads_before + 1, timeout=10), thread_count()  # +1: the timer thread
    assert wait_for(lambda: fd_count() <= fds_before, timeout=10), (fds_before, fd_count())
