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
  handler sees the Flask session.
"""

import functools
import os
from typing import Any, Callable

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
