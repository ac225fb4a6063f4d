"""A bare WSGI application with a WebSocket mounted by WebSocketMiddleware."""

from typing import Any, Callable, Dict, Iterable

from syncws.wsgi import WebSocketMiddleware


def hello(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from a bare WSGI app\n"]


def echo(websocket: Any) -> None:
    for message in websocket:
        websocket.send(message)


app = WebSocketMiddleware(hello, {"/ws/echo": echo})
