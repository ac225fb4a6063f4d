#!/usr/bin/env python3
"""A chat server: rooms at ``/chat/<room>``, a page at ``/``.

::

    python examples/chat/server.py --port 8000                    # one process
    python examples/chat/server.py --port 8001 --redis redis://localhost:6379/0
    python examples/chat/server.py --port 8002 --redis redis://localhost:6379/0
    python examples/chat/server.py --port 8003 --redis redis://localhost:6379/0 --history 1000

Every text message a client sends to ``ws://HOST:PORT/chat/<room>`` goes to
every client of that room, the sender included. Without ``--redis`` the rooms
live in this process (:class:`syncws.fanout.LocalFanout`); with it, every
process started with the same Redis URL shares them
(:class:`syncws.fanout.RedisFanout`), so a load balancer may send the members
of one room to different processes or machines. A Redis restart shorter than
``--publish-timeout`` (5 s) costs no client its connection nor, as a rule, a
message; a message that can't be handed to Redis in that time is answered
with a notice to its sender (``NOT_SENT``).

With ``--history N`` (and ``--redis``), each room keeps its last ``N``
messages in a Redis stream (:class:`syncws.streams.RedisStreamFanout`), and
the protocol is JSON: each message reaches the clients as ``{"id": "<id>",
"text": "<message>"}``. A client that connects to
``/chat/<room>?since=<id>`` first gets every message of the room after that
id, then the live ones; ``?since=`` (empty) asks for the whole history. When
the id can't be recovered (older than the history, or the room's history
was lost), the first message is ``{"recovered": false}``, then what the
history holds. ``?name=`` names the client: who is in the room comes first
(``{"present": {"<member>": "<name>", ...}}``), then each join and leave
(``{"id": ..., "joined": "<name>", "member": ...}``, ``"left"``). A message
that can't be handed to Redis is answered with ``{"error": NOT_SENT}``.

``GET /`` serves a small chat page, which reconnects by itself (with the last
id it saw, with ``--history``); ``GET /?room=lobby&name=ann`` joins at once.
``GET /stats`` answers the fan-out's counters and gauges as JSON
(:class:`syncws.fanout.FanoutStats`: messages, members, what waits for slow
ones, failures, gaps, reconnects, recoveries), which the tests and a
monitoring probe can read. SIGTERM or Ctrl-C closes every connection with
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
import urllib.parse
from typing import Optional, Tuple

import syncws
from syncws.fanout import Fanout, Gap, LocalFanout, PublishError, RedisFanout
from syncws.http import Headers
from syncws.streams import Event, Message, RedisStreamFanout

logger = logging.getLogger("chat")

ROOM_PREFIX = "/chat/"
MAX_ROOM_NAME = 64
MAX_NAME = 32
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
  #status, #who { color: #666; }
</style>
</head>
<body>
<h1>syncws chat</h1>
<p>Room <input id="room" value="lobby" size="12"> Name <input id="name" size="10">
<button id="join">Join</button> <span id="status">not connected</span></p>
<p id="who"></p>
<div id="log"></div>
<form id="form"><input id="text" size="50" autocomplete="off"> <button>Send</button></form>
<script>
const HISTORY = __HISTORY__;  // the server keeps history: JSON messages with ids
let ws = null;  // the current connection
let room = null;  // the room joined
let lastId = null;  // the id of the last message seen: where a reconnection resumes
let present = {};  // member -> name
let delay = 0;  // before the next reconnection, in ms
window.received = [];  // every message shown, for tests
window.opened = 0;  // connections opened
const $ = (id) => document.getElementById(id);
const log = (line) => { $("log").textContent += line + "\\n"; $("log").scrollTop = $("log").scrollHeight; };
const status = (text) => { $("status").textContent = text; };
const showWho = () => {
  const names = Object.values(present).sort();
  $("who").textContent = names.length + " here: " + names.join(", ");
};
function show(data) {
  if (!HISTORY) { window.received.push(data); log(data); return; }
  const event = JSON.parse(data);
  if (event.id) lastId = event.id;
  if ("text" in event) { window.received.push(event.text); log(event.text); }
  else if (event.recovered === false) log("[some messages could not be recovered]");
  else if ("present" in event) { present = event.present; showWho(); }
  else if ("joined" in event) { present[event.member] = event.joined; showWho(); }
  else if ("left" in event) { delete present[event.member]; showWho(); }
  else if ("error" in event) log("[" + event.error + "]");
}
function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  let url = scheme + location.host + "/chat/" + encodeURIComponent(room) + "?name=" + encodeURIComponent($("name").value);
  if (HISTORY) url += "&since=" + encodeURIComponent(lastId === null ? "" : lastId);
  const socket = ws = new WebSocket(url);
  socket.onopen = () => { delay = 0; window.opened += 1; status("connected to " + room); };
  socket.onmessage = (event) => show(event.data);
  socket.onclose = (event) => {
    if (socket !== ws) return;  // left for another room
    if (event.code === 1008 && event.reason.startsWith("room names")) { status("refused: " + event.reason); return; }
    // Back with the last id seen: what was missed comes first.
    delay = Math.min(Math.max(2 * delay, 250), 5000);
    status("disconnected (" + event.code + "), reconnecting");
    setTimeout(connect, delay * (0.5 + Math.random() / 2));
  };
}
function join() {
  const old = ws;
  ws = null;
  if (old) old.close();
  room = $("room").value;
  lastId = null;  // the whole history of the new room
  present = {};
  $("log").textContent = "";
  connect();
}
$("join").onclick = join;
$("form").onsubmit = (event) => {
  event.preventDefault();
  const text = $("text");
  if (ws && ws.readyState === WebSocket.OPEN && text.value) { ws.send(text.value); text.value = ""; }
};
const query = new URLSearchParams(location.search);
if (query.get("room")) { $("room").value = query.get("room"); $("name").value = query.get("name") || ""; join(); }
</script>
</body>
</html>
"""


