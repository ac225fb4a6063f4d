"""HTTP Basic authentication for the opening handshake (RFC 7617).

:func:`basic_auth` builds a ``process_request`` for :func:`~syncws.serve`
that answers 401 unless the request carries valid credentials.
"""

from __future__ import annotations

import base64
import binascii
import http
from typing import Callable, Iterable, Optional, Tuple, Union

from .datastructures import Headers

__all__ = ["basic_auth", "BasicAuth"]

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


class BasicAuth:
    """The ``process_request`` that :func:`basic_auth` builds.

    Call it as ``process_request(path, request_headers)``: it returns
    ``None`` for a request with valid credentials and a 401 answer
    otherwise. When it let a request through, the server sets
    ``connection.username`` from :meth:`username`.

    Args:
        check_credentials: ``(username, password) -> bool``.
        realm: the realm named in ``WWW-Authenticate``.
    """

    def __init__(self, check_credentials: Callable[[str, str], bool], realm: str) -> None:
        self.check_credentials = check_credentials
        self.realm = realm

    def __call__(self, path: str, request_headers: Headers) -> Optional[Tuple[int, Headers, bytes]]:
        """Let a request with valid credentials through; answer 401 otherwise.

        Args:
            path: the request path (unused).
            request_headers: the request headers.

        Returns:
            ``None``, or ``(401, headers, body)`` with a ``WWW-Authenticate``
            challenge.
        """
        parsed = _parse_authorization(request_headers.get_joined("Authorization"))
        if parsed is not None and self.check_credentials(*parsed):
            return None
        headers = Headers([("WWW-Authenticate", f'Basic realm="{self.realm}", charset="UTF-8"')])
        message = "Missing credentials.\n" if parsed is None else "Invalid credentials.\n"
        return http.HTTPStatus.UNAUTHORIZED, headers, message.encode()

    @staticmethod
    def username(request_headers: Headers) -> Optional[str]:
        """Return the user name of a request's Basic ``Authorization`` header.

        It doesn't check the password: call it on a request that
        :meth:`__call__` let through.

        Args:
            request_headers: the request headers.

        Returns:
            The user name, or ``None`` without Basic credentials.
        """
        parsed = _parse_authorization(request_headers.get_joined("Authorization"))
        return None if parsed is None else parsed[0]


def basic_auth(
    credentials: Optional[Credentials] = None,
    *,
    check_credentials: Optional[Callable[[str, str], bool]] = None,
    realm: str = "syncws",
) -> BasicAuth:
    """Build a ``process_request`` that requires HTTP Basic authentication.

    Passwords are compared in constant time. Once authenticated, the user
    name is ``connection.username`` in the handler::

        def handler(websocket):
            websocket.send(f"Hello {websocket.username}")

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
            import hmac  # loads OpenSSL: only when a server checks passwords

            return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    assert check_credentials is not None
    return BasicAuth(check_credentials, realm)
