"""Tests for syncws.stats: a connection's counters, read into one value (no sockets)."""

from __future__ import annotations

from core_helpers import make, no_sockets  # noqa: F401  (no_sockets is an autouse fixture)
from syncws.stats import Stats, snapshot


def test_snapshot_reads_the_counters() -> None:
    core = make()
    core.send_data(b"abc", text=False)
    assert snapshot(core, 2, 1, None) == Stats(
        messages_in=0, messages_out=1, bytes_in=0, bytes_out=5, queued=2, pings_sent=1, pings_missed=0
    )
