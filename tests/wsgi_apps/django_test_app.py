"""The Django example plus the routes tests/test_wsgi.py needs.

Run by the tests with examples/wsgi on sys.path.
"""

from typing import Any

from django.urls import path

import django_app  # examples/wsgi/django_app.py
import path_check
from django_app import application  # noqa: F401  (gunicorn's default name)

from syncws.wsgi import django_websocket


@django_websocket(**path_check.OPTIONS)
def report(request: Any, websocket: Any, **kwargs: Any) -> None:
    path_check.report(websocket)


django_app.urlpatterns += [
    path("private/feed", report),
    path("public/<str:name>", report),
]
