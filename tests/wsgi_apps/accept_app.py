"""A WSGI application calling syncws.wsgi.accept() itself, with the mistakes it must survive.

* ``/twice``: accept() called a second time for the same request;
* ``/then-a-response``: the WebSocket goes on in a thread, and the
  application returns a normal response instead of HandedOver.
"""

import threading
from typing import Any, Callable, Dict, Iterable

from syncws.wsgi import HandedOver, accept


def echo(websocket: Any) -> None:
    for message in websocket:
        websocket.send(message)


def app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/twice":
        websocket = accept(environ)
        try:
            accept(environ)
        except RuntimeError as exc:
            websocket.send(f"the second accept() raised: {exc}")
        echo(websocket)
        return HandedOver(websocket)(start_response)
    if path == "/then-a-response":
        websocket = accept(environ)
        threading.Thread(target=echo, args=(websocket,), daemon=True).start()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"this must not reach the WebSocket\n"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no such path\n"]
