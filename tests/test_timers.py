"""Tests for syncws.timers: the shared timer thread, call_later and deadline().

To make interleavings deterministic, some tests park the timer thread in a
"gate" callback that waits on an event: while it is parked, no other timer can
run, so the test can schedule, cancel or finish a block first and only then
let the thread go. Every wait is bounded.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from typing import Callable, Iterator, List

import pytest

from conftest import wait_for
from syncws import timers
from syncws.timers import Deadline, Timer, call_later, deadline

pytestmark = pytest.mark.timeout(15)

WAIT = 5.0


class Gate:
    """Parks the timer thread until :meth:`open` is called."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        self.release.wait(WAIT)

    def open(self) -> None:
        self.release.set()


@pytest.fixture
def gate() -> Iterator[Gate]:
    """A timer thread parked in a callback for the duration of the block."""
    g = Gate()
    call_later(0, g)
    assert g.entered.wait(WAIT)
    try:
        yield g
    finally:
        g.open()


def test_call_later_runs_callback_on_timer_thread() -> None:
    ran = threading.Event()
    threads: List[threading.Thread] = []

    def callback() -> None:
        threads.append(threading.current_thread())
        ran.set()

    timer = call_later(0.01, callback)
    assert isinstance(timer, Timer)
    assert ran.wait(WAIT)
    assert threads[0].name == "syncws-timers"
    assert threads[0].daemon
    assert threads[0] is not threading.current_thread()
    timer.cancel()  # a no-op once it has run


def test_call_later_when() -> None:
    before = time.monotonic()
    timer = call_later(30, lambda: None)
    try:
        assert before + 30 <= timer.when <= time.monotonic() + 30
    finally:
        timer.cancel()


def test_ordering_by_due_time(gate: Gate) -> None:
    order: List[str] = []
    done = threading.Event()
    # Scheduled out of order while the thread is parked. Due times are taken
    # from the timers themselves: on a loaded machine, time passes between
    # two call_later calls, so the expected order is by ``when``.
    scheduled = {
        "c": call_later(0.03, lambda: order.append("c")),
        "a": call_later(0.01, lambda: order.append("a")),
        "b": call_later(0.02, lambda: order.append("b")),
        "now": call_later(0, lambda: order.append("now")),
    }
    call_later(0.2, lambda: (order.append("last"), done.set()))
    gate.open()
    assert done.wait(WAIT)
    expected = sorted(scheduled, key=lambda name: scheduled[name].when)  # stable: ties keep scheduling order
    assert order == expected + ["last"]


def test_same_due_time_runs_in_scheduling_order(gate: Gate) -> None:
    order: List[int] = []
    done = threading.Event()
    for i in range(20):
        call_later(0, lambda i=i: order.append(i))
    call_later(0, done.set)
    gate.open()
    assert done.wait(WAIT)
    assert order == list(range(20))


def timer_thread_waits() -> bool:
    """Whether the timer thread is blocked waiting for its next timer's time (or a new one)."""
    thread = timers._timers._thread
    frame = None if thread is None else sys._current_frames().get(thread.ident)  # type: ignore[arg-type]
    return (
        frame is not None and frame.f_code.co_name == "wait"
        and frame.f_back is not None and frame.f_back.f_code is timers._TimerThread._run.__code__
    )


def test_earlier_timer_wakes_the_thread(gate: Gate) -> None:
    # The thread is waiting for an hour-away timer; an earlier one must
    # wake it up (without, it would run in an hour, and ran.wait fail).
    far = call_later(3600, lambda: None)
    try:
        gate.open()
        assert wait_for(timer_thread_waits, WAIT)
        ran = threading.Event()
        call_later(0, ran.set)
        assert ran.wait(WAIT)
    finally:
        far.cancel()


def test_cancel_prevents_callback(gate: Gate) -> None:
    ran: List[str] = []
    done = threading.Event()
    cancelled = call_later(0, lambda: ran.append("cancelled"))
    call_later(0, lambda: ran.append("kept"))
    call_later(0, done.set)
    cancelled.cancel()
    assert cancelled.cancelled
    gate.open()
    assert done.wait(WAIT)
    assert ran == ["kept"]


