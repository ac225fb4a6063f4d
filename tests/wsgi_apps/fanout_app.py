"""A WSGI app with a RedisFanout made at import: before the fork under ``gunicorn --preload``.

Every WebSocket joins the room ``room``, is told the pid of the worker that
serves it, and has each message it sends published to the room. The Redis
URL comes from ``SYNCWS_TEST_REDIS``.
"""

import logging
import os
from typing import Any

from syncws import PublishError
from syncws.fanout import RedisFanout
from syncws.wsgi import websocket_app

logging.basicConfig(level=logging.INFO, format="%(process)d %(name)s %(levelname)s %(message)s")

rooms = RedisFanout(os.environ["SYNCWS_TEST_REDIS"])


def handler(websocket: Any) -> None:
    rooms.subscribe("room", websocket)
    websocket.send(f"pid {os.getpid()}")
    try:
        for message in websocket:
            try:
                rooms.publish("room", message)
            except PublishError:
                websocket.send("not sent: please try again")
    finally:
        rooms.unsubscribe_all(websocket)


app = websocket_app(handler)
