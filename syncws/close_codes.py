"""Close codes (RFC 6455 §7.4): the registry, their meaning, and which may be sent.

This module imports nothing of syncws but :mod:`syncws.safetext`, so that
:mod:`syncws.exceptions` (whose :exc:`~syncws.ConnectionClosed` describes its
code) and :mod:`syncws.framing` (which parses and builds close frames) can
both use it without importing each other. :mod:`syncws.framing` re-exports
its names.
"""

from __future__ import annotations

import enum

from .safetext import escape

__all__ = [
    "CloseCode",
    "OK_CLOSE_CODES",
    "describe_close_code",
    "describe_close",
    "is_valid_close_code",
]


class CloseCode(enum.IntEnum):
    """Close codes (RFC 6455 §7.4 and the IANA registry)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    # 1004 is reserved.
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015


#: The codes of a normal closure: :exc:`~syncws.ConnectionClosedOK` is raised
#: and iteration over a connection ends quietly when the connection's close
#: code is one of them. 1005 is a close frame without a code, which is a
#: normal close too.
OK_CLOSE_CODES = frozenset(
    {CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD}
)

_CLOSE_CODE_EXPLANATIONS = {
    CloseCode.NORMAL_CLOSURE: "OK",
    CloseCode.GOING_AWAY: "going away",
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.UNSUPPORTED_DATA: "unsupported data",
    CloseCode.NO_STATUS_RCVD: "no status received",
    CloseCode.ABNORMAL_CLOSURE: "abnormal closure",
    CloseCode.INVALID_DATA: "invalid frame payload data",
    CloseCode.POLICY_VIOLATION: "policy violation",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
    CloseCode.MANDATORY_EXTENSION: "mandatory extension",
    CloseCode.INTERNAL_ERROR: "internal error",
    CloseCode.SERVICE_RESTART: "service restart",
    CloseCode.TRY_AGAIN_LATER: "try again later",
    CloseCode.BAD_GATEWAY: "bad gateway",
    CloseCode.TLS_HANDSHAKE: "TLS handshake failure",
}

# Codes that only describe a connection locally and must never be sent in a
# close frame (RFC 6455 §7.4.1): 1004 reserved, 1005, 1006, 1015.
_SENDABLE_REGISTERED_CODES = frozenset(range(1000, 1004)) | frozenset(range(1007, 1015))


def describe_close_code(code: int) -> str:
    """Return a short human explanation of a close code, for logs and errors."""
    try:
        return _CLOSE_CODE_EXPLANATIONS[CloseCode(code)]
    except ValueError:
        if 3000 <= code < 4000:
            return "registered"
        if 4000 <= code < 5000:
            return "private use"
        return "unknown"


def describe_close(code: int, reason: str = "") -> str:
    """Render a close code and reason for logs and errors: ``1001 (going away) bye``.

    The reason is the peer's text: it is escaped (:func:`syncws.safetext.escape`),
    so a line feed or an escape sequence in it shows as ``\\x0a`` or ``\\x1b``.
    """
    text = f"{code} ({describe_close_code(code)})"
    return f"{text} {escape(reason)}" if reason else text


def is_valid_close_code(code: int) -> bool:
    """Tell whether ``code`` may appear in a close frame (RFC 6455 §7.4)."""
    return code in _SENDABLE_REGISTERED_CODES or 3000 <= code < 5000
