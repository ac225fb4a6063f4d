"""Tests for syncws.messages.MessageQueue and Assembler.

Threads are synchronised with events and bounded joins, never with sleeps.
A thread "is blocked in put()" is observed through ``put_waiting``, which the
queue sets under its lock right before waiting.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, List

import pytest

from syncws.core import Fragment
from syncws.exceptions import ConcurrencyError
from syncws.messages import Assembler, MessageQueue, QueueClosed

pytestmark = pytest.mark.timeout(10)

WAIT = 5.0  # seconds: generous bound for something that should be immediate


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll a condition set by another thread (no fixed sleeps: bounded spin)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        threading.Event().wait(0.001)
    return True


class Runner(threading.Thread):
    """Runs ``target`` in a thread and keeps its result or exception."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.target = target
        self.started_event = threading.Event()
        self.done = threading.Event()
        self.result: Any = None
        self.exception: BaseException | None = None

    def run(self) -> None:
        self.started_event.set()
        try:
            self.result = self.target()
        except BaseException as exc:  # recorded for the test to assert on
            self.exception = exc
        finally:
            self.done.set()

    def start_and_wait_started(self) -> "Runner":
        self.start()
        assert self.started_event.wait(WAIT)
        return self


def test_fifo() -> None:
    queue = MessageQueue(None)
    for item in ["a", b"b", "c"]:
        queue.put(item)
    assert len(queue) == 3
    assert [queue.get(), queue.get(), queue.get()] == ["a", b"b", "c"]
    assert len(queue) == 0


def test_unbounded_put_never_blocks() -> None:
    for maxsize in (None, 0):
        queue = MessageQueue(maxsize)
        for i in range(1000):
            queue.put(i)
        assert not queue.put_waiting
        assert [queue.get(0) for _ in range(1000)] == list(range(1000))


def test_get_timeout_raises_timeout_error() -> None:
    queue = MessageQueue(4)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="no message received within 0.05 seconds"):
        queue.get(timeout=0.05)
    assert time.monotonic() - start >= 0.05


def test_get_timeout_zero_polls() -> None:
    queue = MessageQueue(4)
    with pytest.raises(TimeoutError):
        queue.get(timeout=0)
    queue.put("x")
    assert queue.get(timeout=0) == "x"
    with pytest.raises(TimeoutError):
        queue.get(timeout=0)


def test_negative_timeout_polls() -> None:
    queue = MessageQueue(4)
    with pytest.raises(TimeoutError):
        queue.get(timeout=-1)
    queue.put("x")
    assert queue.get(timeout=-1) == "x"


def test_get_waits_for_put() -> None:
    queue = MessageQueue(4)
    consumer = Runner(lambda: queue.get(timeout=WAIT)).start_and_wait_started()
    queue.put("hello")
    assert consumer.done.wait(WAIT)
    assert consumer.exception is None
    assert consumer.result == "hello"


def test_get_without_timeout_waits_for_put() -> None:
    queue = MessageQueue(4)
    consumer = Runner(queue.get).start_and_wait_started()
    queue.put("hello")
    assert consumer.done.wait(WAIT)
    assert consumer.result == "hello"


def test_bounded_put_blocks_until_get() -> None:
    queue = MessageQueue(2)
    queue.put(1)
    queue.put(2)
    assert not queue.put_waiting
    producer = Runner(lambda: queue.put(3)).start_and_wait_started()
    assert wait_until(lambda: queue.put_waiting)
    assert not producer.done.is_set()
    assert len(queue) == 2

    assert queue.get(0) == 1
    assert producer.done.wait(WAIT)
    assert producer.exception is None
    assert not queue.put_waiting
    assert [queue.get(0), queue.get(0)] == [2, 3]


def test_put_waiting_false_when_not_full() -> None:
    queue = MessageQueue(2)
    queue.put(1)
    assert not queue.put_waiting


def test_unbound_releases_blocked_put() -> None:
    queue = MessageQueue(1)
    queue.put(1)
    producer = Runner(lambda: queue.put(2)).start_and_wait_started()
    assert wait_until(lambda: queue.put_waiting)
    queue.unbound()
    assert producer.done.wait(WAIT)
    assert producer.exception is None
    assert not queue.put_waiting
    # From now on put never waits.
    for i in range(3, 10):
        queue.put(i)
    assert [queue.get(0) for _ in range(9)] == list(range(1, 10))


def test_close_releases_blocked_put() -> None:
    queue = MessageQueue(1)
    queue.put(1)
    producer = Runner(lambda: queue.put(2)).start_and_wait_started()
    assert wait_until(lambda: queue.put_waiting)
    queue.close()
    assert producer.done.wait(WAIT)
    assert producer.exception is None


