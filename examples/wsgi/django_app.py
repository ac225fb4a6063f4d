"""A single-file Django project with a WebSocket route, served by gunicorn.

Run it with::

    gunicorn -k gthread --threads 64 --chdir examples/wsgi django_app

(``django_app`` exposes ``application``, gunicorn's default name; add
``-c python:syncws.gunicorn_conf`` so that SIGTERM closes WebSockets with
1001), then open http://127.0.0.1:8000/.

Django's ``runserver`` can't hand its socket over (syncws answers 500 and
logs why); use gunicorn, also in development.

Routes: ``GET /`` (a page whose script echoes a few messages through the
WebSocket) and ``/ws/echo`` (echoes every text and binary message).
"""

import os
from typing import Any

from django.conf import settings

settings.configure(
    DEBUG=os.environ.get("DJANGO_DEBUG") == "1",
    SECRET_KEY=os.environ.get("SECRET_KEY", "development only: set SECRET_KEY"),
    ALLOWED_HOSTS=["127.0.0.1", "localhost", "[::1]"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
)

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings)
from django.http import FileResponse  # noqa: E402
from django.urls import path  # noqa: E402

from syncws.wsgi import django_websocket  # noqa: E402

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo.html")


def index(request: Any) -> Any:
    return FileResponse(open(PAGE, "rb"), content_type="text/html")


@django_websocket(max_size=4 * 2**20)  # messages up to 4 MiB
def echo(request: Any, websocket: Any) -> None:
    for message in websocket:
        websocket.send(message)


urlpatterns = [
    path("", index),
    path("ws/echo", echo),
]

application = get_wsgi_application()
