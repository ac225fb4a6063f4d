"""WebSocket extensions (RFC 6455 §9).

syncws implements one extension, permessage-deflate (RFC 7692), in
:mod:`syncws.extensions.permessage_deflate`. Like :mod:`syncws.handshake` and
:mod:`syncws.framing`, extension modules are pure: they negotiate over parsed
``Sec-WebSocket-Extensions`` elements and transform frame payloads, and never
touch a socket.
"""