def test_close_wakes_blocked_get() -> None:
    queue = MessageQueue(4)
    consumers = [Runner(queue.get).start_and_wait_started() for _ in range(3)]
    consumers += [Runner(lambda: queue.get(timeout=WAIT)).start_and_wait_started() for _ in range(2)]
    queue.close()
    for consumer in consumers:
        assert consumer.done.wait(WAIT)
        assert isinstance(consumer.exception, QueueClosed)


def test_close_drains_remaining_items_first() -> None:
    queue = MessageQueue(4)
    queue.put("a")
    queue.put("b")
    queue.close()
    assert queue.get() == "a"
    assert queue.get(timeout=0) == "b"
    with pytest.raises(QueueClosed):
        queue.get()
    with pytest.raises(QueueClosed):
        queue.get(timeout=0)
    with pytest.raises(QueueClosed):
        queue.get(timeout=1)


def test_closed_empty_queue_raises_queue_closed_not_timeout() -> None:
    queue = MessageQueue(None)
    queue.close()
    start = time.monotonic()
    with pytest.raises(QueueClosed):
        queue.get(timeout=WAIT)
    assert time.monotonic() - start < WAIT / 2


def test_concurrent_consumers_get_distinct_items() -> None:
    queue = MessageQueue(8)
    n_items = 2000
    n_consumers = 6
    results: List[List[int]] = [[] for _ in range(n_consumers)]

    def consume(out: List[int]) -> None:
        while True:
            try:
                out.append(queue.get(timeout=WAIT))
            except QueueClosed:
                return

    consumers = [Runner(lambda out=out: consume(out)).start_and_wait_started() for out in results]
    for i in range(n_items):
        queue.put(i)
    queue.close()
    for consumer in consumers:
        assert consumer.done.wait(WAIT)
        assert consumer.exception is None
    received = [item for out in results for item in out]
    assert sorted(received) == list(range(n_items))
    # Each consumer sees its items in FIFO order.
    for out in results:
        assert out == sorted(out)


def test_producer_and_consumer_stream_in_order() -> None:
    queue = MessageQueue(3)
    n_items = 5000
    producer = Runner(lambda: [queue.put(i) for i in range(n_items)]).start_and_wait_started()
    received = [queue.get(timeout=WAIT) for _ in range(n_items)]
    assert producer.done.wait(WAIT)
    assert received == list(range(n_items))
    assert len(queue) == 0
    assert not queue.put_waiting


def test_put_all_appends_in_order() -> None:
    for maxsize in (None, 0, 10):
        queue = MessageQueue(maxsize)
        queue.put_all(["a", b"b", "c"])
        queue.put_all([])
        assert [queue.get(0) for _ in range(3)] == ["a", b"b", "c"]
        assert not queue.put_waiting


def test_put_all_fills_then_waits_for_room() -> None:
    queue = MessageQueue(3, low=1)
    queue.put(0)
    producer = Runner(lambda: queue.put_all(list(range(1, 7)))).start_and_wait_started()
    assert wait_until(lambda: queue.put_waiting)
    assert len(queue) == 3  # filled up to the bound, then waits
    assert [queue.get(0), queue.get(0)] == [0, 1]  # down to low: the producer goes on
    assert wait_until(lambda: len(queue) == 3 and queue.put_waiting)  # 2, 3, 4; 5 waits
    assert [queue.get(timeout=WAIT) for _ in range(5)] == [2, 3, 4, 5, 6]
    assert producer.done.wait(WAIT)
    assert producer.exception is None


def test_put_all_streams_in_order_under_a_bound() -> None:
    queue = MessageQueue(3)
    n_items = 5000
    batches = [list(range(start, start + 7)) for start in range(0, n_items, 7)]
    producer = Runner(lambda: [queue.put_all(batch) for batch in batches]).start_and_wait_started()
    expected = [item for batch in batches for item in batch]
    received = [queue.get(timeout=WAIT) for _ in expected]
    assert producer.done.wait(WAIT)
    assert received == expected
    assert len(queue) == 0


# -- Assembler: whole messages with or without a timeout (get() takes two paths) --

TIMEOUTS = [None, 0, WAIT]


@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_assembler_returns_whole_messages_and_joins_fragments(timeout: Any) -> None:
    queue = MessageQueue(8)
    assembler = Assembler(queue)
    queue.put_all(["a", b"b", Fragment("c", False), Fragment("d", True), Fragment(b"e", True)])
    assert [assembler.get(timeout) for _ in range(4)] == ["a", b"b", "cd", b"e"]


@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_assembler_decode(timeout: Any) -> None:
    queue = MessageQueue(8)
    assembler = Assembler(queue)
    queue.put_all(["é", "é", b"\xc3\xa9", b"\xc3\xa9"])
    assert assembler.get(timeout, decode=None) == "é"
    assert assembler.get(timeout, decode=False) == b"\xc3\xa9"
    assert assembler.get(timeout, decode=True) == "é"
    assert assembler.get(timeout, decode=None) == b"\xc3\xa9"


