"""The Flask example plus the routes tests/test_wsgi.py needs (limits, errors...).

Run by the tests with examples/wsgi on sys.path.
"""

import json
import logging
import socket
import threading
from typing import Any

import flask

import path_check
from flask_app import app  # examples/wsgi/flask_app.py

from syncws.wsgi import accept, flask_route, flask_websocket


# The failing handler's traceback is expected: keep it out of the server log,
# which the tests check for errors.
logging.getLogger("syncws.tests.expected").addHandler(logging.NullHandler())
logging.getLogger("syncws.tests.expected").propagate = False


def _echo(websocket: Any) -> None:
    for message in websocket:
        websocket.send(message)


@flask_route(app, "/ws/limited")
@flask_websocket(max_size=1024)
def limited(websocket: Any) -> None:
    _echo(websocket)


@flask_route(app, "/ws/plain")
@flask_websocket(compression=None)
def plain(websocket: Any) -> None:
    _echo(websocket)


@flask_route(app, "/ws/chat/<room>")
@flask_websocket(origins=["http://good.example", None], subprotocols=["chat.v2", "chat.v1"])
def chat(websocket: Any, room: str) -> None:
    websocket.send(f"{room} {websocket.subprotocol}")
    _echo(websocket)


@flask_route(app, "/ws/fail")
@flask_websocket(logger="syncws.tests.expected")
def fail(websocket: Any) -> None:
    websocket.recv()
    raise RuntimeError("this handler fails on purpose")


@flask_route(app, "/ws/sockopts")
@flask_websocket(ping_interval=7, ping_timeout=3)
def sockopts(websocket: Any) -> None:
    """Send the TCP options of the connection's socket, as JSON."""
    sock = websocket.transport.sock
    websocket.send(json.dumps({
        "nodelay": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    }))
    _echo(websocket)


@flask_route(app, "/private/feed")
@flask_websocket(**path_check.OPTIONS)
def private_feed(websocket: Any) -> None:
    path_check.report(websocket)


@flask_route(app, "/public/<name>")
@flask_websocket(**path_check.OPTIONS)
def public(websocket: Any, name: str) -> None:
    path_check.report(websocket)


@flask_route(app, "/ws/then-a-response")
def then_a_response() -> Any:
    """A mistake: accept() by hand, the WebSocket left to a thread, and a page returned."""
    websocket = accept(flask.request.environ)
    threading.Thread(target=_echo, args=(websocket,), daemon=True).start()
    return "this must not reach the WebSocket\n"
