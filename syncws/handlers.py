"""The application's handler: how it is called, and how its end closes the connection.

:func:`~syncws.serve` calls a handler ``handler(websocket, path)`` or
``handler(websocket)``, as its signature asks (:func:`takes_path`), in the
connection's thread; :func:`~syncws.serve` and :mod:`syncws.wsgi` both run it
through :func:`run_handler`, which closes the connection with the code its
end deserves.
"""

from __future__ import annotations

import types
from typing import Any, Callable

from .exceptions import ConnectionClosed
from .framing import CloseCode
from .protocol import WebSocketCommonProtocol

__all__ = ["run_handler", "takes_path"]


def run_handler(protocol: WebSocketCommonProtocol, handler: Callable[[], Any]) -> None:
    """Run a connection's handler, then close the connection as its end deserves.

    :func:`~syncws.serve` and :mod:`syncws.wsgi` run handlers through it. The close
    code tells the client the truth: 1000 when the handler returns; 1011
    (internal error) when it raises anything, :exc:`BaseException`
    included (``sys.exit()``, gunicorn's worker timeout, which raises
    :exc:`SystemExit` in the handler, :exc:`KeyboardInterrupt`,
    :exc:`GeneratorExit`); nothing more when it ends on
    :exc:`~syncws.ConnectionClosed` (the connection closed under it: the
    normal way for a handler to end). The errors are logged.

    Args:
        protocol: the open connection.
        handler: the handler, bound to its arguments.

    Raises:
        BaseException: what the handler raised if it isn't an
            :exc:`Exception`, again, once the close frame is out: it was
            meant for the thread or the process (a worker told to exit).
    """
    try:
        handler()
    except ConnectionClosed as exc:
        protocol.logger.debug("%s: handler ended by %s", protocol, exc)
    except Exception:
        protocol.logger.exception("%s: the handler raised", protocol)
        protocol.close(CloseCode.INTERNAL_ERROR, "internal error")
    except BaseException as exc:
        protocol.logger.error("%s: the handler was stopped by %s", protocol, type(exc).__name__)
        protocol.close(CloseCode.INTERNAL_ERROR, "internal error")
        raise
    else:
        protocol.close()


def takes_path(handler: Callable[..., Any]) -> bool:
    """Tell a seed-style ``handler(websocket, path)`` from ``handler(websocket)``.

    A plain function or method is read from its code object; any other
    callable through :func:`inspect.signature`, imported only then: the
    module costs a server process close to a megabyte of memory.

    Args:
        handler: the application's handler.

    Returns:
        Whether to call it with the path too.
    """
    function, bound = handler, 0
    if isinstance(handler, types.MethodType):
        function, bound = handler.__func__, 1
    if isinstance(function, types.FunctionType):
        code = function.__code__
        positional = code.co_argcount - len(function.__defaults__ or ()) - bound
        variadic = bool(code.co_flags & _CO_VARARGS)
    else:
        import inspect

        try:
            parameters = inspect.signature(handler).parameters.values()
        except (TypeError, ValueError):
            return True
        positional = sum(
            1 for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        )
        variadic = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    return positional >= 2 or (variadic and positional < 2)


# inspect.CO_VARARGS, without importing inspect: the code flag of a *args parameter.
_CO_VARARGS = 0x04
