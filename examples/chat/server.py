#!/usr/bin/env python3
"""A chat server: rooms at ``/chat/<room>``, a page at ``/``.

::

    python examples/chat/server.py --port 8000                    # one process
    python examples/chat/server.py --port 8001 --redis redis://localhost:6379/0
    python examples/chat/server.py --port 8002 --redis redis://localhost:6379/0

Every text message a client sends to ``ws://HOST:PORT/chat/<room>`` goes to
every client of that room, the sender included. Without ``--redis`` the rooms
live in this process (:class:`syncws.fanout.LocalFanout`); with it, every
process started with the same Redis URL shares them
(:class:`syncws.fanout.RedisFanout`), so a load balancer may send the members
of one room to different processes or machines. A Redis restart shorter than
5 s (``publish_timeout``) costs no client its connection nor, as a rule, a
message; a message that can't be handed to Redis in that time is answered
with a notice to its sender (``NOT_SENT``).

``GET /`` serves a small chat page; ``GET /stats`` answers the fan-out's
counters and gauges as JSON (:class:`syncws.fanout.FanoutStats`: messages,
members, what waits for slow ones, failures, gaps, reconnects), which the
tests and a monitoring probe can read. SIGTERM or Ctrl-C closes every connection with
1001 (going away).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from typing import Optional, Tuple

import syncws
from syncws.fanout import Fanout, Gap, LocalFanout, PublishError, RedisFanout
from syncws.http import Headers

logger = logging.getLogger("chat")

ROOM_PREFIX = "/chat/"
MAX_ROOM_NAME = 64
# What a client is told when its message couldn't be handed to Redis.
NOT_SENT = "[not sent: the chat service is unreachable, please try again]"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>syncws chat</title>
<style>
  body { font: 15px sans-serif; max-width: 40em; margin: 2em auto; }
  #log { border: 1px solid #ccc; height: 20em; overflow-y: auto; padding: .5em; white-space: pre-wrap; }
  #status { color: #666; }
</style>
</head>
<body>
<h1>syncws chat</h1>
<p>Room <input id="room" value="lobby" size="12"> <button id="join">Join</button>
<span id="status">not connected</span></p>
<div id="log"></div>
<form id="form"><input id="text" size="50" autocomplete="off"> <button>Send</button></form>
<script>
let ws = null;
const log = (line) => {
  const box = document.getElementById("log");
  box.textContent += line + "\\n";
  box.scrollTop = box.scrollHeight;
};
document.getElementById("join").onclick = () => {
  if (ws) ws.close();
  const room = encodeURIComponent(document.getElementById("room").value);
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(scheme + location.host + "/chat/" + room);
  const status = document.getElementById("status");
  ws.onopen = () => { status.textContent = "connected to " + room; };
  ws.onclose = (event) => { status.textContent = "closed (" + event.code + ")"; };
  ws.onmessage = (event) => log(event.data);
};
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const text = document.getElementById("text");
  if (ws && ws.readyState === WebSocket.OPEN && text.value) { ws.send(text.value); text.value = ""; }
};
</script>
</body>
</html>
"""


class ChatServer:
    """The rooms of one process, over a fan-out."""

    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout

    def process_request(self, path: str, request_headers: Headers) -> Optional[Tuple[int, list, bytes]]:
        """Answer plain HTTP for ``/`` and ``/stats``; let ``/chat/<room>`` through."""
        path = path.partition("?")[0]
        if path.startswith(ROOM_PREFIX):
            return None  # go on with the WebSocket handshake
        if path == "/":
            return 200, [("Content-Type", "text/html; charset=utf-8")], PAGE.encode()
        if path == "/stats":
            body = dict(dataclasses.asdict(self.fanout.stats), pid=os.getpid())
            return 200, [("Content-Type", "application/json")], json.dumps(body).encode()
        return 404, [("Content-Type", "text/plain")], b"not found: try / or /chat/<room>\n"

    def handler(self, websocket: syncws.WebSocketServerProtocol) -> None:
        """One member: relay each text message it sends to its room."""
        room = websocket.path.partition("?")[0][len(ROOM_PREFIX):]
        if not room or len(room) > MAX_ROOM_NAME or "/" in room:
            websocket.close(1008, f"room names are 1 to {MAX_ROOM_NAME} characters, no '/'")
            return
        self.fanout.subscribe(room, websocket)
        try:
            for message in websocket:
                if not isinstance(message, str):
                    continue  # a text chat
                try:
                    self.fanout.publish(room, message)
                except PublishError as exc:
                    # Redis was unreachable for longer than publish_timeout
                    # (5 s): the message didn't go. Say so, and stay.
                    logger.warning("a message from %s was not sent: %s", websocket.remote_address, exc)
                    websocket.send(NOT_SENT)
        finally:
            self.fanout.unsubscribe_all(websocket)


def report_gap(gap: Gap) -> None:
    """Log what the fan-out reports lost (the fan-out logs it as well)."""
    if gap.duration is not None:
        logger.warning("chat: %.2f s without Redis; rooms %s may have missed messages", gap.duration, ", ".join(gap.channels))
    else:
        logger.warning("chat: room %s missed %s messages", ", ".join(gap.channels), gap.lost)


def main(argv: Optional[list] = None) -> int:
    """Run the chat server until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(description="syncws chat server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port, printed at start")
    parser.add_argument("--redis", metavar="URL", help="share rooms with every server on this Redis, e.g. redis://localhost:6379/0")
    parser.add_argument(
        "--redis-ping", type=float, default=5.0, metavar="SECONDS",
        help="ping Redis this often, and give up on a connection silent this long (default: 5)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s: %(message)s")

    fanout: Fanout
    if args.redis:
        fanout = RedisFanout(args.redis, on_gap=report_gap, ping_interval=args.redis_ping, ping_timeout=args.redis_ping)
    else:
        fanout = LocalFanout()
    chat = ChatServer(fanout)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = syncws.serve(chat.handler, args.host, args.port, process_request=chat.process_request)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        fanout.close()
        return 1
    print(f"serving on ws://{args.host}:{server.port}/ (pid {os.getpid()})", flush=True)
    while not stop.wait(1.0):
        pass
    server.close()
    server.wait_closed()
    fanout.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
