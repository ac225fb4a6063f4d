"""A Flask application with WebSocket routes, served by gunicorn or werkzeug.

Run it with gunicorn (one thread per open WebSocket, plus the plain requests)::

    gunicorn -k gthread --threads 64 --chdir examples/wsgi flask_app:app

(add ``-c python:syncws.gunicorn_conf`` so that SIGTERM closes WebSockets
with 1001), or with werkzeug's development server::

    cd examples/wsgi && flask --app flask_app run

then open http://127.0.0.1:8000/ (5000 with flask run).

Routes:

* ``GET /``: a page whose script echoes a few messages through ``/ws/echo``;
* ``/ws/echo``: a WebSocket echoing every text and binary message;
* ``POST /login`` (form field ``user``) and ``POST /logout``: a session;
* ``/ws/whoami``: a WebSocket for logged-in users only (401 otherwise); the
  handler sees the Flask session;
* ``/ws/ticker``: the server pushes a tick every second, and the client may
  change the pace by sending ``{"interval": seconds}``.

``test_flask_app.py`` tests these routes.
"""

import functools
import json
import math
import os
import time
from typing import Any, Callable, Optional

import flask

from syncws.wsgi import flask_route, flask_websocket

app = flask.Flask(__name__)
app.secret_key = os.environ.get("SECRET_KEY", "development only: set SECRET_KEY")

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo.html")


@app.get("/")
def index() -> Any:
    return flask.send_file(PAGE, mimetype="text/html")


@flask_route(app, "/ws/echo")
@flask_websocket(max_size=4 * 2**20)  # messages up to 4 MiB
def echo(websocket: Any) -> None:
    for message in websocket:
        websocket.send(message)


@app.post("/login")
def login() -> Any:
    flask.session["user"] = flask.request.form["user"]
    return "logged in\n"


@app.post("/logout")
def logout() -> Any:
    flask.session.clear()
    return "logged out\n"


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse anonymous requests with 401, before any WebSocket upgrade."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "user" not in flask.session:
            flask.abort(401)
        return view(*args, **kwargs)

    return wrapper


@flask_route(app, "/ws/whoami")
@login_required
@flask_websocket()
def whoami(websocket: Any) -> None:
    user = flask.session["user"]  # the request context is alive here
    websocket.send(f"hello {user}")
    for message in websocket:
        websocket.send(f"{user}: {message}")


@flask_route(app, "/ws/ticker")
@flask_websocket()
def ticker(websocket: Any) -> None:
    """Push a tick every ``interval`` seconds, and read the client meanwhile."""
    interval = 1.0
    tick = 0
    next_tick = time.monotonic() + interval
    while True:  # until the client leaves: recv() or send() raise ConnectionClosed
        try:
            # Wait for a message from the client, but not past the next tick.
            message = websocket.recv(timeout=max(0.0, next_tick - time.monotonic()))
        except TimeoutError:
            tick += 1
            websocket.send(json.dumps({"tick": tick, "time": time.time()}))
            next_tick += interval
            continue
        requested = requested_interval(message)
        if requested is None:
            websocket.send(json.dumps({"error": 'send {"interval": seconds}'}))
        else:
            interval = requested
            next_tick = time.monotonic() + interval


def requested_interval(message: Any) -> Optional[float]:
    """The interval a client asked for, kept within 0.05-60 s; None if it isn't one."""
    try:
        value = float(json.loads(message)["interval"])
    except (ValueError, TypeError, KeyError):
        return None
    return min(max(value, 0.05), 60.0) if math.isfinite(value) else None
