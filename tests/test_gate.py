"""Tests for the interpreter lock's gate of the C speedups (syncws/speedups.c).

``recv`` and ``recv_into`` must behave as the socket's own methods on a
blocking socket, and ``SimpleQueue`` as :class:`queue.SimpleQueue`, over
real sockets and threads; what differs is the gate, tested last by what it
is for: threads woken together must not each poll for the GIL.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time
from typing import Any, Callable, Iterator, List, Tuple

import pytest

from syncws import messages, transport

try:
    from syncws import _speedups
except ImportError:
    _speedups = None

pytestmark = pytest.mark.skipif(
    _speedups is None or not hasattr(_speedups, "recv"), reason="needs the C speedups, on POSIX"
)

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


@pytest.fixture
def pair() -> Iterator[Tuple[socket.socket, socket.socket]]:
    """Two connected stream sockets."""
    one, two = socket.socketpair()
    yield one, two
    one.close()
    two.close()


# -- recv and recv_into ------------------------------------------------------


def test_recv_returns_what_arrived(pair: Tuple[socket.socket, socket.socket]) -> None:
    one, two = pair
    two.sendall(b"hello")
    assert _speedups.recv(one, 100) == b"hello"
    two.sendall(b"abcdef")
    assert _speedups.recv(one, 4) == b"abcd"
    assert _speedups.recv(one, 4) == b"ef"


def test_recv_zero_returns_at_once(pair: Tuple[socket.socket, socket.socket]) -> None:
    one, _ = pair
    assert _speedups.recv(one, 0) == one.recv(0) == b""


def test_recv_end_of_stream(pair: Tuple[socket.socket, socket.socket]) -> None:
    one, two = pair
    two.close()
    assert _speedups.recv(one, 10) == b""
    assert _speedups.recv_into(one, bytearray(10)) == 0


def test_recv_waits_for_data(pair: Tuple[socket.socket, socket.socket]) -> None:
    one, two = pair
    timer = threading.Timer(0.1, two.sendall, (b"late",))
    timer.start()
    try:
        assert _speedups.recv(one, 10) == b"late"
    finally:
        timer.join()


def test_recv_errors_as_the_socket(pair: Tuple[socket.socket, socket.socket]) -> None:
    one, _ = pair
    with pytest.raises(ValueError) as ours:
        _speedups.recv(one, -1)
    with pytest.raises(ValueError) as theirs:
        one.recv(-1)
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(TypeError):
        _speedups.recv(one, "10")
    with pytest.raises(TypeError):
        _speedups.recv(one)
    one.close()
    with pytest.raises(OSError) as closed:
        _speedups.recv(one, 10)
    assert closed.value.errno == 9  # EBADF, as one.recv() on a closed socket


def test_recv_into_fills_the_buffer(pair: Tuple[socket.socket, socket.socket]) -> None:
    one, two = pair
    two.sendall(b"xyz")
    buffer = bytearray(8)
    assert _speedups.recv_into(one, buffer) == 3
    assert buffer == b"xyz" + bytes(5)
    two.sendall(b"0123456789")
    view = memoryview(buffer)[2:6]
    assert _speedups.recv_into(one, view) == 4
    assert buffer == b"xy0123" + bytes(2)


def test_recv_into_needs_a_writable_buffer(pair: Tuple[socket.socket, socket.socket]) -> None:
    one, _ = pair
    with pytest.raises(TypeError):
        _speedups.recv_into(one, b"read-only")


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_recv_runs_signal_handlers(pair: Tuple[socket.socket, socket.socket]) -> None:
    """Interrupted by a signal, recv runs the handlers: it goes on waiting,
    or raises what a handler raises (PEP 475, as socket.recv)."""
    one, two = pair
    calls: List[int] = []

    class Interrupted(Exception):
        pass

    def count(signum: int, frame: Any) -> None:
        calls.append(signum)

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, count)
    try:
        later = threading.Timer(0.3, two.sendall, (b"after the signal",))
        later.start()
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        assert _speedups.recv(one, 100) == b"after the signal"
        later.join()
        assert calls == [signal.SIGALRM]
        signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Interrupted):
            _speedups.recv(one, 100)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_transport_reads_through_the_gate(pair: Tuple[socket.socket, socket.socket]) -> None:
    one, two = pair
    reader = transport.Transport(one)
    assert reader.recv.func is _speedups.recv  # type: ignore[attr-defined]
    two.sendall(b"gated")
    assert reader.recv(10) == b"gated"
    two.sendall(b"into")
    buffer = bytearray(4)
    assert reader.recv_into(memoryview(buffer)) == 4 and buffer == b"into"


def test_transport_reads_a_socket_subclass_with_its_methods() -> None:
    """A subclass may override recv(): the gate's recv would bypass it."""

    class Counting(socket.socket):
        reads = 0

        def recv(self, *args: Any) -> bytes:
            Counting.reads += 1
            return super().recv(*args)

    one, two = socket.socketpair()
    sub = Counting(one.family, one.type, fileno=one.detach())
    try:
        two.sendall(b"x")
        assert transport.Transport(sub).recv(1) == b"x"
        assert Counting.reads == 1
    finally:
        sub.close()
        two.close()