def test_cancel_from_other_threads_is_idempotent(gate: Gate) -> None:
    ran: List[str] = []
    timer = call_later(0, lambda: ran.append("cancelled"))
    threads = [threading.Thread(target=timer.cancel) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    timer.cancel()
    assert timer.cancelled
    done = threading.Event()
    call_later(0, done.set)
    gate.open()
    assert done.wait(WAIT)
    assert ran == []


def test_raising_callback_does_not_stop_later_ones(caplog: pytest.LogCaptureFixture, gate: Gate) -> None:
    caplog.set_level(logging.ERROR, logger="syncws.timers")
    done = threading.Event()
    ran: List[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    call_later(0, broken)
    call_later(0, lambda: ran.append("after"))
    call_later(0, done.set)
    gate.open()
    assert done.wait(WAIT)
    assert ran == ["after"]
    records = [r for r in caplog.records if r.name == "syncws.timers"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].getMessage().startswith("timer callback ")
    assert records[0].getMessage().endswith(" failed")
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], RuntimeError)
    # The thread is still serving timers.
    again = threading.Event()
    call_later(0, again.set)
    assert again.wait(WAIT)


def test_single_timer_thread() -> None:
    n = 300
    count = 0
    lock = threading.Lock()
    all_ran = threading.Event()

    def callback() -> None:
        nonlocal count
        with lock:
            count += 1
            if count == n:
                all_ran.set()

    for i in range(n):
        call_later((i % 7) / 1000, callback)
    assert all_ran.wait(WAIT)
    names = [t.name for t in threading.enumerate()]
    assert names.count("syncws-timers") == 1


def test_timers_scheduled_from_many_threads_use_one_thread() -> None:
    n_threads = 8
    per_thread = 25
    remaining = threading.Semaphore(0)
    runners: List[str] = []

    def schedule() -> None:
        for _ in range(per_thread):
            call_later(0, lambda: (runners.append(threading.current_thread().name), remaining.release()))

    threads = [threading.Thread(target=schedule) for _ in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    for _ in range(n_threads * per_thread):
        assert remaining.acquire(timeout=WAIT)
    assert set(runners) == {"syncws-timers"}
    assert [t.name for t in threading.enumerate()].count("syncws-timers") == 1


# --- deadline ---------------------------------------------------------------------------


def test_deadline_expires_when_block_overruns() -> None:
    expired = threading.Event()
    calls: List[int] = []

    def on_expire() -> None:
        calls.append(1)
        expired.set()

    with deadline(0.01, on_expire) as state:
        assert isinstance(state, Deadline)
        assert expired.wait(WAIT)  # the block "overruns" until on_expire ran
        assert state.expired
    assert state.expired
    assert calls == [1]


def test_deadline_not_expired_when_block_ends_in_time() -> None:
    calls: List[int] = []
    with deadline(0.05, lambda: calls.append(1)) as state:
        pass
    assert not state.expired
    # A later timer has run, so the deadline's time has come and gone.
    sentinel = threading.Event()
    call_later(0.1, sentinel.set)
    assert sentinel.wait(WAIT)
    assert calls == []
    assert not state.expired


def test_deadline_due_but_block_ended_first(gate: Gate) -> None:
    # The deadline falls due while the timer thread is busy; the block ends
    # before the thread gets to it: on_expire must never run.
    calls: List[int] = []
    with deadline(0, lambda: calls.append(1)) as state:
        pass
    done = threading.Event()
    call_later(0, done.set)
    gate.open()
    assert done.wait(WAIT)
    assert calls == []
    assert not state.expired


def test_deadline_ending_with_an_exception_cancels() -> None:
    calls: List[int] = []
    with pytest.raises(KeyError):
        with deadline(0.02, lambda: calls.append(1)) as state:
            raise KeyError("x")
    sentinel = threading.Event()
    call_later(0.05, sentinel.set)
    assert sentinel.wait(WAIT)
    assert calls == []
    assert not state.expired


def test_deadline_none_schedules_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    scheduled: List[float] = []
    original = timers.call_later

    def spy(delay: float, callback: Callable[[], None]) -> Timer:
        scheduled.append(delay)
        return original(delay, callback)

    monkeypatch.setattr(timers, "call_later", spy)
    with deadline(None, lambda: None) as state:
        pass
    assert scheduled == []
    assert not state.expired


def test_deadline_on_expire_raising_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="syncws.timers")
    ran = threading.Event()

    def on_expire() -> None:
        ran.set()
        raise OSError("socket already closed")

    with deadline(0, on_expire) as state:
        assert ran.wait(WAIT)
    sentinel = threading.Event()
    call_later(0, sentinel.set)
    assert sentinel.wait(WAIT)
    assert state.expired
    assert any(r.exc_info and isinstance(r.exc_info[1], OSError) for r in caplog.records)


