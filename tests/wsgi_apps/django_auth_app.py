"""A Django project with django.contrib.auth, for what docs/wsgi.rst says of login_required.

* ``/ws/stock``: Django's ``login_required`` above ``django_websocket``: an
  anonymous client is redirected (302) to ``LOGIN_URL``, which isn't a
  WebSocket endpoint (here, nothing answers it: 404);
* ``/ws/refusing``: a decorator that refuses anonymous clients with 403, as
  the docs recommend.
"""

import functools
from typing import Any, Callable

from django.conf import settings

settings.configure(
    SECRET_KEY="tests only",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ],
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
)

from django.core.wsgi import get_wsgi_application  # noqa: E402  (after settings)

application = get_wsgi_application()

from django.contrib.auth.decorators import login_required  # noqa: E402  (after setup)
from django.core.exceptions import PermissionDenied  # noqa: E402
from django.urls import path  # noqa: E402

from syncws.wsgi import django_websocket  # noqa: E402


def refuse_anonymous(view: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse anonymous clients with 403 (login_required would redirect them)."""

    @functools.wraps(view)
    def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
        if not request.user.is_authenticated:
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


def echo(request: Any, websocket: Any) -> None:
    for message in websocket:
        websocket.send(message)


urlpatterns = [
    path("ws/stock", login_required(django_websocket()(echo))),
    path("ws/refusing", refuse_anonymous(django_websocket()(echo))),
]
