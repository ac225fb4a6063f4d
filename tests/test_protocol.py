"""The connection (syncws.protocol) against independent peers.

Peers: the ``websockets`` sync and asyncio servers, and a raw TCP server that
speaks WebSocket by hand (tests/conftest.py) to send what a well-behaved peer
never would. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import functools
import queue
import select
import socket
import struct
import threading
import time
import uuid

import pytest
from websockets.exceptions import ConnectionClosed as WSConnectionClosed

import syncws
from syncws import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from syncws import sockopts, threadpool
from syncws.transport import Transport
from syncws.writer import Writer

from conftest import RawConn, close_payload, fd_count, frame, wait_for

pytestmark = pytest.mark.timeout(20)


# -- handlers for the websockets sync server ------------------------------------


def echo(ws):
    try:
        for message in ws:
            ws.send(message)
    except WSConnectionClosed:
        pass


def wait_client_close(ws, timeout=10):
    """Read until the client closes; return the close frame it sent, or None."""
    try:
        while True:
            ws.recv(timeout=timeout)
    except WSConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else None
    except TimeoutError:
        return None


def raw_close_reply(conn, code=1000):
    """Raw handler tail: wait for the client's close frame and answer it."""
    received = conn.read_close()
    conn.send_frame(0x8, close_payload(code))
    return received


# -- receiving -----------------------------------------------------------------


def test_recv_text_and_binary(ws_serve):
    def handler(ws):
        ws.send("hello")
        ws.send(b"\x00\x01\xff")
        ws.send("")
        ws.send(b"")
        wait_client_close(ws)

    with syncws.connect(ws_serve(handler)) as ws:
        first, second, third, fourth = (ws.recv(timeout=5) for _ in range(4))
    assert first == "hello" and type(first) is str
    assert second == b"\x00\x01\xff" and type(second) is bytes
    assert third == "" and type(third) is str
    assert fourth == b"" and type(fourth) is bytes


def test_recv_timeout(ws_serve):
    with syncws.connect(ws_serve(echo)) as ws:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.05)
        assert 0.04 <= time.monotonic() - started < 1
        # The connection is still usable after a timeout.
        ws.send("after")
        assert ws.recv(timeout=5) == "after"


def test_recv_timeout_zero_polls(ws_serve):
    with syncws.connect(ws_serve(echo)) as ws:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0)
        assert time.monotonic() - started < 0.05
        ws.send("polled")
        assert wait_for(lambda: ws.stats.queued >= 1)
        assert ws.recv(timeout=0) == "polled"


@pytest.mark.parametrize("code", [1000, 1001])
def test_messages_before_normal_close_then_closed_ok(ws_serve, code):
    def handler(ws):
        for i in range(3):
            ws.send(f"m{i}")
        ws.close(code, "done")

    uri = ws_serve(handler)
    # With a full queue the reader stops reading, so the close comes later.
    with syncws.connect(uri, max_queue=2) as ws:
        assert [ws.recv(timeout=5) for _ in range(3)] == ["m0", "m1", "m2"]
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=5)
    ws = syncws.connect(uri)
    ws.wait_closed(5)  # every message stays available after the close
    assert [ws.recv(timeout=1) for _ in range(3)] == ["m0", "m1", "m2"]
    with pytest.raises(ConnectionClosedOK) as excinfo:
        ws.recv(timeout=1)
    assert excinfo.value.code == code
    assert excinfo.value.reason == "done"
    assert ws.close_code == code and ws.close_reason == "done"
    # Raised again, not a hang, on later calls.
    with pytest.raises(ConnectionClosedOK):
        ws.recv()


@pytest.mark.parametrize("code", [1011, 4000])
def test_messages_before_error_close_then_closed_error(ws_serve, code):
    def handler(ws):
        ws.send("first")
        ws.send(b"second")
        ws.close(code, "oops")

    with syncws.connect(ws_serve(handler)) as ws:
        assert ws.recv(timeout=5) == "first"
        assert ws.recv(timeout=5) == b"second"
        with pytest.raises(ConnectionClosedError) as excinfo:
            ws.recv(timeout=5)
    assert excinfo.value.code == code
    assert excinfo.value.reason == "oops"
    assert ws.close_code == code


def test_iteration_ends_quietly_on_normal_close(ws_serve):
    def handler(ws):
        for i in range(5):
            ws.send(str(i))
        ws.close(1000)

    with syncws.connect(ws_serve(handler)) as ws:
        assert list(ws) == ["0", "1", "2", "3", "4"]


def test_iteration_raises_on_error_close(ws_serve):
    def handler(ws):
        ws.send("a")
        ws.close(4000, "custom")

    received = []
    with syncws.connect(ws_serve(handler)) as ws:
        with pytest.raises(ConnectionClosedError) as excinfo:
            for message in ws:
                received.append(message)
    assert received == ["a"]
    assert excinfo.value.code == 4000


# -- closing -------------------------------------------------------------------


def test_client_close_code_seen_by_server(ws_serve):
    results = queue.Queue()
    uri = ws_serve(lambda ws: results.put(wait_client_close(ws)))
    ws = syncws.connect(uri)
    assert ws.close_code is None and ws.close_sent is None and ws.close_rcvd is None
    ws.close(4001, "bye")
    assert results.get(timeout=5) == (4001, "bye")
    assert ws.close_sent == (4001, "bye")
    assert ws.close_rcvd == (4001, "bye")  # the server echoes the code
    assert ws.state_name == "CLOSED"
    assert ws.close_code == 4001
    ws.close()  # idempotent
    with pytest.raises(ConnectionClosed):
        ws.send("late")


def test_server_close_going_away(ws_serve):
    def handler(ws):
        ws.close(1001, "restarting")

    ws = syncws.connect(ws_serve(handler))
    ws.wait_closed(5)
    assert ws.close_code == 1001
    assert ws.close_reason == "restarting"
    assert ws.close_rcvd == (1001, "restarting")
    assert ws.close_sent == (1001, "restarting")  # echoed
    with pytest.raises(ConnectionClosedOK) as excinfo:
        ws.recv(timeout=1)
    assert excinfo.value.code == 1001


def test_vanished_peer_is_1006(ws_serve):
    def handler(ws):
        ws.send("last words")
        ws.socket.shutdown(socket.SHUT_RDWR)  # TCP goes, no close frame

    ws = syncws.connect(ws_serve(handler))
    assert ws.recv(timeout=5) == "last words"
    with pytest.raises(ConnectionClosedError) as excinfo:
        ws.recv(timeout=5)
    assert excinfo.value.code == 1006
    ws.wait_closed(5)
    assert ws.close_code == 1006
    assert ws.close_rcvd is None
    ws.close()  # closing a dead connection neither hangs nor raises


def test_recv_in_other_thread_woken_by_close(ws_serve):
    ws = syncws.connect(ws_serve(echo))
    outcome = []
    done = threading.Event()

    def reader():
        try:
            outcome.append(ws.recv())
        except BaseException as exc:
            outcome.append(exc)
        done.set()

    thread = threading.Thread(target=reader)
    thread.start()
    started = time.monotonic()
    ws.close()
    assert done.wait(2), "recv() wasn't woken by close()"
    assert time.monotonic() - started < 2
    thread.join(2)
    assert isinstance(outcome[0], ConnectionClosedOK), outcome
    assert outcome[0].code == 1000


