"""A gunicorn configuration for applications with syncws WebSocket routes.

``gunicorn -c python:syncws.gunicorn_conf ...``: on SIGTERM, open
WebSockets are closed with 1001 before the worker stops (see
:func:`syncws.wsgi.gunicorn_post_worker_init`). With a config file of your
own, import the hook there instead::

    from syncws.wsgi import gunicorn_post_worker_init as post_worker_init
"""

from .wsgi import gunicorn_post_worker_init as post_worker_init

__all__ = ["post_worker_init"]
