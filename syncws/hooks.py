"""What the server's handshake hooks take and return.

:func:`~syncws.serve` lets an application step into the opening handshake:

- ``process_request(path, request_headers)`` runs first and may answer
  plain HTTP instead (a health check, a 401) by returning ``(status,
  headers, body)`` - or :func:`respond`'s :class:`ServerResponse`, which is
  that triple;
- ``origins`` admits requests by ``Origin`` (:func:`origin_allowed`);
- ``select_subprotocol(connection, subprotocols)`` picks the subprotocol;
- ``process_response(connection, request, response)`` sees every response
  the server is about to send, the 101 and the refusals alike, and may
  change its headers in place (return ``None``) or return another response.

The names and signatures follow ``websockets.sync.server`` (13 and later),
except ``process_request``, which keeps the seed's ``(path, headers)``.
"""

from __future__ import annotations

import http
import re
from typing import Any, Callable, Optional, Sequence, Union

from .datastructures import Headers, ServerResponse
from .http import Request

__all__ = ["ServerResponse", "respond", "as_response", "origin_allowed", "check_origins", "Origins", "ProcessResponse"]


#: ``process_response(connection, request, response)``: ``None`` keeps the
#: (possibly modified) response, a :class:`ServerResponse` or a triple
#: replaces it.
ProcessResponse = Callable[[Any, Request, ServerResponse], Any]

#: What ``origins`` holds: exact ``Origin`` values, compiled regular
#: expressions (matched against the whole value), and ``None`` for a request
#: without ``Origin``.
Origins = Sequence[Union[str, "re.Pattern[str]", None]]


def respond(status: int, text: str) -> ServerResponse:
    """Build a plain-text HTTP response, e.g. to return from ``process_request``.

    ::

        def health_check(path, request_headers):
            if path == "/healthz":
                return syncws.respond(200, "OK\\n")
            return None

    Args:
        status: the HTTP status, e.g. 200 or ``http.HTTPStatus.NOT_FOUND``.
        text: the body, sent as UTF-8 with ``Content-Type: text/plain;
            charset=utf-8``.

    Returns:
        The response, usable wherever ``(status, headers, body)`` is.

    Raises:
        ValueError: ``status`` isn't a known HTTP status.
        TypeError: ``text`` isn't a str.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    status = http.HTTPStatus(status)
    body = text.encode()
    headers = Headers([("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return ServerResponse(int(status), headers, body)


def as_response(answer: Any, what: str) -> ServerResponse:
    """Read a hook's answer, a :class:`ServerResponse` or ``(status, headers, body)``.

    Args:
        answer: what the hook returned (not ``None``).
        what: the hook's name, for the error message.

    Returns:
        The answer as a :class:`ServerResponse`, its headers a fresh
        :class:`~syncws.http.Headers` unless they already are one.

    Raises:
        TypeError: the answer has another shape.
    """
    if isinstance(answer, ServerResponse):
        return answer
    try:
        status, headers, body = answer
    except (TypeError, ValueError):
        raise TypeError(
            f"{what} must return None, a ServerResponse or (status, headers, body), got {answer!r}"
        ) from None
    if not isinstance(headers, Headers):
        headers = Headers(headers)
    return ServerResponse(int(status), headers, bytes(body))


def origin_allowed(origin: Optional[str], origins: Origins) -> bool:
    """Tell whether a request's ``Origin`` is among the allowed ones.

    Args:
        origin: the request's ``Origin`` header, ``None`` when absent.
        origins: exact values, compiled patterns (``re.fullmatch`` against
            the whole header), and ``None`` to admit requests without one.

    Returns:
        Whether it is allowed.
    """
    for allowed in origins:
        if allowed is None or isinstance(allowed, str):
            if origin == allowed:
                return True
        elif origin is not None and allowed.fullmatch(origin):
            return True
    return False


def check_origins(origins: Any) -> None:
    """Check ``origins`` when :func:`~syncws.serve` is called.

    Args:
        origins: the argument.

    Raises:
        TypeError: it isn't ``None`` or a sequence of str, compiled pattern
            and ``None``.
    """
    if origins is None:
        return
    if isinstance(origins, (str, bytes)) or not isinstance(origins, Sequence):
        raise TypeError(f"origins must be a list of str, re.Pattern or None, got {origins!r}")
    for allowed in origins:
        if allowed is not None and not isinstance(allowed, (str, re.Pattern)):
            raise TypeError(f"origins must hold str, re.Pattern or None, got {allowed!r} in {origins!r}")
