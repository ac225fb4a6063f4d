"""A gunicorn configuration for applications with syncws WebSocket routes.

``gunicorn -c python:syncws.gunicorn_conf ...`` installs
:func:`syncws.wsgi.gunicorn_post_worker_init` as the ``post_worker_init``
hook: on SIGTERM, open WebSockets are closed with 1001 before the worker
stops, and a sync worker's heartbeat goes on while it serves one.

gunicorn reads one configuration file, and ``-c`` replaces the
``./gunicorn.conf.py`` it reads by default. So this module reads that file
itself when there is one (found as gunicorn finds it: in the directory
gunicorn starts in), and keeps every setting it makes; a
``post_worker_init`` or ``on_starting`` hook it defines runs after syncws's.
gunicorn's log says so when it starts.

With a configuration file of your own, you may call the hook from it
instead, and leave ``-c`` out::

    from syncws.wsgi import gunicorn_post_worker_init

    def post_worker_init(worker):
        gunicorn_post_worker_init(worker)
        ...  # your own
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Callable, Dict, Optional

from .wsgi import gunicorn_post_worker_init

__all__ = ["post_worker_init", "on_starting"]

# gunicorn's default configuration file, by gunicorn's own rule.
_DEFAULT_CONFIG = os.path.join(os.path.abspath(os.getcwd()), "gunicorn.conf.py")


def _settings_of(path: str) -> Dict[str, Any]:
    """Run a gunicorn configuration file as gunicorn does; return its names."""
    spec = importlib.util.spec_from_file_location("__syncws_composed_config__", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: value for name, value in vars(module).items() if not name.startswith("__")}


_composed = _DEFAULT_CONFIG if os.path.isfile(_DEFAULT_CONFIG) else None
_theirs = _settings_of(_DEFAULT_CONFIG) if _composed is not None else {}
# Their settings are this module's, for gunicorn to read: bind, workers...
globals().update({name: value for name, value in _theirs.items() if name not in __all__ and name[:1] != "_"})
_their_post_worker_init: Optional[Callable[[Any], Any]] = _theirs.get("post_worker_init")
_their_on_starting: Optional[Callable[[Any], Any]] = _theirs.get("on_starting")


# gunicorn checks that a hook takes exactly its arguments: one here.
def post_worker_init(worker: Any) -> None:
    """gunicorn's ``post_worker_init``: syncws's, then the project's, if any."""
    gunicorn_post_worker_init(worker)
    if _their_post_worker_init is not None:
        _their_post_worker_init(worker)


def on_starting(server: Any) -> None:
    """gunicorn's ``on_starting``: say whose settings are in use, then the project's hook."""
    if _composed is not None:
        server.log.info("syncws.gunicorn_conf: also using the settings and hooks of %s", _composed)
    if _their_on_starting is not None:
        _their_on_starting(server)
