"""A bare WSGI application with WebSockets mounted by WebSocketMiddleware."""

from typing import Any, Callable, Dict, Iterable

import path_check
from path_check import report

from syncws.wsgi import WebSocketMiddleware


def hello(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from a bare WSGI app\n"]


def echo(websocket: Any) -> None:
    for message in websocket:
        websocket.send(message)


def stopped_by(error: type) -> Callable[[Any], None]:
    """A handler that dies of ``error`` after one message, as a killed worker's does."""

    def handler(websocket: Any) -> None:
        websocket.recv()
        raise error()

    return handler


app = WebSocketMiddleware(hello, {
    "/ws/echo": echo,
    "/ws/exit": stopped_by(SystemExit),
    "/ws/interrupt": stopped_by(KeyboardInterrupt),
})

# The path checks of test_wsgi.py, in front of the rest.
app = WebSocketMiddleware(app, {"/private/feed": report, "/public/café": report}, **path_check.OPTIONS)