def test_closing_state_while_waiting_for_peer(raw_serve):
    got_close = threading.Event()
    release = threading.Event()

    def handler(conn):
        conn.read_close()
        got_close.set()
        release.wait(10)
        conn.send_frame(0x8, close_payload(1000))

    ws = syncws.connect(raw_serve(handler), ping_interval=None)
    assert ws.open and ws.state_name == "OPEN"
    closer = threading.Thread(target=ws.close)
    closer.start()
    assert got_close.wait(5)
    assert ws.state_name == "CLOSING"
    assert not ws.open
    assert ws.close_code is None  # not closed yet
    release.set()
    closer.join(5)
    assert not closer.is_alive()
    assert ws.state_name == "CLOSED" and ws.closed
    assert ws.close_code == 1000


def test_peer_close_without_code_is_1005(raw_serve):
    results = queue.Queue()

    def handler(conn):
        conn.send(b"".join([frame(0x1, b"before"), frame(0x8)]))
        results.put(conn.read_close())

    with syncws.connect(raw_serve(handler), ping_interval=None) as ws:
        assert list(ws) == ["before"]  # a normal close: iteration ends quietly
        with pytest.raises(ConnectionClosedOK) as excinfo:
            ws.recv(timeout=5)
        assert excinfo.value.code == 1005
    assert results.get(timeout=5) == (1005, "")  # answered with an empty close frame
    assert ws.close_code == 1005


def test_close_validates_arguments(ws_serve):
    with syncws.connect(ws_serve(echo)) as ws:
        for code, reason in [(999, ""), (1005, ""), (1006, ""), (5000, ""), (1000, "x" * 124)]:
            with pytest.raises(ValueError):
                ws.close(code, reason)
        assert ws.open  # nothing was sent
        ws.send("still open")
        assert ws.recv(timeout=5) == "still open"
        ws.close(1000, "é" * 61)  # 122 bytes: allowed
    assert ws.close_sent == (1000, "é" * 61)


def test_close_when_peer_never_answers(raw_serve):
    results = queue.Queue()

    def handler(conn):
        results.put(conn.read_close())
        try:
            while conn.sock.recv(65536):  # never answers, holds TCP open
                pass
        except OSError:
            pass

    ws = syncws.connect(raw_serve(handler), ping_interval=None, close_timeout=0.5)
    started = time.monotonic()
    ws.close(4002, "leaving")
    assert time.monotonic() - started < 2.5
    assert results.get(timeout=5) == (4002, "leaving")
    assert ws.state_name == "CLOSED"
    assert ws.close_rcvd is None
    assert ws.close_code == 1006


def test_close_while_send_blocked_on_stalled_peer(raw_serve):
    """close() from another thread must not wait for a stalled send's write_timeout."""
    stop = threading.Event()

    def handler(conn):
        stop.wait(15)  # never reads

    ws = syncws.connect(raw_serve(handler), ping_interval=None, close_timeout=0.5, write_timeout=30)
    outcome = []

    def sender():
        try:
            for _ in range(64):
                ws.send(b"\x00" * MIB)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=sender)
    thread.start()
    # The sender is stuck once the socket buffers are full: bytes_out stops growing.
    sizes = []
    assert wait_for(lambda: sizes.append(ws.stats.bytes_out) or (len(sizes) > 20 and sizes[-1] == sizes[-20]), timeout=5)
    assert thread.is_alive()
    started = time.monotonic()
    closer = threading.Thread(target=ws.close)
    closer.start()
    closer.join(3)
    stop.set()
    assert not closer.is_alive(), "close() waited for the stalled send"
    assert time.monotonic() - started < 3
    thread.join(5)
    assert not thread.is_alive()
    assert outcome and isinstance(outcome[0], (ConnectionClosed, TimeoutError)), outcome
    assert ws.state_name == "CLOSED"


def test_close_that_waits_for_a_send_keeps_to_close_timeout(raw_serve):
    """close() waiting for a send to let go of the writer: the closing deadline counts from the call.

    It counted from when the close frame went out: close() could take the
    wait for the send plus close_timeout, about twice close_timeout.
    """
    may_read = threading.Event()

    def handler(conn):
        assert may_read.wait(10)
        try:
            while conn.sock.recv(MIB):  # reads everything, never answers the close frame
                pass
        except OSError:
            pass

    ws = syncws.connect(raw_serve(handler), ping_interval=None, close_timeout=3, write_timeout=30, compression=None)
    sender = threading.Thread(target=ws.send, args=(b"\x00" * 64 * MIB,))  # the peer reads it all, later
    sender.start()
    sizes = []  # the send is stuck once the socket buffers are full: bytes_out stops growing
    assert wait_for(lambda: sizes.append(ws.stats.bytes_out) or (len(sizes) > 20 and sizes[-1] == sizes[-20]), timeout=5)
    entered = threading.Event()
    closer = threading.Thread(target=lambda: (entered.set(), ws.close()))
    closer.start()
    assert entered.wait(5)
    threading.Event().wait(1)  # close() waits for the writer meanwhile
    released = time.monotonic()
    may_read.set()
    assert wait_for(lambda: ws._closing.timer is not None, timeout=10)
    assert ws._closing.timer.when <= released + 3
    closer.join(10)
    sender.join(10)
    assert not closer.is_alive() and not sender.is_alive()
    assert ws.close_code == 1006


@pytest.mark.parametrize("bad", [False, True], ids=["peer-closes", "peer-breaks-protocol"])
def test_closing_handshake_with_a_send_blocked_on_the_peer_ends_within_close_timeout(raw_serve, bad):
    """The peer's close frame (or a protocol error) while a send waits on it arms the closing deadline.

    The close reply waits behind the blocked send; without a deadline the
    connection lasted as long as that send (forever, with no write_timeout).
    """
    stop = threading.Event()

    def handler(conn):
        # The message's first bytes: its send() holds the writer, and the
        # socket buffers fill up, as this peer never reads.
        select.select([conn.sock], [], [], 10)
        conn.send(frame(0x1, b"\xff") if bad else frame(0x8, close_payload(1001, "bye")))
        stop.wait(15)

    ws = syncws.connect(raw_serve(handler), ping_interval=None, close_timeout=0.5, write_timeout=None)
    outcome = []

    def sender():
        try:
            ws.send(b"\x00" * 64 * MIB)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        thread.join(10)
        assert not thread.is_alive(), "the send outlived the closing handshake's deadline"
        assert outcome and isinstance(outcome[0], ConnectionClosed), outcome
        ws.wait_closed(5)
        assert ws.close_rcvd == (None if bad else (1001, "bye"))
    finally:
        stop.set()
        thread.join(10)


def test_a_close_reply_that_never_went_out_is_not_reported_as_sent_nor_clean(raw_serve, caplog):
    """The peer closes with 1000 and stops reading, our socket buffer full: our reply can't go out.

    The connection recorded the reply as sent, closed with 1000 and raised
    ConnectionClosedOK, and logged a clean close, though the closing
    handshake never finished: the peer never got our close frame.
    """
    stop = threading.Event()

    def handler(conn):
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # The message's first bytes: its send() holds the writer, and the
        # socket buffers fill up, as this peer reads no more.
        select.select([conn.sock], [], [], 10)
        conn.send(frame(0x8, close_payload(1000, "done")))
        stop.wait(15)

    caplog.set_level("INFO", logger="syncws.client")
    ws = syncws.connect(raw_serve(handler), ping_interval=None, close_timeout=0.5, write_timeout=1)
    try:
        with pytest.raises(ConnectionClosedError) as sending:
            ws.send(b"\x00" * 64 * MIB)
        ws.wait_closed(5)
        assert ws.close_rcvd == (1000, "done")
        assert ws.close_sent is None
        assert ws.close_code == sending.value.code == 1006
        assert ws.close_reason == sending.value.reason
        assert ws.close_reason.startswith("received 1000 (OK), but our close frame wasn't sent: "), ws.close_reason
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=5)
        with pytest.raises(ConnectionClosedError):
            next(iter(ws))
        closed = [record.getMessage() for record in caplog.records if " closed: " in record.getMessage()]
        assert len(closed) == 1 and " closed: 1006 (abnormal closure) received 1000 (OK), but our" in closed[0]
    finally:
        stop.set()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