class _Owner:
    """Stands for a connection that a timer's callback refers to."""

    def callback(self) -> None:
        raise AssertionError("a cancelled timer ran")


def test_cancel_drops_the_callback_at_once() -> None:
    # A far timer's callback holds its connection: once cancelled, the
    # connection must be freed now, not when the timer would have fired.
    owner = _Owner()
    ref = weakref.ref(owner)
    timer = call_later(3600, owner.callback)
    del owner
    assert ref() is not None
    timer.cancel()
    assert ref() is None


def test_deadline_drops_on_expire_when_the_block_ends() -> None:
    owner = _Owner()
    ref = weakref.ref(owner)
    with deadline(3600, owner.callback):
        pass
    del owner
    assert ref() is None


def test_cancelled_timers_do_not_pile_up_in_the_heap() -> None:
    # Far timers that are cancelled (keepalive pings of closed connections)
    # are removed in batches: the heap stays proportional to the live ones.
    # A heap of its own: the process's holds the live timers of other
    # tests' connections that are still closing, which the bound would
    # count. Its thread is never started (the timers are an hour away): the
    # bookkeeping under test is call_later()'s and cancel()'s.
    heap = timers._TimerThread()
    heap._thread = threading.current_thread()
    live = [heap.call_later(3600, lambda: None) for _ in range(10)]
    for _ in range(20_000):
        heap.call_later(3600, lambda: None).cancel()
    assert len(heap._heap) <= 2 * (len(live) + 1) + timers._COMPACT_MIN
    assert heap._cancelled == sum(entry[2].cancelled for entry in heap._heap)


class _CountingHeap(timers._TimerThread):
    """A heap (its thread never started) that counts the entries its compactions go through."""

    def __init__(self) -> None:
        super().__init__()
        self._thread = threading.current_thread()
        self.compacted = 0

    def compact(self) -> None:
        self.compacted += len(self._heap)
        super().compact()


def test_cancel_is_amortized_constant_time() -> None:
    # A cancel leaves its entry in the heap (removing it there is O(n));
    # compactions drop them in batches, each once they are more than half
    # of the heap, so every entry a compaction goes through is paid for by
    # a cancel: at most three per cancel, however many timers are live.
    heap = _CountingHeap()
    live = [heap.call_later(3600, lambda: None) for _ in range(10_000)]
    pairs = 100_000
    for _ in range(pairs):
        entries = heap._heap
        size = len(entries)
        cancelled = heap._cancelled
        heap.call_later(3600, lambda: None).cancel()
        if heap._cancelled == cancelled + 1:  # no compaction: the heap just grew by the new entry
            assert heap._heap is entries and len(entries) == size + 1
    assert heap.compacted <= 3 * pairs
    assert heap.compacted >= pairs  # compactions did happen: the heap didn't keep every cancelled entry
    assert not any(timer.cancelled for timer in live)


def test_cancelled_timer_between_pop_and_run_does_not_crash(gate: Gate) -> None:
    # Cancelling from another thread while the timer thread handles the
    # entry must neither run a cleared callback nor raise.
    done = threading.Event()
    timers_ = [call_later(0, lambda: None) for _ in range(200)]
    call_later(0, done.set)
    gate.open()
    for timer in timers_:
        timer.cancel()
    assert done.wait(WAIT)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+: fork with threads
def test_a_forked_child_starts_its_own_timer_thread() -> None:
    ran = threading.Event()
    call_later(0, ran.set)  # the parent's timer thread is running
    assert ran.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: the parent's timer thread doesn't exist here
        ok = False
        try:
            fired = threading.Event()
            call_later(0.01, fired.set)
            ok = fired.wait(5)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
