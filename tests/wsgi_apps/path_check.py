"""What the WSGI test apps mount to check that hooks see the path the router routes.

``deny_private`` is the check of issue 21: a ``process_request`` refusing
every path with a ``private`` segment. ``seen_by_extra_headers`` tells the
client, in a header, the path ``extra_headers`` got; ``report`` sends what
the connection holds.
"""

import json
import urllib.parse
from typing import Any, Dict, Optional, Tuple


def deny_private(path: str, request_headers: Any) -> Optional[Tuple[int, Any, bytes]]:
    if "private" in path.partition("?")[0].split("/"):
        return 401, [("Content-Type", "text/plain")], b"log in first\n"
    return None


def seen_by_extra_headers(path: str, request_headers: Any) -> Dict[str, str]:
    return {"X-Hook-Path": urllib.parse.quote(path)}


def report(websocket: Any, *args: Any) -> None:
    websocket.send(json.dumps({"path": websocket.path, "request_target": websocket.request_target}))


OPTIONS: Dict[str, Any] = {"process_request": deny_private, "extra_headers": seen_by_extra_headers}