# -- SimpleQueue ----------------------------------------------------------------


QUEUES = [queue.SimpleQueue, _speedups.SimpleQueue] if _speedups is not None and hasattr(
    _speedups, "SimpleQueue") else []


@pytest.fixture(params=QUEUES, ids=["stdlib", "gated"][: len(QUEUES)])
def make_queue(request: pytest.FixtureRequest) -> Callable[[], Any]:
    """queue.SimpleQueue, then the gated one: the same tests must pass on both."""
    return request.param  # type: ignore[no-any-return]


def test_queue_is_first_in_first_out(make_queue: Callable[[], Any]) -> None:
    items = make_queue()
    for i in range(1000):
        items.put(i)
    assert items.qsize() == 1000
    assert [items.get() for _ in range(500)] == list(range(500))
    assert items.qsize() == 500
    assert [items.get(block=False) for _ in range(500)] == list(range(500, 1000))
    assert items.qsize() == 0


def test_queue_order_across_reclaims(make_queue: Callable[[], Any]) -> None:
    items = make_queue()
    expected = []
    taken = []
    for i in range(500):
        items.put(i)
        items.put(-i)
        expected += [i, -i]
        taken.append(items.get())
    while items.qsize():
        taken.append(items.get())
    assert taken == expected


def test_queue_empty(make_queue: Callable[[], Any]) -> None:
    items = make_queue()
    with pytest.raises(queue.Empty):
        items.get(block=False)
    with pytest.raises(queue.Empty):
        items.get(False, 10)  # block=False ignores the timeout
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        items.get(timeout=0.1)
    assert time.monotonic() - started >= 0.099
    with pytest.raises(queue.Empty):
        items.get(timeout=0)
    items.put(None)
    assert items.get(timeout=0) is None


def test_queue_bad_timeout(make_queue: Callable[[], Any]) -> None:
    items = make_queue()
    with pytest.raises(ValueError):
        items.get(timeout=-1)
    with pytest.raises(TypeError):
        items.get(timeout="1")
    # NaN is refused before the queue is looked at: the gated get used to
    # wait forever on an empty queue (NaN made a negative wait: no limit).
    items.put("waiting")
    with pytest.raises(ValueError):
        items.get(timeout=float("nan"))
    assert items.get(block=False) == "waiting"


def test_queue_wakes_a_waiting_get(make_queue: Callable[[], Any]) -> None:
    items = make_queue()
    got: List[Any] = []
    waiter = threading.Thread(target=lambda: got.append(items.get()))
    waiter.start()
    time.sleep(0.05)  # let it wait (the test passes either way)
    items.put("wake")
    waiter.join(10)
    assert got == ["wake"]
    waiter = threading.Thread(target=lambda: got.append(items.get(timeout=30)))
    waiter.start()
    items.put("timed")
    waiter.join(10)
    assert got == ["wake", "timed"]