def test_a_close_reply_blocked_on_a_full_socket_keeps_to_close_timeout(tmp_path):
    """No send holds the writer, but the socket buffer is full: the reader thread's reply blocks.

    The reply's write waited for write_timeout (forever without one): the
    closing deadline was armed only after it. Over a Unix socket, whose
    every write needs room in the send buffer (TCP appends a small one to
    the last segment queued), shrinking the buffer below what waits in it
    makes that write block.
    """
    path = str(tmp_path / "ws.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    filled = threading.Event()
    stop = threading.Event()

    def peer():
        sock, _ = listener.accept()
        with sock:
            RawConn(sock).handshake()
            if filled.wait(10):  # reads nothing more
                sock.sendall(frame(0x8, close_payload(1000, "bye")))
                stop.wait(15)

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    ws = syncws.unix_connect(path, ping_interval=None, close_timeout=0.5, write_timeout=None, compression=None)
    try:
        while ws.transport.writable_now():  # sends that don't block
            ws.send(b"\x00" * 1024)
        ws.transport.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
        filled.set()
        try:
            ws.wait_closed(10)
        finally:
            ws.abort("the test is over")
        assert ws.close_rcvd == (1000, "bye") and ws.close_sent is None
        assert ws.close_code == 1006
        assert ws.close_reason.endswith("wasn't sent: the closing handshake timed out"), ws.close_reason
    finally:
        stop.set()
        thread.join(10)
        listener.close()


# -- protocol errors from the peer ----------------------------------------------

MIB = 2**20


@pytest.mark.parametrize(
    "bad, kwargs, code",
    [
        pytest.param(frame(0x1, b"hi", mask=b"abcd"), {}, 1002, id="masked-server-frame"),
        pytest.param(frame(0x1, b"\xff\xfe"), {}, 1007, id="invalid-utf8"),
        pytest.param(frame(0x1, b"\xce", fin=False) + frame(0x0, b"\xff"), {}, 1007, id="invalid-utf8-fragmented"),
        pytest.param(frame(0x3), {}, 1002, id="reserved-opcode"),
        pytest.param(frame(0x9, b"x", fin=False), {}, 1002, id="fragmented-control-frame"),
        pytest.param(frame(0x0, b"x"), {}, 1002, id="continuation-without-start"),
        pytest.param(bytes([0xC1, 0x01]) + b"x", {"compression": None}, 1002, id="rsv1-not-negotiated"),
        pytest.param(frame(0x9, b"x" * 126), {}, 1002, id="control-frame-too-long"),
        pytest.param(frame(0x8, close_payload(999)), {}, 1002, id="close-invalid-code"),
        pytest.param(frame(0x8, close_payload(1005)), {}, 1002, id="close-code-1005-on-wire"),
        pytest.param(frame(0x8, b"\x03"), {}, 1002, id="close-one-byte-payload"),
        pytest.param(frame(0x8, close_payload(1000) + b"\xff"), {}, 1007, id="close-reason-not-utf8"),
        pytest.param(frame(0x1, b"a", fin=False) + frame(0x1, b"b"), {}, 1002, id="text-inside-fragmented"),
        pytest.param(frame(0x2, b"x" * 2000), {"max_size": 1000}, 1009, id="too-big"),
        pytest.param(
            frame(0x2, b"x" * 600, fin=False) + frame(0x0, b"x" * 600), {"max_size": 1000}, 1009,
            id="too-big-fragmented",
        ),
    ],
)
def test_protocol_error_closes_with_code(raw_serve, bad, kwargs, code):
    results = queue.Queue()

    def handler(conn):
        conn.send(bad)
        results.put(conn.read_close())
        conn.send_frame(0x8, close_payload(code))

    ws = syncws.connect(raw_serve(handler), ping_interval=None, **kwargs)
    with pytest.raises(ConnectionClosedError) as excinfo:
        ws.recv(timeout=5)
    # We failed the connection (RFC 6455 §7.1.7): the peer's answering close
    # frame isn't processed, so the close code is 1006, the reason says what
    # the peer did, and our close frame is in close_sent.
    assert excinfo.value.code == 1006
    assert excinfo.value.reason == ws.close_sent[1] != ""
    assert results.get(timeout=5)[0] == code
    assert ws.close_sent is not None and ws.close_sent[0] == code
    ws.wait_closed(5)
    assert (ws.close_code, ws.close_reason) == (excinfo.value.code, excinfo.value.reason)
    ws.close()


def test_too_big_closes_before_payload_arrives(raw_serve):
    """A frame announcing 100 MiB is refused from its header alone."""
    results = queue.Queue()

    def handler(conn):
        conn.sock.settimeout(3)
        conn.send(frame(0x2, b"", length=100 * MIB))  # the header only
        started = time.monotonic()
        results.put((conn.read_close(), time.monotonic() - started))

    ws = syncws.connect(raw_serve(handler), ping_interval=None)
    (code, _), elapsed = results.get(timeout=5)
    assert code == 1009
    assert elapsed < 1
    with pytest.raises(ConnectionClosedError) as excinfo:
        ws.recv(timeout=5)
    assert excinfo.value.code == 1006  # we failed it: the cause is the reason
    assert "max_size" in excinfo.value.reason
    assert ws.close_sent[0] == 1009
    ws.close()


def test_utf8_character_split_across_frames(raw_serve):
    def handler(conn):
        conn.send(frame(0x1, "é".encode()[:1], fin=False) + frame(0x0, "é".encode()[1:] + b"!"))
        raw_close_reply(conn)

    with syncws.connect(raw_serve(handler), ping_interval=None) as ws:
        assert ws.recv(timeout=5) == "é!"


# -- sending -------------------------------------------------------------------


def fragment_recorder(results):
    """A handler reporting each message as (type, fragments) via recv_streaming."""

    def handler(ws):
        try:
            while True:
                fragments = list(ws.recv_streaming())
                results.put(fragments)
        except WSConnectionClosed:
            pass

    return handler


def test_send_types(ws_serve):
    results = queue.Queue()
    with syncws.connect(ws_serve(fragment_recorder(results))) as ws:
        ws.send("text é")
        ws.send(b"bytes")
        ws.send(bytearray(b"bytearray"))
        ws.send(memoryview(b"memoryview"))
        ws.send(memoryview(b"..strided..")[::2])
        got = [results.get(timeout=5) for _ in range(5)]
    assert got == [["text é"], [b"bytes"], [b"bytearray"], [b"memoryview"], [b".srdd."]]
    assert type(got[0][0]) is str
    assert all(type(message[0]) is bytes for message in got[1:])


@pytest.mark.parametrize("compression", ["deflate", None])
def test_send_iterable_is_fragmented(ws_serve, compression):
    results = queue.Queue()
    with syncws.connect(ws_serve(fragment_recorder(results)), compression=compression) as ws:
        ws.send(["ab", "cd", "é"])
        ws.send([b"12", bytearray(b"34"), memoryview(b"56")])
        ws.send(chunk for chunk in [b"gen", b"erator"])
        assert results.get(timeout=5) == ["ab", "cd", "é"]
        assert results.get(timeout=5) == [b"12", b"34", b"56"]
        assert results.get(timeout=5) == [b"gen", b"erator"]


@pytest.mark.parametrize("bad", [42, None, 1.5, {"a": 1}, object()], ids=repr)
def test_send_wrong_type_raises_and_keeps_connection(ws_serve, bad):
    results = queue.Queue()
    with syncws.connect(ws_serve(fragment_recorder(results))) as ws:
        with pytest.raises(TypeError):
            ws.send(bad)
        assert ws.open
        ws.send("still fine")
        assert results.get(timeout=5) == ["still fine"]


@pytest.mark.parametrize("compression", ["deflate", None])
def test_send_lone_surrogate_raises_and_keeps_connection(ws_serve, compression):
    results = queue.Queue()
    with syncws.connect(ws_serve(fragment_recorder(results)), compression=compression) as ws:
        with pytest.raises(UnicodeEncodeError):
            ws.send("a\ud800")
        assert ws.open
        ws.send("still fine \u00e9")
        assert results.get(timeout=5) == ["still fine \u00e9"]


def test_send_iterable_of_wrong_type_raises_before_sending(ws_serve):
    """Nothing went out yet: like websockets, a TypeError and the connection lives on."""
    results = queue.Queue()
    with syncws.connect(ws_serve(fragment_recorder(results))) as ws:
        with pytest.raises(TypeError):
            ws.send([1, 2, 3])
        assert ws.open
        ws.send("still fine")
        assert results.get(timeout=5) == ["still fine"]


def test_send_mixed_iterable_raises(ws_serve):
    results = queue.Queue()
    ws = syncws.connect(ws_serve(fragment_recorder(results)))
    with pytest.raises(TypeError):
        ws.send(["text", b"bytes"])
    # Half a message went out: the connection can't go on.
    ws.wait_closed(5)
    assert ws.close_sent is not None and ws.close_sent[0] == 1011
    with pytest.raises(ConnectionClosed):
        ws.send("after")


def test_send_iterable_raising_oserror_fails_the_connection(ws_serve):
    """An OSError from the iterable is the application's, not the socket's: half a
    message went out, so the connection fails with 1011 as for any other error."""
    results = queue.Queue()

    def failing():
        yield "half "
        raise OSError("the file being streamed went away")

    ws = syncws.connect(ws_serve(fragment_recorder(results)))
    with pytest.raises((OSError, ConnectionClosed)):
        ws.send(failing())
    ws.wait_closed(5)
    assert ws.close_sent is not None and ws.close_sent[0] == 1011
    with pytest.raises(ConnectionClosed):
        ws.send("after")


def test_send_after_close_raises(ws_serve):
    ws = syncws.connect(ws_serve(echo))
    ws.close()
    for message in ["text", b"bytes", ["frag", "ments"]]:
        with pytest.raises(ConnectionClosedOK):
            ws.send(message)
    with pytest.raises(ConnectionClosed):
        ws.ping()


def test_concurrent_senders_do_not_interleave(ws_serve):
    threads_count, per_thread = 8, 200

    def payload(t, i):
        size = 100_000 if i % 50 == 0 else (t * 131 + i * 37) % 3000
        return f"{t}:{i}:" + chr(ord("a") + t) * size

    received = []
    receiver_error = []

    with syncws.connect(ws_serve(echo)) as ws:
        def receive():
            try:
                for _ in range(threads_count * per_thread):
                    received.append(ws.recv(timeout=10))
            except BaseException as exc:
                receiver_error.append(exc)

        def send(t):
            for i in range(per_thread):
                ws.send(payload(t, i))

        receiver = threading.Thread(target=receive)
        receiver.start()
        senders = [threading.Thread(target=send, args=(t,)) for t in range(threads_count)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(15)
        receiver.join(15)
    assert not receiver_error, receiver_error
    assert len(received) == threads_count * per_thread
    seen = {t: [] for t in range(threads_count)}
    for message in received:
        t, i, _ = message.split(":", 2)
        t, i = int(t), int(i)
        assert message == payload(t, i)
        seen[t].append(i)
    for t in range(threads_count):
        assert seen[t] == list(range(per_thread))


def test_queue_backpressure_bounds_memory(ws_serve):
    count, size, max_queue = 2000, 64 * 1024, 4
    finished = threading.Event()

    def message(i):
        return struct.pack("!I", i) + bytes([i % 256]) * (size - 4)

    def handler(ws):
        for i in range(count):
            ws.send(message(i))
        finished.set()
        wait_client_close(ws)

    uri = ws_serve(handler, compression=None, ping_interval=None)
    with syncws.connect(uri, max_queue=max_queue, compression=None, ping_interval=None) as ws:
        assert wait_for(lambda: ws.stats.queued >= max_queue)
        # The server is stalled by TCP flow control, not done sending.
        assert not finished.wait(0.5)
        stats = ws.stats
        assert stats.queued <= max_queue
        assert stats.messages_in <= max_queue + 1  # one more may wait in put()
        for i in range(count):
            assert ws.recv(timeout=10) == message(i)
        assert finished.wait(5)
        assert ws.stats.messages_in == count


def test_stalled_peer_send_times_out(raw_serve):
    stop = threading.Event()

    def handler(conn):
        stop.wait(15)  # never reads

    ws = syncws.connect(raw_serve(handler), ping_interval=None)
    chunk = b"\x00" * MIB
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        for _ in range(64):
            ws.send(chunk, timeout=1)
    elapsed = time.monotonic() - started
    stop.set()
    assert elapsed < 5
    ws.wait_closed(5)
    assert ws.state_name == "CLOSED"
    with pytest.raises(ConnectionClosed):
        ws.send("after")
    ws.close()


# -- fragmented receive ------------------------------------------------------------


def test_fragmented_receive(ws_serve):
    def handler(ws):
        ws.send(["ab", "cd", "ef"])
        ws.send([b"12", b"34", b"56"])
        ws.send(["x", "y"])
        ws.send(b"single")
        wait_client_close(ws)

    with syncws.connect(ws_serve(handler)) as ws:
        assert ws.recv(timeout=5) == "abcdef"
        # Fragments that arrive together may come out joined (RFC 6455 §5.4
        # gives fragment boundaries no meaning); their content and order stay.
        assert b"".join(ws.recv_streaming(timeout=5)) == b"123456"
        assert "".join(ws.recv_streaming(timeout=5)) == "xy"
        assert list(ws.recv_streaming(timeout=5)) == [b"single"]


def test_recv_streaming_yields_fragments_as_they_arrive(raw_serve):
    """Each fragment comes out when it arrives, not when the message ends."""
    gaps = 0.3

    def handler(conn):
        conn.send(frame(0x1, b"one ", fin=False))
        time.sleep(gaps)
        conn.send(frame(0x0, b"two ", fin=False))
        time.sleep(gaps)
        conn.send(frame(0x0, b"three"))
        conn.read_close()

    with syncws.connect(raw_serve(handler), ping_interval=None) as ws:
        started = time.monotonic()
        arrivals = [(piece, time.monotonic() - started) for piece in ws.recv_streaming(timeout=5)]
    assert [piece for piece, _ in arrivals] == ["one ", "two ", "three"]
    assert arrivals[0][1] < gaps / 2  # not held until the message is complete
    assert arrivals[1][1] < gaps * 1.5


# -- ping, pong, keepalive -----------------------------------------------------------


def test_ping_sets_event_on_pong(ws_serve):
    with syncws.connect(ws_serve(echo), ping_interval=None) as ws:
        assert ws.latency == 0
        event = ws.ping()
        assert event.wait(5)
        assert ws.latency > 0
        assert ws.ping(b"payload").wait(5)
        assert ws.ping("text payload").wait(5)
        assert ws.stats.pings_sent == 3


def test_ping_pending_payload_and_pong(raw_serve):
    frames = queue.Queue()
    answer = threading.Event()

    def handler(conn):
        frames.put(conn.read_frame())
        frames.put(conn.read_frame())
        answer.wait(5)
        conn.send_frame(0xA, b"x")
        raw_close_reply(conn)

    with syncws.connect(raw_serve(handler), ping_interval=None) as ws:
        event = ws.ping(b"x")
        with pytest.raises(ValueError):
            ws.ping(b"x")
        with pytest.raises(ValueError):
            ws.ping(b"y" * 126)
        ws.pong(b"hb")
        assert frames.get(timeout=5) == (True, 0x9, b"x")
        assert frames.get(timeout=5) == (True, 0xA, b"hb")
        assert not event.is_set()
        answer.set()
        assert event.wait(5)
        assert ws.latency > 0
        ws.ping(b"x")  # the payload is free again


def test_unsolicited_pong_accepted_by_websockets(ws_serve):
    with syncws.connect(ws_serve(echo)) as ws:
        ws.pong()
        ws.pong(b"heartbeat")
        ws.send("still open")
        assert ws.recv(timeout=5) == "still open"


def test_keepalive_closes_unresponsive_peer(raw_serve):
    results = queue.Queue()

    def handler(conn):
        results.put(conn.read_close())  # reads pings, never answers

    ws = syncws.connect(raw_serve(handler), ping_interval=0.2, ping_timeout=0.2)
    started = time.monotonic()
    ws.wait_closed(3)
    assert time.monotonic() - started < 2
    with pytest.raises(ConnectionClosedError) as excinfo:
        ws.recv(timeout=1)
    assert excinfo.value.code == 1006  # no close frame came back
    assert excinfo.value.reason == "keepalive ping timeout"  # written, never answered
    assert ws.close_sent[0] == 1011
    assert ws.stats.pings_sent >= 1
    assert ws.stats.pings_missed >= 1
    code, reason = results.get(timeout=5)
    assert code == 1011 and "keepalive" in reason


def test_keepalive_with_responsive_peer(ws_serve):
    with syncws.connect(ws_serve(echo), ping_interval=0.05, ping_timeout=0.5) as ws:
        assert wait_for(lambda: ws.stats.pings_sent >= 4, timeout=5)
        assert wait_for(lambda: ws.latency > 0)
        assert ws.open
        assert ws.stats.pings_missed == 0
        ws.send("alive")
        assert ws.recv(timeout=5) == "alive"


def test_keepalive_pings_only_a_silent_peer(ws_serve):
    """A peer whose messages keep coming is alive: no ping until they stop."""
    stop = threading.Event()

    def stream(ws):
        while not stop.wait(0.01):
            ws.send("tick")
        ws.recv()  # until the client closes

    # A message every 10 ms against a ping interval of 0.5 s: only a thread
    # held off the CPU for fifty of the peer's messages looks like silence
    # (0.1 s did, once, on a loaded CI machine).
    with syncws.connect(ws_serve(stream, ping_interval=None), ping_interval=0.5, ping_timeout=2) as ws:
        deadline = time.monotonic() + 2.0  # four intervals of messages
        while time.monotonic() < deadline:
            ws.recv(timeout=5)
        assert ws.stats.pings_sent == 0
        stop.set()
        assert wait_for(lambda: ws.stats.pings_sent >= 2, timeout=10)
        assert ws.open and ws.stats.pings_missed == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("writer", ["send", "keepalive"])
def test_a_failed_write_ends_a_connection_whose_queue_is_full(raw_serve, writer):
    """The peer resets the connection while the reader waits for room: a write fails.

    The write gave the connection up and shut the socket down, but the
    reader thread wasn't reading the socket: it waited for room in the
    queue, so the connection stayed open, its reader held, until somebody
    called recv() (seen as a keepalive ping failing on a vanished peer).
    """
    reset = threading.Event()

    def flood_then_reset(conn):
        for _ in range(8):
            conn.send_frame(0x1, b"x" * 100)
        assert reset.wait(10)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.sock.close()

    uri = raw_serve(flood_then_reset)
    keepalive = dict(ping_interval=0.1, ping_timeout=None) if writer == "keepalive" else dict(ping_interval=None)
    ws = syncws.connect(uri, max_queue=1, compression=None, **keepalive)
    try:
        assert wait_for(lambda: ws._messages.put_waiting, timeout=10)
        reset.set()
        if writer == "send":
            with pytest.raises(ConnectionClosed):
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:  # the first may go out before the reset
                    ws.send("y")
                    time.sleep(0.01)
        assert wait_for(lambda: ws.closed, timeout=10), ws.state_name
        assert ws.close_code == 1006
    finally:
        ws.abort()


def test_keepalive_keeps_a_live_peer_while_the_queue_is_full(ws_serve):
    """The reader doesn't read, so no pong is seen; the peer's TCP acknowledged the pings."""

    def flood(ws):
        try:
            while True:
                ws.send("x" * 1000)
        except WSConnectionClosed:
            pass

    uri = ws_serve(flood, ping_interval=None)
    with syncws.connect(uri, max_queue=1, ping_interval=0.2, ping_timeout=0.3) as ws:
        assert wait_for(lambda: ws._messages.put_waiting, timeout=5)
        pings = ws.stats.pings_sent
        assert wait_for(lambda: ws.stats.pings_sent >= pings + 4, timeout=10)
        assert ws._messages.put_waiting  # the pongs wait behind messages nobody read
        assert ws.open and ws.stats.pings_missed == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("family", ["unix", "tcp-without-user-timeout"])
def test_keepalive_gives_up_a_peer_that_stopped_reading_after_a_send(raw_serve, tmp_path, caplog, family):
    """A send() filled the buffers and returned; the peer reads no more: no ping can go out.

    No write is under way, so no write_timeout watches the peer, and the
    ping, refused for want of room, was taken for "a send is under way":
    the connection and its reader thread lived for ever. Over TCP on Linux,
    TCP_USER_TIMEOUT (ping_timeout) ends it first; it is lifted here, as on
    the systems without it. Unix sockets have no such option.
    """
    stop = threading.Event()

    def peer(conn):
        stop.wait(20)  # handshake done; reads nothing more

    if family == "unix":
        path = str(tmp_path / "ws.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)

        def accept():
            sock, _ = listener.accept()
            conn = RawConn(sock)
            with sock:
                conn.handshake()
                peer(conn)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        connect = functools.partial(syncws.unix_connect, path)
    else:
        listener, thread = None, None

        def small_buffer_peer(conn):
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            peer(conn)

        connect = functools.partial(syncws.connect, raw_serve(small_buffer_peer))
    caplog.set_level("INFO", logger="syncws.client")
    ws = connect(ping_interval=0.5, ping_timeout=0.5, write_timeout=10, compression=None)
    try:
        if family != "unix":
            sockopts.set_user_timeout(ws.transport.sock, 0)
        while ws.send_nowait(b"\x00" * 1024):  # sends that return, until the buffers are full
            pass
        assert not ws.transport.writable_now()
        ws.wait_closed(15)
        assert (ws.close_code, ws.close_reason) == (1006, "keepalive ping not written: the peer isn't reading")
        assert ws.stats.pings_missed >= 1
        messages = [record.getMessage() for record in caplog.records]
        assert any("ping not written within 0.5 seconds: the peer isn't reading; closing" in m for m in messages)
        assert not any("no pong" in message for message in messages)
    finally:
        stop.set()
        ws.abort("the test is over")
        if thread is not None:
            thread.join(10)
            listener.close()


def test_pongs_left_while_a_keepalive_ping_holds_the_writer_go_out(raw_serve, monkeypatch):
    """Pongs the reader couldn't write while our keepalive ping held the writer go out, unprompted.

    The peer sends five pings of 125 bytes, then only waits for their pongs,
    as Node's ``ws`` or a load balancer does: their 655 bytes are more than a
    keepalive ping may take along (it must never block the timer thread).
    The reader's flush is held until all five pongs are made (as behind a
    send), then let go while the keepalive's write holds the write lock. A
    writer that left them there until some later frame failed this test.
    """
    payloads = [bytes([number]) * 125 for number in range(5)]
    results = queue.Queue()
    pongs_made = threading.Event()  # the reader made the five pongs, its flush waits
    writer_held = threading.Event()  # the keepalive's write holds the write lock
    flush_tried = threading.Event()  # the reader's flush returned
    core_locks = []
    flush, writable_now = Writer.flush, Transport.writable_now

    def reader_flush(self, blocking):
        if blocking or pongs_made.is_set():
            return flush(self, blocking)
        if len(self.core.outgoing) < len(payloads):
            return None  # the pongs wait, as behind a send, until all are made
        core_locks.append(self.core_lock)
        pongs_made.set()
        writer_held.wait(10)
        flush(self, blocking)
        flush_tried.set()
        return None

    def keepalive_writable_now(self):
        if pongs_made.is_set() and not writer_held.is_set():
            writer_held.set()
            # A writer that holds the write lock without the core's lets
            # the reader try it meanwhile: it does, and finds it taken.
            if not core_locks[0].locked():
                flush_tried.wait(10)
        return writable_now(self)

    def handler(conn):
        conn.send(b"".join(frame(0x9, payload) for payload in payloads))
        pongs = []
        try:
            while len(pongs) < len(payloads):
                _, opcode, data = conn.read_frame()  # our keepalive's pings go unanswered
                if opcode == 0xA:
                    pongs.append(data)
        except socket.timeout:
            pass
        results.put(pongs)
        raw_close_reply(conn)

    monkeypatch.setattr(Writer, "flush", reader_flush)
    monkeypatch.setattr(Transport, "writable_now", keepalive_writable_now)
    with syncws.connect(raw_serve(handler), ping_interval=0.05, ping_timeout=None, compression=None) as ws:
        assert results.get(timeout=15) == payloads
        assert writer_held.is_set()  # the race was run
        assert ws.open


# -- attributes --------------------------------------------------------------------


def test_stats_count_messages_and_bytes(ws_serve):
    uri = ws_serve(echo, compression=None, ping_interval=None)
    with syncws.connect(uri, compression=None, ping_interval=None) as ws:
        before = ws.stats
        assert before.messages_in == before.messages_out == before.queued == 0
        messages = ["hello", b"\x00" * 200, "é"]
        for message in messages:
            ws.send(message)
        assert [ws.recv(timeout=5) for _ in messages] == messages
        after = ws.stats
    assert after.messages_out == 3
    assert after.messages_in == 3
    assert after.queued == 0
    # Client frames: 2-byte header (+2 for 126..65535) + 4-byte mask.
    assert after.bytes_out - before.bytes_out == (5 + 6) + (200 + 8) + (2 + 6)
    # Server frames: unmasked.
    assert after.bytes_in - before.bytes_in == (5 + 2) + (200 + 4) + (2 + 2)


def test_identity_and_addresses(ws_serve):
    uri = ws_serve(echo)
    port = int(uri.rsplit(":", 1)[1])
    with syncws.connect(uri) as ws1, syncws.connect(uri) as ws2:
        assert isinstance(ws1.id, uuid.UUID)
        assert ws1.id != ws2.id
        assert ws1.remote_address[:2] == ("127.0.0.1", port)
        assert ws1.local_address[0] == "127.0.0.1"
        assert ws1.local_address[1] != ws2.local_address[1]
        assert ws1.open and ws1.state_name == "OPEN" and not ws1.closed
    assert not ws1.open and ws1.state_name == "CLOSED" and ws1.closed
    # Addresses stay readable after the socket is gone, for logs.
    assert ws1.remote_address[:2] == ("127.0.0.1", port)


# -- resources -----------------------------------------------------------------------


def _other_threads():
    return [t for t in threading.enumerate() if t.name != "syncws-timers"]


# 500 handshakes with websockets' server: 3 s on 3.11, 6-20 s on a loaded
# 3.13t, where 60 s ran out at a load of 20 (2 cores).
@pytest.mark.timeout(180)
def test_no_thread_or_fd_leak(ws_serve):
    uri = ws_serve(echo, compression=None)
    # The peer's serve_forever() makes its selector once its thread runs:
    # one connection first, so that the count starts after that.
    with syncws.connect(uri, compression=None) as ws:
        ws.send("x")
        assert ws.recv(timeout=5) == "x"
    threads_before = len(_other_threads())
    fds_before = fd_count()
    for i in range(500):
        with syncws.connect(uri, compression=None) as ws:
            if i % 50 == 0:
                ws.send("x")
                assert ws.recv(timeout=5) == "x"
    assert wait_for(lambda: len(_other_threads()) <= threads_before, timeout=10), [
        t.name for t in _other_threads()
    ]
    assert wait_for(lambda: fd_count() <= fds_before, timeout=10), (fd_count(), fds_before)
    # Reader threads linger idle for threadpool.LINGER seconds (some may predate
    # this test), then end.
    assert wait_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("syncws-reader")],
        timeout=threadpool.LINGER + 5,
    ), [t.name for t in threading.enumerate()]
    assert len([t for t in threading.enumerate() if t.name == "syncws-timers"]) <= 1


# -- the asyncio websockets server as peer -------------------------------------------


def test_asyncio_peer(aio_serve):
    results = queue.Queue()

    async def handler(ws):
        path = ws.request.path
        try:
            if path == "/echo":
                async for message in ws:
                    await ws.send(message)
            elif path == "/close4000":
                await ws.send("bye")
                await ws.close(4000, "custom")
            elif path == "/going-away":
                await ws.close(1001)
            elif path == "/record":
                await ws.recv()
        except WSConnectionClosed as exc:
            results.put((exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else None)

    uri = aio_serve(handler)
    with syncws.connect(uri + "/echo") as ws:
        for message in ["text", b"bin", ["frag", "mented"], "x" * 100_000]:
            ws.send(message)
        assert ws.recv(timeout=5) == "text"
        assert ws.recv(timeout=5) == b"bin"
        assert ws.recv(timeout=5) == "fragmented"
        assert ws.recv(timeout=5) == "x" * 100_000
        assert ws.ping().wait(5)

    with syncws.connect(uri + "/close4000") as ws:
        assert ws.recv(timeout=5) == "bye"
        with pytest.raises(ConnectionClosedError) as excinfo:
            ws.recv(timeout=5)
        assert (excinfo.value.code, excinfo.value.reason) == (4000, "custom")

    with syncws.connect(uri + "/going-away") as ws:
        assert list(ws) == []
        assert ws.close_code == 1001

    ws = syncws.connect(uri + "/record")
    ws.close(4001, "bye")
    assert results.get(timeout=5) == (4001, "bye")
    assert ws.close_code == 4001


@pytest.mark.timeout(30)
def test_peer_that_pings_but_never_reads_cannot_pin_the_reader(raw_serve):
    """Pongs to a peer that never reads fill the buffers; write_timeout ends it."""
    stop = threading.Event()

    def handler(conn):
        # The receive buffer is left as it is: shrunk once connected, it
        # makes the kernel drop the client's segments, ACKs included, and
        # TCP stalls both ways in retransmission backoff, with no write
        # blocked for a deadline to end. A send that timed out resumes where
        # it stopped, so the frames stay whole.
        pings = memoryview(frame(0x9, b"p" * 125) * 1000)
        sent = 0
        conn.sock.settimeout(1)
        while not stop.is_set():
            try:
                sent = (sent + conn.sock.send(pings[sent:])) % len(pings)
            except socket.timeout:
                continue  # our buffers are full too: hold the connection open
            except OSError:  # the client gave up on us: done
                return

    ws = syncws.connect(raw_serve(handler), ping_interval=None, write_timeout=1, close_timeout=1)
    try:
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=20)
        assert info.value.code == 1006
        ws.wait_closed(5)
        assert ws.state_name == "CLOSED"
    finally:
        stop.set()


@pytest.mark.timeout(60)
def test_pings_while_a_send_waits_for_the_peer_get_a_bounded_number_of_pongs(raw_serve):
    """A peer pings without reading while our send blocks: 64 pongs wait, the last answers its newest ping."""
    may_read = threading.Event()
    pongs = []

    def handler(conn):
        select.select([conn.sock], [], [], 10)  # the message's first bytes: its send() holds the writer
        conn.send(b"".join(frame(0x9, b"%d" % number) for number in range(1000)) + frame(0x1, b"last"))
        assert may_read.wait(10)
        assert conn.read_frame()[1:] == (0x2, message)
        while True:
            _, opcode, data = conn.read_frame()
            if opcode == 0x1:
                break
            assert opcode == 0xA
            pongs.append(data)
        assert data == b"done"
        raw_close_reply(conn)

    message = b"x" * 2**20  # far more than the socket buffers hold
    host, port = raw_serve(handler)[len("ws://"):].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    sock.connect((host, int(port)))
    with syncws.connect(f"ws://{host}:{port}", sock=sock, ping_interval=None) as ws:
        sender = threading.Thread(target=ws.send, args=(message,))
        sender.start()
        # Every ping came before it: the reader has made their pongs,
        # which wait behind the message.
        assert ws.recv(timeout=10) == "last"
        may_read.set()
        sender.join(10)
        assert not sender.is_alive()
        ws.send("done")
    assert pongs == [b"%d" % number for number in [*range(63), 999]]


def test_reads_start_small_and_grow_while_the_peer_sends_more(raw_serve, monkeypatch):
    """A read that returns SMALL_READ bytes or more is followed by a read_limit one, a shorter one by a small one."""
    from syncws import reader, transport

    reads = []  # (bytes asked, bytes returned)
    recv = transport.Transport.recv

    def recording_recv(self):
        def record(size):
            data = recv.fget(self)(size)
            reads.append((size, len(data)))
            return data
        return record

    monkeypatch.setattr(transport.Transport, "recv", property(recording_recv))
    burst = [str(i) * 100 for i in range(300)]  # 30 KB in one write

    def handler(conn):
        conn.send(b"".join(frame(0x1, message.encode()) for message in burst))
        assert conn.read_frame()[2] == b"got them"
        conn.send_frame(0x1, b"short")
        raw_close_reply(conn)

    with syncws.connect(raw_serve(handler), ping_interval=None, read_limit=2**16) as ws:
        assert [ws.recv(timeout=5) for _ in burst] == burst
        ws.send("got them")
        assert ws.recv(timeout=5) == "short"
    assert reads[0][0] == reader.SMALL_READ
    assert any(size == 2**16 for size, _ in reads)  # the burst filled a small read
    for (_, returned), (asked, _) in zip(reads, reads[1:]):
        assert asked == (2**16 if returned >= reader.SMALL_READ else reader.SMALL_READ)


# -- decode= and text= (issue 9), against websockets ------------------------------


def test_recv_decode_and_send_text_against_websockets(ws_serve):
    received = queue.Queue()

    def handler(ws):
        # websockets tells a text frame (str) from a binary one (bytes).
        for _ in range(4):
            received.put(ws.recv(timeout=5))
        ws.send("héllo")
        ws.send(b"caf\xc3\xa9")
        ws.send(["frag", "ment"])
        wait_client_close(ws)

    with syncws.connect(ws_serve(handler)) as ws:
        ws.send(b"caf\xc3\xa9", text=True)  # bytes as a text frame
        ws.send("plain", text=False)  # str as a binary frame
        ws.send("as is")
        ws.send(b"\x00\xff")
        assert [received.get(timeout=5) for _ in range(4)] == ["café", b"plain", "as is", b"\x00\xff"]
        assert ws.recv(timeout=5, decode=False) == "héllo".encode()  # text as UTF-8 bytes
        assert ws.recv(timeout=5, decode=True) == "café"  # binary decoded
        assert "".encode().join(ws.recv_streaming(timeout=5, decode=False)) == b"fragment"


def test_recv_decode_true_on_binary_that_is_not_utf8_raises(ws_serve):
    def handler(ws):
        ws.send(b"\xff\xfe")
        ws.send("next")
        wait_client_close(ws)

    with syncws.connect(ws_serve(handler)) as ws:
        with pytest.raises(UnicodeDecodeError):
            ws.recv(timeout=5, decode=True)
        assert ws.recv(timeout=5) == "next"  # the connection goes on


# -- ConcurrencyError (issue 9) ---------------------------------------------------------


def test_two_threads_in_recv_is_a_concurrency_error(ws_serve):
    with syncws.connect(ws_serve(echo)) as ws:
        started = threading.Event()
        outcome = queue.Queue()

        def first():
            started.set()
            outcome.put(ws.recv(timeout=5))

        thread = threading.Thread(target=first)
        thread.start()
        assert started.wait(5)
        assert wait_for(lambda: not ws._assembler._receiving, timeout=5)  # its token is taken
        with pytest.raises(syncws.ConcurrencyError, match="another thread is already receiving"):
            ws.recv(timeout=1)
        ws.send("for the first")
        thread.join(5)
        assert outcome.get(timeout=1) == "for the first"
        ws.send("now mine")
        assert ws.recv(timeout=5) == "now mine"


# -- fragmented messages from several threads (issue 22) ------------------------------


def run_in_thread(function, *args, **kwargs):
    """Start ``function(*args, **kwargs)`` in a thread; return a queue that gets its result or exception."""
    outcome = queue.Queue()

    def run():
        try:
            outcome.put(function(*args, **kwargs))
        except BaseException as exc:
            outcome.put(exc)

    threading.Thread(target=run, daemon=True).start()
    return outcome


def start_stalled_fragmented_send(ws):
    """Send "one two three" in a thread, stalled after its first frame until released.

    Returns the event that releases it and the queue that gets its outcome.
    """
    inside, release = threading.Event(), threading.Event()

    def fragments():
        yield "one "
        yield "two "
        # send() reads one item ahead: "one " is on the wire by now.
        inside.set()
        assert release.wait(10)
        yield "three"

    outcome = run_in_thread(ws.send, fragments())
    assert inside.wait(5)
    return release, outcome


@pytest.fixture(params=["syncws", "websockets"])
def echo_uri(request, ws_serve):
    """The URI of an echo server: syncws's own, or the websockets library's."""
    if request.param == "websockets":
        yield ws_serve(echo)
        return
    with syncws.serve(lambda ws: [ws.send(message) for message in ws], "127.0.0.1", 0) as server:
        yield f"ws://127.0.0.1:{server.port}/"


def threaded_message(t, i):
    """Thread t's message i: text or binary, 10 bytes to 40 KB, saying whose it is."""
    size = (t * 977 + i * 7919) % 40_000
    text = f"{t}:{i}:" + chr(ord("a") + t) * size
    return text if i % 2 else text.encode()


def pieces_of(message, count):
    step = len(message) // count + 1
    return [message[k : k + step] for k in range(0, len(message), step)]


def test_sixteen_threads_send_whole_and_fragmented_messages_on_one_connection(echo_uri):
    """Every way of sending, from 16 threads at once: each message arrives whole,
    and a fragmented one's frames are never interleaved with another message's."""
    threads_count, per_thread = 16, 30
    start = threading.Barrier(threads_count)
    errors = []

    def send_all(t):
        try:
            start.wait(10)
            for i in range(per_thread):
                message = threaded_message(t, i)
                kind = (t + i) % 3
                if kind == 0:
                    ws.send(message)
                elif kind == 1:
                    ws.send(pieces_of(message, 3))
                else:

                    def generated(message=message):
                        for piece in pieces_of(message, 4):
                            time.sleep(0)  # let other threads run mid-message
                            yield piece

                    ws.send(generated())
        except BaseException as exc:
            errors.append(exc)

    with syncws.connect(echo_uri, max_size=None) as ws:
        received = run_in_thread(lambda: [ws.recv(timeout=10) for _ in range(threads_count * per_thread)])
        senders = [threading.Thread(target=send_all, args=(t,)) for t in range(threads_count)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(15)
        assert not errors, errors
        received = received.get(timeout=15)
    assert isinstance(received, list), received
    seen = {t: [] for t in range(threads_count)}
    for message in received:
        t, i, _ = (message if isinstance(message, str) else message.decode()).split(":", 2)
        assert message == threaded_message(int(t), int(i))
        seen[int(t)].append(int(i))
    assert seen == {t: list(range(per_thread)) for t in range(threads_count)}


@pytest.mark.parametrize("second", [["x", "y"], "whole"], ids=["fragmented", "whole"])
def test_a_send_from_another_thread_waits_for_a_fragmented_message(ws_serve, second):
    with syncws.connect(ws_serve(echo)) as ws:
        release, first_outcome = start_stalled_fragmented_send(ws)
        outcome = run_in_thread(ws.send, second)
        assert wait_for(lambda: ws._writer._turn_waiters == 1)  # waiting, not failed
        release.set()
        assert outcome.get(timeout=5) is None and first_outcome.get(timeout=5) is None
        assert ws.recv(timeout=5) == "one two three"
        assert ws.recv(timeout=5) == "".join(second)
        assert ws.open


@pytest.mark.parametrize("second", [["x", "y"], "whole"], ids=["fragmented", "whole"])
def test_waiting_for_a_fragmented_message_times_out_and_sends_nothing(ws_serve, second):
    with syncws.connect(ws_serve(echo)) as ws:
        release, first_outcome = start_stalled_fragmented_send(ws)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="another thread's fragmented message"):
            ws.send(second, timeout=0.5)
        assert 0.4 < time.monotonic() - started < 5
        assert ws.open  # nothing went out: the connection goes on
        release.set()
        assert first_outcome.get(timeout=5) is None
        assert ws.recv(timeout=5) == "one two three"
        ws.send("after")
        assert ws.recv(timeout=5) == "after"


def test_a_send_waiting_for_a_fragmented_message_ends_with_the_connection(ws_serve):
    """A stalled iterable doesn't keep the others waiting once the connection is over."""
    with syncws.connect(ws_serve(echo), close_timeout=1) as ws:
        release, first_outcome = start_stalled_fragmented_send(ws)
        outcome = run_in_thread(ws.send, ["x", "y"], timeout=30)
        assert wait_for(lambda: ws._writer._turn_waiters == 1)
        ws.close()
        assert isinstance(outcome.get(timeout=5), ConnectionClosed)
        release.set()
        assert isinstance(first_outcome.get(timeout=5), ConnectionClosed)


@pytest.mark.parametrize("inner", [["x", "y"], "whole"], ids=["fragmented", "whole"])
def test_a_send_from_the_iterable_of_a_fragmented_send_is_a_concurrency_error(ws_serve, inner):
    """It would wait for the message it interrupts: a bug in the caller, reported."""
    caught = queue.Queue()

    def sending_inside():
        yield "one "
        yield "two "
        try:
            ws.send(inner)  # the first frame is out: the message is under way
        except syncws.ConcurrencyError as exc:
            caught.put(exc)
        yield "three"

    with syncws.connect(ws_serve(echo)) as ws:
        outcome = run_in_thread(ws.send, sending_inside())
        assert outcome.get(timeout=5) is None  # no deadlock
        exc = caught.get(timeout=1)
        assert "from the iterable" in str(exc) and "yield" in str(exc)
        assert ws.recv(timeout=5) == "one two three"
        assert ws.open


# -- stats count the same things both ways (issue 9) -------------------------------


def test_stats_count_frames_only_both_ways(ws_serve):
    with syncws.connect(ws_serve(echo), compression=None, ping_interval=None) as ws:
        assert ws.stats.bytes_in == ws.stats.bytes_out == 0  # the handshake isn't counted
        ws.send("x" * 100)
        assert ws.recv(timeout=5) == "x" * 100
        stats = ws.stats
        # Our frame: 2 + 4 (mask) + 100 bytes; the echo: 2 + 100 bytes.
        assert (stats.bytes_out, stats.bytes_in) == (106, 102)
        assert (stats.messages_out, stats.messages_in) == (1, 1)


# -- __iter__ against recv(), which it inlines -------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1011, 4000])
def test_iteration_matches_recv(ws_serve, code):
    """__iter__ calls the assembler itself, one call shorter than recv(): same messages, same end."""

    def handler(ws):
        ws.send("text")
        ws.send(b"binary")
        ws.send(["frag", "mented"])
        ws.close(code, "the end")

    def by_recv(ws):
        received = []
        while True:
            try:
                received.append(ws.recv(timeout=5))
            except ConnectionClosed as exc:
                return received, exc

    def by_iteration(ws):
        received = []
        try:
            for message in ws:
                received.append(message)
        except ConnectionClosed as exc:
            return received, exc
        return received, None

    uri = ws_serve(handler)
    with syncws.connect(uri) as ws:
        expected, closed = by_recv(ws)
    with syncws.connect(uri) as ws:
        received, raised = by_iteration(ws)
    assert received == expected == ["text", b"binary", "fragmented"]
    # Iteration ends quietly where recv() raises ConnectionClosedOK, and
    # raises what recv() raises otherwise.
    if isinstance(closed, ConnectionClosedOK):
        assert raised is None
    else:
        assert (type(raised), raised.code, raised.reason) == (type(closed), closed.code, closed.reason)
    assert (closed.code, closed.reason) == (code, "the end")