@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_assembler_end_raises_queue_closed_for_good(timeout: Any) -> None:
    queue = MessageQueue(8)
    assembler = Assembler(queue)
    queue.put("last")
    queue.close()
    assert assembler.get(timeout) == "last"
    for _ in range(2):  # the end marker stays for the next call
        with pytest.raises(QueueClosed):
            assembler.get(timeout)
    with pytest.raises(QueueClosed):
        queue.get(0)


@pytest.mark.parametrize("timeout", TIMEOUTS)
def test_assembler_get_wakes_a_reader_waiting_for_room(timeout: Any) -> None:
    queue = MessageQueue(2)
    assembler = Assembler(queue)
    producer = Runner(lambda: queue.put_all([1, 2, 3])).start_and_wait_started()
    assert wait_until(lambda: queue.put_waiting)
    assert assembler.get(timeout) == 1
    assert producer.done.wait(WAIT)
    assert producer.exception is None
    assert [assembler.get(timeout), assembler.get(timeout)] == [2, 3]


def test_assembler_get_inline_path_matches_message_queue_get() -> None:
    """get(None) copies MessageQueue.get()'s common case; get(timeout) calls it: same results."""
    items = ["a", b"b", Fragment("c", False), Fragment("d", True), "é", Fragment(b"e", True)]
    results = []
    for timeout in (None, WAIT):
        queue = MessageQueue(16)
        assembler = Assembler(queue)
        queue.put_all(items)
        queue.close()
        taken: List[Any] = []
        while True:
            try:
                taken.append(assembler.get(timeout, decode=None if len(taken) != 3 else False))
            except QueueClosed:
                taken.append("QueueClosed")
                break
        results.append((taken, len(queue), queue.put_waiting))
    assert results[0] == results[1]
    assert results[0][0] == ["a", b"b", "cd", b"\xc3\xa9", b"e", "QueueClosed"]


@pytest.mark.parametrize("first", ["get", "get with a timeout", "stream"])
def test_get_inlines_enter_and_leave_as_stream_calls_them(first: str) -> None:
    """get() inlines _enter() and _leave(), which stream() calls: a second receiver is refused alike, and let in after."""
    queue = MessageQueue(4)
    assembler = Assembler(queue)
    receive: Callable[[], Any] = {
        "get": lambda: assembler.get(),
        "get with a timeout": lambda: assembler.get(WAIT),
        "stream": lambda: list(assembler.stream()),
    }[first]
    receiver = Runner(receive).start_and_wait_started()
    assert wait_until(lambda: not assembler._receiving)  # the receiver is in
    refusals = []
    for second in (lambda: assembler.get(), lambda: assembler.get(0), lambda: list(assembler.stream(0))):
        with pytest.raises(ConcurrencyError) as refused:
            second()
        refusals.append(str(refused.value))
    assert len(set(refusals)) == 1 and "one thread at a time" in refusals[0]
    queue.put_all(["first"])
    assert receiver.done.wait(WAIT) and receiver.exception is None
    assert receiver.result == (["first"] if first == "stream" else "first")
    # The receiver left: each way in works again.
    queue.put_all(["a", "b", "c"])
    assert [assembler.get(), assembler.get(0), list(assembler.stream(0))] == ["a", "b", ["c"]]


def test_assembler_get_without_timeout_waits_for_a_message() -> None:
    queue = MessageQueue(2)
    assembler = Assembler(queue)
    consumer = Runner(assembler.get).start_and_wait_started()
    assert not consumer.done.wait(0.05)
    queue.put("late")
    assert consumer.done.wait(WAIT)
    assert consumer.result == "late"


@pytest.mark.parametrize("data", [b"", b"ab", "", "é"])
def test_assembler_holds_a_message_of_tiny_fragments_in_few_pieces(data: Any) -> None:
    """A peer's tiny (or empty) fragments, one per read, cost no object each while recv() assembles them.

    Each fragment was kept as a piece until the message's end: 2-byte
    fragments held about 20 times max_size, and empty ones, which max_size
    doesn't count, held memory without bound.
    """
    queue = MessageQueue(None)
    assembler = Assembler(queue)
    count = 20_000
    queue.put_all([Fragment(data, False)] * count)
    with pytest.raises(TimeoutError):
        assembler.get(0)  # the message isn't over: its fragments wait for the next call
    assert len(assembler._partial) <= 2 + 2 * len(data) * count // 4096
    queue.put_all([Fragment(data[:0] + ("z" if isinstance(data, str) else b"z"), True)])
    assert assembler.get(0) == data * count + data[:0] + ("z" if isinstance(data, str) else b"z")
