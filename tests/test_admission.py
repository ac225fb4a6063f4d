"""Opening handshakes can't starve real clients (issue 11, point 5).

With ``max_connections=20``, sixty idle sockets used to make every real
client get 503: connections in their opening handshake counted against the
limit. Now they have their own pool (``max_pending_handshakes``), silent ones
wait without a thread and are dropped after ``first_byte_timeout``, and a full
pool drops its oldest handshake for a newcomer. Each test opens hostile
sockets on 127.0.0.1 and checks that a real client is served while they
are all still there: the server's timeouts are far longer than the test, so
no timeout can have made room. The deadlines themselves are tested with a
fake clock, one turn of the accept loop at a time. No assertion is about
elapsed time: a loaded machine makes everything slower, never wrong.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import selectors
import socket
import ssl
import struct
import threading
import weakref
from typing import Any, Deque, Iterator, List, Optional

import pytest

import syncws
import syncws.admission
from conftest import CERT_FILE, KEY_FILE, wait_for

HOST = "127.0.0.1"
# A bound on every wait, far above what anything takes; never an assertion.
WAIT = 20.0
# The server's timeouts where they must not be what lets a real client in:
# longer than any test.
NEVER = 600.0


def echo(ws: Any) -> None:
    for message in ws:
        ws.send(message)


@contextlib.contextmanager
def hostile_sockets(port: int, count: int, first: bytes = b"", dribble: bytes = b"") -> Iterator[List[socket.socket]]:
    """``count`` connections that send ``first``, then ``dribble`` a byte a second."""
    stop = threading.Event()
    socks = [socket.create_connection((HOST, port), timeout=5) for _ in range(count)]

    def trickle() -> None:
        position = 0
        while not stop.wait(1.0) and position < len(dribble):
            for sock in socks:
                try:
                    sock.send(dribble[position:position + 1])
                except OSError:
                    pass  # dropped by the server: that's allowed
            position += 1

    try:
        for sock in socks:
            if first:
                sock.sendall(first)
        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        yield socks
    finally:
        stop.set()
        for sock in socks:
            sock.close()


def echo_once(uri: str, **kwargs: Any) -> None:
    """A real client: opens, is echoed, closes."""
    with syncws.connect(uri, open_timeout=WAIT, **kwargs) as ws:
        ws.send("real")
        assert ws.recv(timeout=WAIT) == "real"


def still_open(socks: List[socket.socket]) -> bool:
    """Whether the server has closed none of ``socks`` (they have nothing to read)."""
    for sock in socks:
        timeout = sock.gettimeout()
        sock.setblocking(False)
        try:
            sock.recv(1)
        except BlockingIOError:
            continue
        finally:
            sock.settimeout(timeout)
        return False
    return True


def pending(server: Any) -> int:
    """Connections in their opening handshake (with a thread)."""
    return len(server._handshake_pool)


@pytest.mark.timeout(30)
def test_idle_and_slow_sockets_dont_starve_real_clients() -> None:
    with syncws.serve(echo, HOST, 0, max_connections=20, first_byte_timeout=NEVER, open_timeout=NEVER) as server:
        uri = f"ws://{HOST}:{server.port}/"
        with hostile_sockets(server.port, 60) as idle, hostile_sockets(
            server.port, 60, first=b"GET / HTTP/1.1\r\n", dribble=b"Host: slowloris.example\r\n"
        ) as slow:
            # The 60 slow ones are in their handshake, the 60 idle ones wait.
            assert wait_for(lambda: pending(server) == 60, timeout=WAIT), pending(server)
            # 19 real WebSockets open: the 20th still gets in.
            opened = [syncws.connect(uri, open_timeout=WAIT) for _ in range(19)]
            try:
                for _ in range(5):
                    echo_once(uri)
                    # A connection counts until the server has closed it.
                    assert wait_for(lambda: len(server._connections) == 19, timeout=WAIT)
                # Served beside them, not in the place of one of them.
                assert still_open(idle) and still_open(slow)
                assert pending(server) == 60
                # With 20 open, the next one gets 503 at once, as before.
                opened.append(syncws.connect(uri, open_timeout=WAIT))
                assert wait_for(lambda: len(server.connections) == 20, timeout=WAIT)
                with pytest.raises(syncws.InvalidStatusCode) as excinfo:
                    syncws.connect(uri, open_timeout=WAIT)
                assert excinfo.value.status_code == 503
            finally:
                for ws in opened:
                    ws.close()


@pytest.fixture
def tls_server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT_FILE, KEY_FILE)
    return context


@pytest.mark.timeout(30)
def test_clients_stalling_in_tls_dont_starve_real_clients(tls_server_context: ssl.SSLContext) -> None:
    client_context = ssl.create_default_context(cafile=CERT_FILE)
    with syncws.serve(
        echo, HOST, 0, max_connections=20, ssl=tls_server_context, first_byte_timeout=NEVER, open_timeout=NEVER,
    ) as server:
        uri = f"wss://localhost:{server.port}/"
        # A TLS record header announcing a ClientHello that never comes.
        partial_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
        with hostile_sockets(server.port, 60) as idle, hostile_sockets(
            server.port, 60, first=partial_hello, dribble=b"\x00" * 30
        ) as stalling:
            assert wait_for(lambda: pending(server) == 60, timeout=WAIT), pending(server)
            for _ in range(5):
                echo_once(uri, ssl=client_context)
            assert still_open(idle) and still_open(stalling)
            assert pending(server) == 60


@pytest.mark.timeout(30)
def test_full_pool_drops_its_oldest_handshake_for_a_newcomer() -> None:
    with syncws.serve(
        echo, HOST, 0, max_pending_handshakes=10, first_byte_timeout=NEVER, open_timeout=NEVER,
    ) as server:
        uri = f"ws://{HOST}:{server.port}/"
        with hostile_sockets(server.port, 30, first=b"GET / HTTP/1.1\r\n", dribble=b"X-Slow: 1\r\n" * 3) as slow:
            # Ten slow handshakes fill the pool; twenty more wait for a slot.
            assert wait_for(lambda: pending(server) == 10, timeout=WAIT), pending(server)
            # A real client (served before the older waiting ones) takes the
            # place of the oldest handshake once it is EVICTABLE_AFTER old
            # (test_a_full_pool_drops_its_oldest_handshake_once_evictable):
            # without that, it would wait for a slow one to end (never).
            for _ in range(3):
                echo_once(uri)
            assert pending(server) <= 10
            assert not still_open(slow)  # some were dropped for it


def test_a_full_pool_drops_its_oldest_handshake_once_evictable() -> None:
    now = 0.0
    pool = syncws.admission.HandshakePool(2, clock=lambda: now)
    logger = logging.getLogger("syncws.tests")
    cancelled: List[str] = []
    for key in ("oldest", "younger"):
        pool.add(key)
        pool.cancellable(key, lambda key=key: cancelled.append(key))
        now += 0.5
    assert len(pool) == 2
    # Full, and its oldest handshake is younger than EVICTABLE_AFTER: no room.
    now = syncws.admission.EVICTABLE_AFTER - 0.001
    assert not pool.make_room(logger) and cancelled == [] and len(pool) == 2
    # Once it is that old, it goes, and only it.
    now = syncws.admission.EVICTABLE_AFTER
    assert pool.make_room(logger) and cancelled == ["oldest"] and len(pool) == 1
    # A free slot: nothing goes.
    assert pool.make_room(logger) and cancelled == ["oldest"]
    pool.add("not yet cancellable")  # its thread hasn't said how to cancel it yet
    now = 100.0
    assert pool.make_room(logger) and cancelled == ["oldest", "younger"]
    pool.add("newest")
    # The oldest can't be cancelled yet: it stays, however old, and the newcomer waits.
    assert not pool.make_room(logger) and len(pool) == 2


class SteppedSelector:
    """A selector the test runs the accept loop with one turn at a time.

    Each ``select()`` of the loop waits for :meth:`step`, then looks without
    waiting: what the test did before the step is what the loop finds.
    """

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        #: The timeout of every select(): when the loop would wake up on its own.
        self.timeouts: List[Any] = []
        self._go = threading.Semaphore(0)
        self._at_select = threading.Semaphore(0)

    def select(self, timeout: Any = None) -> Any:
        self.timeouts.append(timeout)
        self._at_select.release()
        if not self._go.acquire(timeout=WAIT):
            raise OSError("the test stopped stepping")  # ends the loop as a closed listener does
        return self.selector.select(0)

    def wait_turn(self) -> None:
        """Wait until the loop is at its next select()."""
        assert self._at_select.acquire(timeout=WAIT)

    def release(self) -> None:
        """Let the loop go on from its select()."""
        self._go.release()

    def step(self) -> None:
        """Let the loop run one turn, until its next select()."""
        self.release()
        self.wait_turn()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.selector, name)


@pytest.mark.timeout(30)
def test_silent_connection_dropped_at_first_byte_timeout_not_before() -> None:
    listener = socket.create_server((HOST, 0))
    wakeup, other = socket.socketpair()
    stepped = SteppedSelector(syncws.admission.watch(listener, wakeup))
    now = 0.0
    started: List[Any] = []
    closing = False
    loop = threading.Thread(target=syncws.admission.accept_loop, args=(listener,), kwargs=dict(
        selector=stepped, wakeup=wakeup, pool=syncws.admission.HandshakePool(4), first_byte_timeout=0.3,
        queue_timeout=None, is_closing=lambda: closing, at_capacity=lambda: False,
        refuse_busy=lambda sock: None, start_handshake=lambda sock, address: started.append(address),
        logger=logging.getLogger("syncws.tests"), clock=lambda: now,
    ))
    loop.start()
    idle = socket.create_connection(listener.getsockname(), timeout=WAIT)
    try:
        stepped.wait_turn()
        assert select.select([listener], [], [], WAIT)[0]  # the connection waits to be accepted
        stepped.step()  # accepted at 0.0, silent: watched, without a thread
        assert [key.fileobj.getpeername() for key in list(stepped.get_map().values())
                if key.fileobj not in (listener, wakeup)] == [idle.getsockname()]
        # The loop sleeps until the connection's deadline, 0.3 s after its accept.
        assert stepped.timeouts[-1] == pytest.approx(0.3)
        now = 0.299
        stepped.step()
        assert stepped.timeouts[-1] == pytest.approx(0.001)
        assert still_open([idle])  # not before its time
        now = 0.3
        stepped.step()
        assert idle.recv(1) == b""  # dropped at its deadline
        assert started == []  # never given a thread
        assert stepped.timeouts[-1] is None  # nothing left to wait for
    finally:
        closing = True
        stepped.release()
        loop.join(WAIT)
        other.close()
        idle.close()
        listener.close()
    assert not loop.is_alive()


@pytest.mark.timeout(15)
def test_silent_connection_dropped_after_first_byte_timeout_without_a_thread() -> None:
    before = {t.name for t in threading.enumerate()}
    with syncws.serve(echo, HOST, 0, first_byte_timeout=0.3, open_timeout=NEVER) as server:
        with socket.create_connection((HOST, server.port), timeout=WAIT) as idle:
            # No thread for a connection that has sent nothing.
            assert {t.name for t in threading.enumerate()} - before <= {
                t.name for t in threading.enumerate() if t.name.startswith(("syncws-accept", "syncws-timers"))
            }
            # Dropped by first_byte_timeout: open_timeout is far away.
            assert idle.recv(1) == b""
        echo_once(f"ws://{HOST}:{server.port}/")


@pytest.mark.timeout(15)
def test_silent_connections_beyond_their_limit_drop_the_oldest() -> None:
    limit = 2 * syncws.admission.SILENT_PER_SLOT
    with syncws.serve(echo, HOST, 0, max_pending_handshakes=2, first_byte_timeout=NEVER, open_timeout=NEVER) as server:
        socks = [socket.create_connection((HOST, server.port), timeout=WAIT) for _ in range(limit + 3)]
        try:
            # The three oldest are dropped to keep the limit.
            for sock in socks[:3]:
                assert sock.recv(1) == b""
            assert still_open(socks[3:])
            echo_once(f"ws://{HOST}:{server.port}/")
        finally:
            for sock in socks:
                sock.close()


def test_max_pending_handshakes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pending_handshakes"):
        syncws.serve(echo, HOST, 0, max_pending_handshakes=0)


def test_a_removed_handshake_lets_go_of_its_connection_at_once() -> None:
    """The accept thread adds a handshake, its connection thread removes it.

    On a free-threaded CPython, an object that one thread made and another
    lets go of is freed only when its maker next runs Python; an accept
    thread waiting for the next client doesn't. The entry may wait for it,
    but not the connection its cancel callback refers to.
    """

    class Connection:
        def cancel(self) -> None:
            pass

    pool = syncws.admission.HandshakePool(10)
    added = threading.Event()
    release = threading.Event()

    def accept_thread() -> None:  # adds, then waits as an idle accept thread does
        pool.add("sock")
        added.set()
        release.wait(10)

    adder = threading.Thread(target=accept_thread)
    adder.start()
    try:
        assert added.wait(10)
        connection = Connection()
        pool.cancellable("sock", connection.cancel)
        gone = weakref.ref(connection)
        pool.remove("sock")
        del connection
        assert gone() is None and len(pool) == 0
    finally:
        release.set()
        adder.join(10)


@pytest.mark.timeout(15)
def test_handshake_completing_at_max_connections_is_closed_with_1013() -> None:
    # Handshakes don't count against max_connections, so one may complete
    # when the last place has just been taken: it is told to come back.
    with syncws.serve(echo, HOST, 0, max_connections=1) as server:
        with socket.create_connection((HOST, server.port), timeout=5) as late:
            late.sendall(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            )
            assert wait_for(lambda: pending(server) == 1)
            with syncws.connect(f"ws://{HOST}:{server.port}/", open_timeout=5) as first:
                # The server counts a connection just after sending its 101.
                assert wait_for(lambda: len(server._connections) == 1)
                late.sendall(b"\r\n")  # the end of the head
                data = b""
                while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 8:
                    chunk = late.recv(4096)
                    assert chunk, data
                    data += chunk
                assert data.startswith(b"HTTP/1.1 101 ")
                frame = data[data.index(b"\r\n\r\n") + 4:]
                assert frame[0] == 0x88  # a close frame
                assert int.from_bytes(frame[2:4], "big") == 1013
                first.send("still served")
                assert first.recv(timeout=5) == "still served"


def test_accept_loop_of_a_server_closed_before_it_ran_ends_quietly() -> None:
    # The server's close() can run before its accept thread starts: the
    # loop then finds its listener closed, and ends without raising (an
    # exception in a thread) and without leaking its end of the wake-up pair.
    listener = socket.create_server(("127.0.0.1", 0))
    wakeup, other = socket.socketpair()
    selector = syncws.admission.watch(listener, wakeup)
    listener.close()
    with other:
        syncws.admission.accept_loop(
            listener, selector=selector, wakeup=wakeup, pool=syncws.admission.HandshakePool(4),
            first_byte_timeout=None, queue_timeout=None,
            is_closing=lambda: True, at_capacity=lambda: False,
            refuse_busy=lambda sock: None, start_handshake=lambda sock, address: None,
            logger=logging.getLogger("syncws.tests"),
        )
    assert wakeup.fileno() == -1
    assert selector.get_map() is None  # closed


def _epoll_descriptors() -> int:
    return sum(os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventpoll]" for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}"))


@pytest.mark.skipif(not os.path.exists("/proc/self/fd") or not hasattr(selectors, "EpollSelector"),
                    reason="Linux: counts epoll descriptors")
def test_serve_holds_its_accept_selector_once_it_returns() -> None:
    """The accept thread's selector is made before serve() returns, so the
    server's descriptors are all there then (a test counting descriptors
    around it counted one too few when the thread hadn't run yet), and
    closing the server closes it."""
    before = _epoll_descriptors()
    server = syncws.serve(lambda ws: None, HOST, 0, compression=None)
    try:
        assert _epoll_descriptors() == before + 1
    finally:
        server.close()
        server.wait_closed(timeout=10)
    assert wait_for(lambda: _epoll_descriptors() == before, timeout=5)


def accept_queue(listener: socket.socket) -> int:
    """How many connections wait in ``listener``'s queue (Linux: tcpi_unacked of a listener)."""
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
    return int(struct.unpack_from("I", info, 24)[0])


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="Linux: reads the length of a listener's queue")
def test_an_accept_batch_takes_the_whole_backlog_without_an_empty_accept() -> None:
    """After the first accept(), poll() says whether another is waiting:
    accept() is never called on an empty backlog (its BlockingIOError was an
    exception per connection when clients come one at a time)."""
    listener = socket.create_server((HOST, 0))
    listener.setblocking(False)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    accepted: List[socket.socket] = []
    try:
        for client in clients:
            client.sendall(b"G")
        probe = syncws.admission._backlog_probe(listener)
        # The kernel may queue a connection after connect() returned (when
        # softirqs run late, under load): the batch sees those that are there.
        assert wait_for(lambda: accept_queue(listener) == 3, timeout=WAIT)
        accepts = 0
        real_accept = listener.accept

        class Listener:
            def accept(self) -> Any:
                nonlocal accepts
                accepts += 1
                sock, address = real_accept()
                assert select.select([sock], [], [], WAIT)[0]  # its byte has arrived
                return sock, address

        waiting: Deque[Any] = collections.deque()
        syncws.admission._accept_batch(
            Listener(), None, {}, waiting, None, lambda: False, lambda sock: None,  # type: ignore[arg-type]
            logging.getLogger("test"), lambda sock: sock.close(), probe,
        )
        accepted = [entry[0] for entry in waiting]
        assert len(accepted) == 3 and accepts == 3
        assert not probe()
    finally:
        for sock in clients + accepted:
            sock.close()
        listener.close()


