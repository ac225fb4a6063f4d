"""A bare WSGI application with WebSockets mounted by WebSocketMiddleware."""

from typing import Any, Callable, Dict, Iterable

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
