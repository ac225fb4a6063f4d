"""HTTP Basic authentication for the opening handshake (RFC 7617).

:func:`basic_auth` builds a ``process_request`` for :func:`~syncws.serve`
that answers 401 unless the request carries valid credentials.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import http
from typing import Callable, Iterable, Optional, Tuple, Union

from .http import Headers

__all__ = ["basic_auth"]

Credentials = Union[Tuple[str, str], Iterable[Tuple[str, str]]]


def _parse_authorization(value: Optional[str]) -> Optional[Tuple[str, str]]:
    """Return ``(username, password)`` from a Basic ``Authorization`` value."""
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


def basic_auth(
    credentials: Optional[Credentials] = None,
    *,
    check_credentials: Optional[Callable[[str, str], bool]] = None,
    realm: str = "syncws",
) -> Callable[[str, Headers], Optional[Tuple[int, Headers, bytes]]]:
    """Build a ``process_request`` that requires HTTP Basic authentication.

    Passwords are compared in constant time. The authenticated user name is
    left in the request headers for the handler (``Authorization``)::

        serve(handler, "localhost", 8765,
              process_request=basic_auth(("alice", "secret")))

    Args:
        credentials: one ``(username, password)`` pair or several.
        check_credentials: ``(username, password) -> bool`` instead of
            fixed credentials.
        realm: the realm named in ``WWW-Authenticate``.

    Returns:
        A ``process_request(path, request_headers)`` callable.

    Raises:
        TypeError: neither or both of ``credentials`` and
            ``check_credentials`` were given.
    """
    if (credentials is None) == (check_credentials is None):
        raise TypeError("pass either credentials or check_credentials")
    if credentials is not None:
        pairs = [credentials] if isinstance(credentials, tuple) and len(credentials) == 2 and isinstance(credentials[0], str) else list(credentials)
        known = {username: password for username, password in pairs}

        def check_credentials(username: str, password: str) -> bool:
            expected = known.get(username)
            return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    checker = check_credentials
    assert checker is not None

    def process_request(path: str, request_headers: Headers) -> Optional[Tuple[int, Headers, bytes]]:
        parsed = _parse_authorization(request_headers.get_joined("Authorization"))
        if parsed is not None and checker(*parsed):
            return None
        headers = Headers([("WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"')])
        message = "Missing credentials.\n" if parsed is None else "Invalid credentials.\n"
        return http.HTTPStatus.UNAUTHORIZED, headers, message.encode()

    return process_request