class _GatedPool:
    """A pool that is full until ``open`` is set, then has a slot for everyone."""

    size = 1

    def __init__(self) -> None:
        self.open = threading.Event()

    def make_room(self, logger: logging.Logger) -> bool:
        return self.open.is_set()


@pytest.mark.timeout(15)
def test_waiting_connections_are_served_newest_accepted_first() -> None:
    """Newest first means newest accepted, whatever order the loop noticed
    their first bytes in: a connection accepted early whose first byte the
    loop saw only after accepting a newer one was served before it. A loaded
    accept thread met that in test_full_pool_drops_its_oldest_handshake_for_a_newcomer:
    the real client came after ten slow handshakes and waited for them."""
    listener = socket.create_server((HOST, 0))
    wakeup, other = socket.socketpair()
    selector = syncws.admission.watch(listener, wakeup)
    pool = _GatedPool()
    accepted: "collections.deque[threading.Event]" = collections.deque(threading.Event() for _ in range(3))
    gate = threading.Event()
    served: List[Any] = []
    closing = False

    def at_capacity() -> bool:
        event = accepted.popleft()
        event.set()
        if len(accepted) == 1:  # the second connection: the loop stalls here
            gate.wait(10)
        return False

    def start_handshake(sock: socket.socket, address: Any) -> None:
        served.append(address)
        sock.close()

    events = list(accepted)
    loop = threading.Thread(target=syncws.admission.accept_loop, args=(listener,), kwargs=dict(
        selector=selector, wakeup=wakeup, pool=pool, first_byte_timeout=None, queue_timeout=None,
        is_closing=lambda: closing, at_capacity=at_capacity, refuse_busy=lambda sock: None,
        start_handshake=start_handshake, logger=logging.getLogger("syncws.tests"),
    ))
    loop.start()
    older = socket.create_connection(listener.getsockname())
    staller = newer = None
    try:
        assert events[0].wait(5)  # accepted, silent
        staller = socket.create_connection(listener.getsockname())
        assert events[1].wait(5)  # the loop is stalled in its accept batch
        older.sendall(b"G")
        newer = socket.create_connection(listener.getsockname())
        newer.sendall(b"G")
        gate.set()  # the batch goes on: the newer one is accepted with its byte there
        assert events[2].wait(5)

        def registered() -> Optional[List[Any]]:
            try:
                keys = list(selector.get_map().values())
            except RuntimeError:  # the loop's thread changed the map meanwhile (seen on 3.13t)
                return None
            return [key.fileobj.getpeername() for key in keys if key.fileobj not in (listener, wakeup)]

        # The older one's byte noticed too: only the silent staller is left to watch.
        assert wait_for(lambda: registered() == [staller.getsockname()]), registered()
        pool.open.set()
        assert wait_for(lambda: len(served) == 2)
        assert served == [newer.getsockname(), older.getsockname()]
    finally:
        closing = True
        other.send(b"\0")
        loop.join(5)
        other.close()
        for sock in (older, staller, newer):
            if sock is not None:
                sock.close()
        listener.close()