def test_queue_between_threads(make_queue: Callable[[], Any]) -> None:
    """A producer and a consumer, many hand-offs: nothing lost, nothing reordered."""
    items = make_queue()
    count = 20000
    got: List[int] = []

    def consume() -> None:
        for _ in range(count):
            got.append(items.get(timeout=30))

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(count):
        items.put(i)
    consumer.join(60)
    assert got == list(range(count))


def test_message_queue_uses_the_gated_queue() -> None:
    assert messages.SimpleQueue is _speedups.SimpleQueue
    assert type(messages.MessageQueue(4)._items) is _speedups.SimpleQueue


# -- the gate -----------------------------------------------------------------------


def switches(tids: List[int]) -> int:
    """Voluntary context switches of some of this process's threads so far (Linux)."""
    total = 0
    for tid in tids:
        with open(f"/proc/self/task/{tid}/status") as file:
            for line in file:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts context switches in /proc (Linux)")
@pytest.mark.skipif(FREE_THREADED, reason="no GIL, no gate")
@pytest.mark.parametrize("wait", ["recv", "get"])
def test_woken_threads_wait_on_the_gate_not_for_the_gil(wait: str) -> None:
    """Threads woken together, each then needing the GIL for a while:
    without the gate, every one waiting for the GIL wakes up each switch
    interval to ask for it (about 55 times per thread here, with
    socket.recv or queue.SimpleQueue); behind the gate only the first in
    line does, and the others sleep until their turn (about 6)."""
    threads = 100
    pairs = [socket.socketpair() for _ in range(threads)]
    queues = [_speedups.SimpleQueue() for _ in range(threads)]
    ready = threading.Barrier(threads + 1)
    passed = threading.Barrier(threads + 1)
    tids: List[int] = []

    def body(index: int) -> None:
        tids.append(threading.get_native_id())
        ready.wait()
        if wait == "recv":
            _speedups.recv(pairs[index][0], 10)
        else:
            queues[index].get()
        busy_until = time.perf_counter() + 0.005  # the GIL held for 5 ms
        while time.perf_counter() < busy_until:
            pass
        passed.wait()  # alive until counted: /proc forgets a thread that ended
        ready.wait()

    workers = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    try:
        for worker in workers:
            worker.start()
        ready.wait(30)
        time.sleep(0.1)  # every worker blocks in its read or wait
        before = switches(tids)
        for _, two in pairs:
            two.send(b"x")
        for items in queues:
            items.put("x")
        passed.wait(30)
        woken = switches(tids) - before
        ready.wait(30)
        for worker in workers:
            worker.join(30)
    finally:
        for one, two in pairs:
            one.close()
            two.close()
    assert woken < 12 * threads, f"{woken} voluntary context switches for {threads} threads"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.skipif(FREE_THREADED, reason="no GIL, no gate")
def test_a_forked_child_gets_a_gate_of_its_own() -> None:
    """A thread of the parent holds the gate at the fork (back from a read,
    waiting for the GIL the forking thread holds): the child, which doesn't
    have that thread, must still get through the gate."""
    script = textwrap.dedent(
        """
        import os, socket, sys, threading, time
        from syncws import _speedups
        import syncws.accelerator  # registers the gate's reset at fork

        sys.setswitchinterval(30)  # the waiter never asks for the GIL
        one, two = socket.socketpair()
        started = threading.Event()

        def read():
            started.set()
            _speedups.recv(one, 1)  # returns, then waits at the GIL, holding the gate

        threading.Thread(target=read, daemon=True).start()
        started.wait()
        time.sleep(0.2)  # the reader blocks in recv (GIL let go)
        two.send(b"x")
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:  # the GIL held: the reader waits at the gate's far side
            pass
        pid = os.fork()
        if pid == 0:
            three, four = socket.socketpair()
            four.send(b"y")
            os._exit(0 if _speedups.recv(three, 1) == b"y" else 1)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    child = subprocess.run([sys.executable, "-c", script], timeout=30, capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
