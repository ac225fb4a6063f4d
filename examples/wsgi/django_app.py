"""A single-file Django project with a WebSocket route, served by gunicorn.

Run it with::

    gunicorn -k gthread --threads 64 --chdir examples/wsgi django_app

(``django_app`` exposes ``application``, gunicorn's default name; add
``-c python:syncws.gunicorn_conf`` so that SIGTERM closes WebSockets with
1001), then open http://127.0.0.1:8000/.

Django's ``runserver`` can't hand its socket over (``manage.py runserver``
stops at start and says why); use gunicorn, also in development.

Routes:

* ``GET /``: a page whose script echoes a few messages through ``/ws/echo``;
* ``/ws/echo``: a WebSocket echoing every text and binary message;
* ``POST /login`` (form field ``user``) and ``POST /logout``: a session
  (signed cookies: no database needed);
* ``/ws/whoami``: a WebSocket for logged-in users only (403 otherwise); the
  handler sees ``request.session``.

``test_django_app.py`` tests these routes.
"""

import os
from typing import Any

from django.conf import settings

settings.configure(
    DEBUG=os.environ.get("DJANGO_DEBUG") == "1",
    SECRET_KEY=os.environ.get("SECRET_KEY", "development only: set SECRET_KEY"),
    ALLOWED_HOSTS=["127.0.0.1", "localhost", "[::1]"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        "django.middleware.common.CommonMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
    ],
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    STATIC_URL="/static/",  # LiveServerTestCase (test_django_app.py) serves static files
)

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings)
import functools  # noqa: E402
from typing import Callable  # noqa: E402

from django.http import FileResponse, HttpResponse, HttpResponseForbidden  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from django.views.decorators.http import require_POST  # noqa: E402
from django.urls import path  # noqa: E402

from syncws.wsgi import close_refused_upgrades, django_websocket  # noqa: E402

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "echo.html")


def index(request: Any) -> Any:
    return FileResponse(open(PAGE, "rb"), content_type="text/html")


@django_websocket(max_size=4 * 2**20)  # messages up to 4 MiB
def echo(request: Any, websocket: Any) -> None:
    for message in websocket:
        websocket.send(message)


@csrf_exempt  # an example without forms; keep CSRF protection in real projects
@require_POST
def login(request: Any) -> Any:
    request.session["user"] = request.POST["user"]
    return HttpResponse("logged in\n")


@csrf_exempt
@require_POST
def logout(request: Any) -> Any:
    request.session.flush()
    return HttpResponse("logged out\n")


def session_login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse anonymous requests with 403, before any WebSocket upgrade."""

    @functools.wraps(view)
    def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
        if "user" not in request.session:
            return HttpResponseForbidden("log in first\n")
        return view(request, *args, **kwargs)

    return wrapper


@session_login_required
@django_websocket()
def whoami(request: Any, websocket: Any) -> None:
    user = request.session["user"]
    websocket.send(f"hello {user}")
    for message in websocket:
        websocket.send(f"{user}: {message}")


urlpatterns = [
    path("", index),
    path("ws/echo", echo),
    path("login", login),
    path("logout", logout),
    path("ws/whoami", whoami),
]

# An upgrade refused before django_websocket (session_login_required's 403)
# then ends its connection, as syncws's own refusals do.
application = close_refused_upgrades(get_wsgi_application())
