"""syncws.threadpool: threads reused across connections, ended when idle."""

from __future__ import annotations

import gc
import os
import threading
import weakref
from typing import Any, List

import pytest

from syncws import threadpool


def run(name: str) -> "tuple[threading.Thread, str]":
    """Run a task in a reader thread; return the thread and its name then."""
    seen: List[Any] = []
    done = threading.Event()

    def task() -> None:
        seen.append((threading.current_thread(), threading.current_thread().name))
        done.set()

    threadpool.start(task, name)
    assert done.wait(5)
    return seen[0]


def wait_idle(thread: threading.Thread) -> None:
    """Wait until ``thread`` is back in the pool (renamed once it is)."""
    for _ in range(500):
        if thread.name == "syncws-idle":
            return
        threading.Event().wait(0.01)
    raise AssertionError("the thread didn't go idle")


def test_a_thread_is_named_after_its_task_and_reused_when_idle() -> None:
    first, name = run("syncws-reader-a")
    assert name == "syncws-reader-a"
    wait_idle(first)
    idle = [t for t in threading.enumerate() if t.name == "syncws-idle"]
    second, name = run("syncws-reader-b")
    # No new thread: an idle one (the first, unless another went idle since).
    assert second in idle and name == "syncws-reader-b"


def test_an_idle_thread_ends_after_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threadpool, "LINGER", 0.05)
    thread, _ = run("syncws-reader-short")
    thread.join(5)
    assert not thread.is_alive()


def start_busy(count: int) -> "tuple[List[threading.Thread], threading.Event]":
    """Run ``count`` tasks in reader threads, each until the event returned is set.

    Returns once every task runs, with the threads running them.
    """
    release = threading.Event()
    started = threading.Barrier(count + 1, timeout=5)
    threads: List[threading.Thread] = []

    def task() -> None:
        threads.append(threading.current_thread())
        started.wait()
        release.wait(5)

    for index in range(count):
        threadpool.start(task, f"syncws-reader-busy-{index}")
    started.wait()
    return threads, release


def test_busy_threads_are_not_shared() -> None:
    threads, release = start_busy(2)
    release.set()
    assert threads[0] is not threads[1]


def test_a_new_thread_keeps_nothing_of_its_first_task_once_done(monkeypatch: pytest.MonkeyPatch) -> None:
    # A reader thread outlives its first connection (it lingers, or reads
    # for the next one): what it ran must be freed when the task ends.
    monkeypatch.setattr(threadpool, "LINGER", 10.0)  # longer than the check below
    _, release = start_busy(len(threadpool._idle))  # so the task gets a new thread
    try:
        class Connection:
            def __init__(self) -> None:
                self.ran = threading.Event()

            def read(self) -> None:
                self.ran.set()

        connection = Connection()
        freed = weakref.ref(connection)
        ran = connection.ran
        gc.disable()  # freed by reference counting, not by a collection
        try:
            threadpool.start(connection.read, "syncws-reader-first")
            del connection
            assert ran.wait(5)
            for _ in range(200):
                if freed() is None:
                    break
                threading.Event().wait(0.01)
            assert freed() is None
        finally:
            gc.enable()
    finally:
        release.set()


def test_an_error_in_a_task_is_logged_and_the_thread_lives_on(caplog: pytest.LogCaptureFixture) -> None:
    ran: List[threading.Thread] = []

    def boom() -> None:
        ran.append(threading.current_thread())
        raise ValueError("boom")

    threadpool.start(boom, "syncws-reader-boom")
    for _ in range(500):
        if ran:
            break
        threading.Event().wait(0.01)
    wait_idle(ran[0])  # logged first, then idle
    assert ran[0].is_alive()
    assert any("syncws-reader-boom" in r.getMessage() and r.exc_info for r in caplog.records)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+: fork with threads
def test_a_forked_child_starts_with_an_empty_pool() -> None:
    thread, _ = run("syncws-reader-parent")
    wait_idle(thread)
    pid = os.fork()
    if pid == 0:  # the child: the parent's idle thread doesn't exist here
        try:
            ok = not threadpool._idle
            done = threading.Event()
            threadpool.start(done.set, "syncws-reader-child")
            ok = ok and done.wait(5)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def test_at_most_max_idle_threads_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # A burst of closes doesn't park a thread per connection: past MAX_IDLE
    # waiting threads, a thread whose task ended ends at once.
    monkeypatch.setattr(threadpool, "MAX_IDLE", 2)
    monkeypatch.setattr(threadpool, "LINGER", 3.0)  # longer than the check below
    threads, release = start_busy(5)
    release.set()
    for _ in range(150):
        if sum(thread.is_alive() for thread in threads) <= 2:
            break
        threading.Event().wait(0.01)
    assert sum(thread.is_alive() for thread in threads) <= 2