def as_json(event: Event) -> Optional[str]:
    """What a client is sent for each event of a room with history (once per event, not per client)."""
    if isinstance(event, Message):
        return json.dumps({"id": event.id, "text": event.data}) if isinstance(event.data, str) else None
    if isinstance(event, Gap):
        return json.dumps({"recovered": False})
    return json.dumps({"id": event.id, "joined" if event.joined else "left": event.info, "member": event.member})


class ChatServer:
    """The rooms of one process, over a fan-out."""

    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout
        # With history, the JSON protocol (ids, recovery, presence).
        self.history = fanout if isinstance(fanout, RedisStreamFanout) else None
        self.page = PAGE.replace("__HISTORY__", "true" if self.history else "false").encode()

    def process_request(self, path: str, request_headers: Headers) -> Optional[Tuple[int, list, bytes]]:
        """Answer plain HTTP for ``/`` and ``/stats``; let ``/chat/<room>`` through."""
        path = path.partition("?")[0]
        if path.startswith(ROOM_PREFIX):
            return None  # go on with the WebSocket handshake
        if path == "/":
            return 200, [("Content-Type", "text/html; charset=utf-8")], self.page
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
        try:
            not_sent = NOT_SENT if self.history is None else json.dumps({"error": NOT_SENT})
            if self.history is None:
                self.fanout.subscribe(room, websocket)
            else:
                self.join_with_history(self.history, room, websocket)
            for message in websocket:
                if not isinstance(message, str):
                    continue  # a text chat
                try:
                    self.fanout.publish(room, message)
                except PublishError as exc:
                    # Redis was unreachable for longer than
                    # --publish-timeout: the message didn't go. Say so, and stay.
                    logger.warning("a message from %s was not sent: %s", websocket.remote_address, exc)
                    websocket.send(not_sent)
        finally:
            self.fanout.unsubscribe_all(websocket)

    def join_with_history(self, rooms: RedisStreamFanout, room: str, websocket: syncws.WebSocketServerProtocol) -> None:
        """Join ``room``: what the client missed since its last id first, then who is there."""
        # The query as the client sent it (websocket.path has the path decoded).
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(websocket.request_target).query, keep_blank_values=True)
        since = query["since"][0] if "since" in query else None
        name = "".join(c for c in query.get("name", [""])[0] if c.isprintable())[:MAX_NAME] or "anonymous"
        rooms.subscribe(room, websocket, since=since, info=name)
        try:
            websocket.send(json.dumps({"present": rooms.presence(room)}))
        except ConnectionError as exc:  # Redis away: the joins and leaves that follow will tell
            logger.warning("who is in %r is unknown: %s", room, exc)


def report_gap(gap: Gap) -> None:
    """Log what the fan-out reports lost (the fan-out logs it as well)."""
    rooms = ", ".join(map(repr, gap.channels))  # peers name rooms: repr keeps a line one line
    if gap.duration is not None:
        logger.warning("chat: %.2f s without Redis; rooms %s may have missed messages", gap.duration, rooms)
    elif gap.lost is not None:
        logger.warning("chat: room %s missed %s messages", rooms, gap.lost)
    else:
        logger.warning("chat: the history of room %s was lost after %s", rooms, gap.since)


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
    parser.add_argument(
        "--publish-timeout", type=float, default=5.0, metavar="SECONDS",
        help="with --redis: how long a message waits for an unreachable Redis before its sender is told (default: 5)",
    )
    parser.add_argument(
        "--history", type=int, metavar="N",
        help="with --redis: keep each room's last N messages, and let clients recover what they missed",
    )
    parser.add_argument(
        "--history-age", type=float, default=86400.0, metavar="SECONDS",
        help="with --history: keep messages this long at most (default: a day)",
    )
    args = parser.parse_args(argv)
    if args.history is not None and not args.redis:
        parser.error("--history needs --redis")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s: %(message)s")

    fanout: Fanout
    if args.redis and args.history is not None:
        fanout = RedisStreamFanout(
            args.redis, history=args.history, max_age=args.history_age, encode=as_json, presence=True,
            on_gap=report_gap, ping_interval=args.redis_ping, ping_timeout=args.redis_ping,
            publish_timeout=args.publish_timeout,
        )
    elif args.redis:
        fanout = RedisFanout(
            args.redis, on_gap=report_gap, ping_interval=args.redis_ping, ping_timeout=args.redis_ping,
            publish_timeout=args.publish_timeout,
        )
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
