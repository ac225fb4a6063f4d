"""The request path that every server-side decision sees: one decoded form.

Theory of operation: a check on a path protects only what the router
reaches with the same path. When ``process_request`` read the request-target
as received (``/%70rivate/feed``) while Flask routed the decoded
``PATH_INFO`` (``/private/feed``), a check for ``/private`` was skipped and
the private handler ran. So the path is decoded once, the way WSGI servers
and frameworks decode it, and that one form goes to ``process_request``,
``extra_headers``, ``websocket.path`` and the handler, in :func:`~syncws.serve`
and in :mod:`syncws.wsgi` alike; the request-target as received stays on
``websocket.request_target``, for logs and for code that must see the bytes.

The rules:

* the path is percent-decoded, then read as UTF-8 (as werkzeug and Django
  read ``PATH_INFO``);
* a path that isn't UTF-8 once decoded, or that holds a control character
  (``%00``, ``%0A``...), is refused with 400: frameworks disagree on those
  (replacement characters, re-encoding), and no route needs them;
* so is a path with a ``?`` or ``#`` once decoded (``%3F``, ``%23``): the
  query follows the path after a ``?``, so ``/metrics%3F`` would read as
  ``/metrics`` to every hook that splits it off (``--metrics``' own did),
  while a proxy in front, which matches the decoded path, took it for
  another one than the ``/metrics`` it denies to the public;
* nothing else is normalized, as WSGI servers don't: ``%2F`` becomes ``/``,
  and dot segments and doubled slashes stay, so a router that matches paths
  literally sees exactly what the checks saw;
* the query follows as received, after ``?``, not decoded (as
  ``QUERY_STRING``): the first ``?`` ends the path.

This module is pure: strings in, strings out.
"""

from __future__ import annotations

import re
import urllib.parse

from .exceptions import InvalidMessage

__all__ = ["check_path", "decode_path", "decode_target"]

# Control characters (C0, DEL, C1), which no route needs and which logs and
# file systems take badly.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What ends a path in a request-target: decoded inside one, it would pass
# for the start of the query or of a fragment.
_DELIMITER_RE = re.compile(r"[?#]")
# The scheme and authority of an absolute-form target (RFC 9112 §3.2.2):
# what a proxy may forward, and what a server must accept.
_ABSOLUTE_FORM_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")


def check_path(path: str) -> str:
    """Refuse a decoded path that holds a control character, a ``?`` or a ``#``.

    Args:
        path: a decoded path (a framework's, such as Django's
            ``request.path``).

    Returns:
        The path, unchanged.

    Raises:
        InvalidMessage: it holds a control character, a ``?`` or a ``#``.
    """
    if _CONTROL_RE.search(path):
        raise InvalidMessage("the request path holds a control character once percent-decoded")
    if _DELIMITER_RE.search(path):
        raise InvalidMessage("the request path holds a '?' or '#' once percent-decoded (%3F, %23)")
    return path


def decode_path(raw: bytes) -> str:
    """Read a percent-decoded path as text.

    Args:
        raw: the path's bytes, percent-decoded (as WSGI's ``PATH_INFO``
            holds them).

    Returns:
        The path.

    Raises:
        InvalidMessage: the bytes aren't UTF-8 or hold a control character,
            a ``?`` or a ``#``.
    """
    try:
        path = raw.decode()
    except UnicodeDecodeError:
        raise InvalidMessage("the request path isn't UTF-8 once percent-decoded") from None
    return check_path(path)


def decode_target(target: str) -> str:
    """The decoded path of a request-target, followed by its query as received.

    ``/caf%C3%A9/%70rivate?room=1`` gives ``/café/private?room=1``; an
    absolute-form target (``http://host/chat``) gives its path.

    Args:
        target: the request-target of the request line (visible ASCII).

    Returns:
        The path percent-decoded, then ``?`` and the query if there is one.

    Raises:
        InvalidMessage: the target isn't a path or an absolute URI (``*``,
            ``host:port``), or its path doesn't decode (see
            :func:`decode_path`).
    """
    if not target.startswith("/"):
        scheme_and_authority = _ABSOLUTE_FORM_RE.match(target)
        if scheme_and_authority is None:
            raise InvalidMessage("the request target isn't a path ('/...') or an absolute URI")
        target = target[scheme_and_authority.end():]
        if not target.startswith("/"):
            target = "/" + target
    path, _, query = target.partition("?")
    if "%" in path:  # else the request line's check left nothing to decode
        path = decode_path(urllib.parse.unquote_to_bytes(path))
    return f"{path}?{query}" if query else path
