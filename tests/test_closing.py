"""Tests for syncws.closing: the end latch and a connection's end, without sockets.

What needs a peer (the closing handshake over TCP, its deadline, the
teardown by the reader thread) is tested over real sockets in
tests/test_protocol.py; here, what holds before any transport exists.
"""

from __future__ import annotations

import threading
from typing import List

import pytest

from core_helpers import make, no_sockets  # noqa: F401  (no_sockets is an autouse fixture)
from syncws.closing import Closing, Latch
from syncws.core import State
from syncws.exceptions import ConnectionClosedError, InvalidState
from syncws.messages import MessageQueue, QueueClosed

pytestmark = pytest.mark.timeout(10)

WAIT = 5.0  # seconds: a generous bound for what should be immediate


def closing(close_timeout: float = 10.0) -> Closing:
    """A Closing for a fresh core still in its opening handshake."""
    return Closing(make(opened=False), threading.Lock(), MessageQueue(4), close_timeout)


def test_latch_wakes_every_waiter_once_set() -> None:
    latch = Latch()
    assert not latch.is_set() and not latch.wait(0)
    woken: List[bool] = []
    waiters = [threading.Thread(target=lambda: woken.append(latch.wait(WAIT))) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    latch.set()
    latch.set()  # idempotent: its lock is released once
    for waiter in waiters:
        waiter.join(WAIT)
    assert woken == [True, True, True]
    assert latch.is_set() and latch.wait(0) and latch.wait()


def test_abort_before_the_reader_ends_everything_here() -> None:
    end = closing()
    end.abort("gone")
    assert end.core.state is State.CLOSED
    assert (end.core.close_code, end.core.close_reason) == (1006, "gone")
    assert end.closed.is_set()
    with pytest.raises(QueueClosed):
        end.messages.get(0)


def test_close_before_the_opening_handshake_aborts() -> None:
    end = closing()
    end.close(1000, "bye")
    assert end.closed.is_set() and end.core.state is State.CLOSED
    assert end.core.close_reason == "closed before the opening handshake finished"


def test_abort_with_a_reader_leaves_the_end_to_it() -> None:
    end = closing()
    end.core.open()
    end.reader_started = True
    end.abort("gone")
    # The reader thread finds the end of the stream and ends the connection.
    assert not end.closed.is_set()
    with pytest.raises(TimeoutError):
        end.messages.get(0)  # empty, not closed: the reader closes it


def test_the_closing_deadline_is_armed_once_and_never_when_closed() -> None:
    end = closing()
    end.core.open()
    end.start_timer()
    timer = end.timer
    assert timer is not None
    end.start_timer()
    assert end.timer is timer
    timer.cancel()
    unlimited = closing(close_timeout=None)  # type: ignore[arg-type]
    unlimited.core.open()
    unlimited.start_timer()
    assert unlimited.timer is None
    ended = closing()
    ended.abort("gone")
    ended.start_timer()
    assert ended.timer is None


def test_refuse_reports_the_closed_connection() -> None:
    end = closing()
    for exc in (TimeoutError("slow"), InvalidState("the opening handshake isn't done yet")):
        with pytest.raises(type(exc)) as raised:
            end.refuse(exc)
        assert raised.value is exc
    end.abort("gone")
    with pytest.raises(ConnectionClosedError) as closed:
        end.refuse(InvalidState("closing"))
    assert (closed.value.code, closed.value.reason) == (1006, "gone")
    with pytest.raises(ConnectionClosedError) as lost:
        end.refuse(OSError("reset"))
    assert isinstance(lost.value.__cause__, OSError)
