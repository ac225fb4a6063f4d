"""Closed connections are released at once (issue 11, point 2).

A connection's keepalive timer refers to the connection (its callback is a
bound method); a cancelled timer used to keep it, with its buffers, until
its time came (up to ``ping_interval``). These tests open and close real
connections and check, with weak references, that both sides' objects are
gone long before any timer would have fired; then that reference counting
alone frees them, the cycle collector off (issue 11 asks for no cycles that
wait for the GC).
"""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any, List

import pytest

import syncws
from conftest import wait_for

pytestmark = pytest.mark.timeout(60)

CYCLES = 50


def echo_once(refs: List["weakref.ref[Any]"], lock: threading.Lock) -> Any:
    def handler(ws: Any) -> None:
        with lock:
            refs.append(weakref.ref(ws))
        ws.send(ws.recv())

    return handler


def all_dead(refs: List["weakref.ref[Any]"], collect: bool) -> bool:
    if collect:
        gc.collect()
    return all(ref() is None for ref in refs)


def cycles(collect: bool) -> None:
    """Open and close CYCLES connections with far timers; check that both
    sides' objects are freed (with the cycle collector's help if ``collect``,
    else by reference counting alone, the collector being off)."""
    server_refs: List["weakref.ref[Any]"] = []
    client_refs: List["weakref.ref[Any]"] = []
    lock = threading.Lock()
    if not collect:
        gc.collect()
        gc.disable()
    try:
        # Timers far in the future: without releasing them on close, every
        # connection would live for an hour.
        with syncws.serve(echo_once(server_refs, lock), "127.0.0.1", 0, ping_interval=3600, ping_timeout=3600) as server:
            uri = f"ws://127.0.0.1:{server.port}"
            for i in range(CYCLES):
                ws = syncws.connect(uri, ping_interval=3600, ping_timeout=3600)
                ws.send(f"hello {i}")
                assert ws.recv() == f"hello {i}"
                ws.close()
                client_refs.append(weakref.ref(ws))
                del ws
            assert wait_for(lambda: all_dead(client_refs, collect), timeout=10 if collect else 3), (
                f"{sum(r() is not None for r in client_refs)} of {CYCLES} client connections still alive"
            )
            assert wait_for(lambda: len(server_refs) == CYCLES and all_dead(server_refs, collect), timeout=10), (
                f"{sum(r() is not None for r in server_refs)} of {len(server_refs)} server connections still alive"
            )
    finally:
        gc.enable()


def test_closed_connections_are_freed_before_their_timers_fire() -> None:
    cycles(collect=True)


def test_closed_connections_are_freed_without_the_cycle_collector() -> None:
    cycles(collect=False)
