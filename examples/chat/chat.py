"""The chat of ``server.py``, for ``python -m syncws serve``.

::

    cd examples/chat
    python -m syncws serve --port 8765 --process-request chat:process_request chat:handler
    CHAT_REDIS=redis://127.0.0.1:6379/0 python -m syncws serve --processes 4 --port 8765 \\
        --process-request chat:process_request chat:handler
    CHAT_REDIS=redis://127.0.0.1:6379/0 CHAT_HISTORY=1000 python -m syncws serve --processes 4 \\
        --port 8765 --process-request chat:process_request chat:handler

``handler`` serves the rooms (``/chat/<room>``), ``process_request`` the page
(``/``) and the fan-out's counters (``/stats``), as ``server.py`` does; the
command line adds what an operator sets (limits, TLS, health checks,
metrics, logs, worker processes). The fan-out is made when the module is
imported, in each process: on the Redis that ``CHAT_REDIS`` names, so that
rooms span every process and machine using it, or within the process
without it (one process only: with ``--processes``, each worker would have
rooms of its own). ``CHAT_HISTORY=N`` keeps each room's last ``N``
messages, for a day at most, as ``server.py --history N`` does (and its
JSON protocol).
"""

from __future__ import annotations

import os

from server import ChatServer, as_json, report_gap

from syncws.fanout import Fanout, LocalFanout, RedisFanout
from syncws.streams import RedisStreamFanout

_redis = os.environ.get("CHAT_REDIS")
_history = os.environ.get("CHAT_HISTORY")
fanout: Fanout
if _redis and _history:
    # Clients name the rooms: without max_age, each room made up would keep
    # its history in Redis for ever.
    fanout = RedisStreamFanout(
        _redis, history=int(_history), max_age=86400.0, encode=as_json, presence=True, on_gap=report_gap
    )
elif _redis:
    fanout = RedisFanout(_redis, on_gap=report_gap)
else:
    fanout = LocalFanout()
rooms = ChatServer(fanout)

handler = rooms.handler
process_request = rooms.process_request
