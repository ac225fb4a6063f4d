"""The options of ``python -m syncws serve``: parsed once, turned into a server.

::

    python -m syncws serve --port 8765 --max-size 65536 --max-queue 8 \\
        --max-connections 5000 --origin https://app.example --health /healthz \\
        --metrics /metrics --log-format json myapp.server:handler

Theory of operation
-------------------
Every option of :func:`~syncws.serve` that a deployment tunes is an option
here, written as data (:data:`SETTINGS`): its flag, the keyword argument of
:func:`~syncws.serve` it sets, and how its text is read. An option not given
isn't in the parsed namespace at all (``argparse.SUPPRESS``), so
:func:`~syncws.serve` keeps its own default, documented in one place.

One process or many, a server is made the same way: the command line's
single process and each worker of ``--processes`` (:mod:`syncws.workers`)
import the handler, then configure logging (:mod:`syncws.logconfig`: only if
the handler's module didn't), then call :func:`server_options` and
:func:`~syncws.serve`. The supervisor hands its workers the options as they
were given (:func:`worker_arguments`), and each worker parses them with the
same parser, so no option can mean one thing in one process and another in
the next.

Plain HTTP: ``--health PATH`` answers ``GET PATH`` with ``200 OK`` and
``--metrics PATH`` with Prometheus' text (:mod:`syncws.metrics`), through
:func:`~syncws.serve`'s ``process_request`` hook, without a WebSocket
upgrade, in every worker. Under ``--processes``, each worker writes its
metrics to a file every second and the worker that takes the scrape
answers for all of them, each sample labelled ``worker="<n>"``
(:class:`syncws.metrics.GroupMetrics`). With ``--admin-port``, they are
answered on a listener of their own instead (:mod:`syncws.admin`,
:func:`admin_server`), which a server at ``--max-connections`` still
serves; every worker of a group listens there too. There the health check
answers ``503`` once the server began to close (``SIGTERM``) until it is
done draining; the WebSocket port stops listening at once.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
import threading
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from . import logconfig
from .admin import ProcessRequest, routes, serve_admin
from .hooks import check_origins
from .server import WebSocketServer
from .settings import check_settings

__all__ = [
    "SETTINGS", "ProcessRequest", "Setting", "add_arguments", "admin_server", "routes", "server_options",
    "wait_problem", "worker_arguments",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765

#: Seconds a process that was told to stop (``SIGTERM``) waits for its
#: handlers to return (``--shutdown-timeout``); then it gives up on them.
SHUTDOWN_TIMEOUT = 15.0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _limit(text: str) -> Optional[int]:
    """A count or a size, or ``none`` for no limit."""
    return None if text.lower() == "none" else _positive_int(text)


def _seconds(text: str) -> Optional[float]:
    """Seconds, or ``none`` for no limit (or, for keepalive, none at all)."""
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'none', got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def wait_problem(seconds: float) -> Optional[str]:
    """Why ``seconds`` can't be a wait that ends (``--shutdown-timeout``), or ``None`` if it can.

    Also for :class:`~syncws.workers.Supervisor`, which hands its
    ``shutdown_timeout`` to every worker's command line.
    """
    if not 0 < seconds < math.inf:
        return "must be a number of seconds above 0"
    if seconds > threading.TIMEOUT_MAX:  # a wait that long raises OverflowError, at shutdown
        return f"must be at most {threading.TIMEOUT_MAX:.0f} seconds"
    return None


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    problem = wait_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{problem}, got {text}")
    return value


def _regex(text: str) -> "re.Pattern[str]":
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: {exc}") from None


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {value}")
    return value


def _path(text: str) -> str:
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"expected a path starting with /, got {text!r}")
    return text


class Setting(NamedTuple):
    """An option of ``serve`` that is a setting of :func:`~syncws.serve`.

    Attributes:
        flag: the option, e.g. ``--max-size``.
        dest: the keyword argument of :func:`~syncws.serve` it sets.
        read: reads the option's text (raises
            :exc:`argparse.ArgumentTypeError`); ``None`` for a flag without
            a value.
        metavar: the value's name in ``--help``.
        help: the help text.
        repeat: the option may be given several times (a list).
    """

    flag: str
    dest: str
    read: Optional[Callable[[str], Any]]
    metavar: Optional[str]
    help: str
    repeat: bool = False


#: The settings of :func:`~syncws.serve` the command line takes, in the
#: order ``--help`` lists them.
SETTINGS: Sequence[Setting] = (
    Setting("--max-size", "max_size", _limit, "BYTES",
            "the largest message a client may send, or 'none' (default: 1048576); larger ones close with 1009"),
    Setting("--max-queue", "max_queue", _limit, "N",
            "messages received and not yet read by the handler, per connection, before reading pauses "
            "(default: 32)"),
    Setting("--read-limit", "read_limit", _positive_int, "BYTES", "bytes asked of a socket per read (default: 65536)"),
    Setting("--write-limit", "write_limit", _positive_int, "BYTES",
            "payloads up to this size go out with their frame header in one system call (default: 65536)"),
    Setting("--ping-interval", "ping_interval", _seconds, "SECONDS",
            "seconds between keepalive pings, or 'none' (default: 20)"),
    Setting("--ping-timeout", "ping_timeout", _seconds, "SECONDS",
            "seconds to wait for a pong before closing with 1011, or 'none' (default: 20)"),
    Setting("--open-timeout", "open_timeout", _seconds, "SECONDS",
            "seconds for TLS and the opening handshake (default: 10)"),
    Setting("--close-timeout", "close_timeout", _seconds, "SECONDS", "seconds for the closing handshake (default: 10)"),
    Setting("--write-timeout", "write_timeout", _seconds, "SECONDS",
            "seconds a send to a client that doesn't read may take before the connection is aborted (default: 60)"),
    Setting("--first-byte-timeout", "first_byte_timeout", _seconds, "SECONDS",
            "seconds a new connection may stay silent (default: 5)"),
    Setting("--max-connections", "max_connections", _limit, "N",
            "open WebSocket connections per process; more get HTTP 503 (default: none)"),
    Setting("--max-pending-handshakes", "max_pending_handshakes", _limit, "N",
            "connections in their opening handshake at once, per process (default: 128)"),
    Setting("--backlog", "backlog", _positive_int, "N", "the listen backlog (default: the system's maximum)"),
    Setting("--origin", "origins", str, "ORIGIN",
            "an Origin allowed to connect, e.g. https://app.example (repeatable); others get HTTP 403",
            repeat=True),
    Setting("--origin-regex", "origin_patterns", _regex, "REGEX",
            "Origins matching this regular expression (whole value) are allowed too (repeatable)", repeat=True),
    Setting("--allow-no-origin", "allow_no_origin", None, None,
            "with --origin or --origin-regex: also allow requests without an Origin header (non-browser clients)"),
    Setting("--no-compression", "no_compression", None, None, "don't accept permessage-deflate"),
    Setting("--subprotocol", "subprotocols", str, "NAME",
            "a subprotocol the server speaks (repeatable, in order of preference)", repeat=True),
    Setting("--server-header", "server_header", str, "TEXT",
            "the Server header of responses; '' leaves it out (default: Python syncws/<version>)"),
)

# The options about everything else than serve()'s settings, handed on to
# workers as they are (option, its attribute, takes a value).
_OTHERS: Sequence[Tuple[str, str, bool]] = (
    ("--certfile", "certfile", True),
    ("--keyfile", "keyfile", True),
    ("--health", "health", True),
    ("--metrics", "metrics", True),
    ("--admin-port", "admin_port", True),
    ("--admin-host", "admin_host", True),
    ("--process-request", "process_request", True),
    ("--log-level", "log_level", True),
    ("--log-format", "log_format", True),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option of ``serve`` to ``parser``.

    Args:
        parser: the ``serve`` command's parser (or a worker's).
    """
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"the interface to listen on (default: {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT,
        help=f"the port (default: {DEFAULT_PORT}; 0 picks a free one, printed at start)",
    )
    parser.add_argument(
        "--unix", metavar="PATH",
        help="listen on this Unix socket instead of --host and --port (an existing socket file is replaced)",
    )
    parser.add_argument(
        "--processes", type=_positive_int, nargs="?", const=0, metavar="N",
        help="run N worker processes sharing the port (SO_REUSEPORT) under a supervisor; without N, one per CPU",
    )
    parser.add_argument(
        "--shutdown-timeout", type=_positive_seconds, default=SHUTDOWN_TIMEOUT, metavar="SECONDS",
        help="on SIGTERM or Ctrl-C, seconds each process waits for its handlers to return before it gives up "
        f"on them, aborts what is still open and exits (default: {SHUTDOWN_TIMEOUT:g}); with --processes, the "
        "supervisor kills a worker still running a few seconds later",
    )
    tuning = parser.add_argument_group("connections (serve()'s settings; see docs/deployment.rst)")
    for setting in SETTINGS:
        if setting.read is None:
            tuning.add_argument(setting.flag, dest=setting.dest, action="store_true", default=argparse.SUPPRESS,
                                help=setting.help)
        else:
            tuning.add_argument(
                setting.flag, dest=setting.dest, type=setting.read, metavar=setting.metavar, help=setting.help,
                action="append" if setting.repeat else "store", default=argparse.SUPPRESS,
            )
    tls = parser.add_argument_group("TLS (wss://)")
    tls.add_argument("--certfile", metavar="PATH", help="the server's certificate chain, PEM")
    tls.add_argument("--keyfile", metavar="PATH", help="its private key, PEM (default: in --certfile)")
    http = parser.add_argument_group("plain HTTP, answered by every process")
    http.add_argument("--health", type=_path, metavar="PATH", help="answer GET PATH with 200 OK, e.g. /healthz")
    http.add_argument(
        "--metrics", type=_path, metavar="PATH", help="answer GET PATH with Prometheus metrics, e.g. /metrics"
    )
    http.add_argument(
        "--admin-port", type=_port, metavar="PORT",
        help="answer --health and --metrics on this port instead, on a listener of their own that "
        "--max-connections doesn't count (0 picks a free one, printed at start)",
    )
    http.add_argument("--admin-host", metavar="HOST", help="the interface of --admin-port (default: --host)")
    http.add_argument(
        "--process-request", metavar="module:name",
        help="serve()'s process_request hook, (path, headers) -> None or (status, headers, body): "
        "plain HTTP of your own (a page, a 401), after --health and --metrics",
    )
    logs = parser.add_argument_group("logging (unless the handler's module configures it)")
    logs.add_argument("--log-level", choices=logconfig.LEVELS, default="info", help="default: info")
    logs.add_argument(
        "--log-format", choices=logconfig.FORMATS, default="text",
        help="text: time, pid, connection, level, logger, message; json: one object per line (default: text)",
    )
    parser.add_argument(
        "handler", nargs="?", metavar="module:handler",
        help="the handler to serve, e.g. myapp.server:handler (default: echo)",
    )


def worker_arguments(args: argparse.Namespace) -> List[str]:
    """The options a worker gets: every option given, but where to listen and the handler.

    Args:
        args: the parsed ``serve`` command line.

    Returns:
        Command-line arguments that :func:`add_arguments`' parser reads back
        into the same values.
    """
    argv: List[str] = []
    for setting in SETTINGS:
        if not hasattr(args, setting.dest):
            continue
        value = getattr(args, setting.dest)
        if setting.read is None:
            argv.append(setting.flag)
        else:
            for item in value if setting.repeat else [value]:
                argv += [setting.flag, _text(item)]
    for flag, dest, _ in _OTHERS:
        value = getattr(args, dest)
        if value is not None:
            argv += [flag, str(value)]
    return argv


def _text(value: Any) -> str:
    """An option's value as the command line writes it."""
    if value is None:
        return "none"
    if isinstance(value, re.Pattern):
        return str(value.pattern)
    return repr(value) if isinstance(value, float) else str(value)


def server_options(
    args: argparse.Namespace,
    render: Optional[Callable[[], str]] = None,
    process_request: Optional[ProcessRequest] = None,
) -> Dict[str, Any]:
    """The keyword arguments of :func:`~syncws.serve` the options ask for.

    Args:
        args: the parsed ``serve`` command line.
        render: writes the metrics for ``--metrics`` (see :func:`routes`).
        process_request: the hook ``--process-request`` names, imported.

    Returns:
        Only what was given (and TLS, and the HTTP routes), so that
        :func:`~syncws.serve` keeps its defaults for the rest.

    Raises:
        ValueError: a setting out of range, or options that don't go
            together (the message names them).
        OSError: the certificate or the key can't be read.
        ssl.SSLError: they aren't a certificate and its key.
    """
    options: Dict[str, Any] = {}
    for setting in SETTINGS:
        if hasattr(args, setting.dest) and setting.dest not in _COMBINED:
            options[setting.dest] = getattr(args, setting.dest)
    origins = _origins(args)
    if origins is not None:
        options["origins"] = origins
    if getattr(args, "no_compression", False):
        options["compression"] = None
    if options.get("server_header") == "":
        options["server_header"] = None
    _check(options)
    if args.keyfile is not None and args.certfile is None:
        raise ValueError("--keyfile needs --certfile")
    if args.certfile is not None:
        import ssl  # megabytes of memory: only for wss://

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.certfile, args.keyfile)
        options["ssl"] = context
    if args.admin_port is None:
        hook = routes(args.health, args.metrics, render, process_request)
    elif args.health is None and args.metrics is None:
        raise ValueError("--admin-port serves --health and --metrics: give one of them, or both")
    elif _same_listener(args):
        raise ValueError(
            f"--admin-port {args.admin_port} is --port's: give the admin listener a port of its own "
            f"(workers would share the port between the two, and WebSocket clients would get 404)"
        )
    else:  # they are the admin listener's (admin_server())
        hook = process_request
    if hook is not None:
        options["process_request"] = hook
    return options


def _same_listener(args: argparse.Namespace) -> bool:
    """Whether ``--admin-port`` may be the WebSocket listener's address.

    Workers bind both with ``SO_REUSEPORT``, which lets them share an
    address: the kernel would then hand WebSocket clients to the admin
    listener. The same port on two distinct specific IP addresses is two
    listeners; anything else with the same port (a name, a wildcard, the
    same host) may be one.
    """
    if getattr(args, "unix", None) or args.admin_port == 0 or args.admin_port != args.port:
        return False
    try:
        hosts = {ipaddress.ip_address(args.host), ipaddress.ip_address(args.admin_host or args.host)}
    except ValueError:  # a name: it may be the other's address
        return True
    return len(hosts) == 1 or any(host.is_unspecified for host in hosts)


# Options read together into one argument of serve().
_COMBINED = frozenset({"origins", "origin_patterns", "allow_no_origin", "no_compression"})


def _origins(args: argparse.Namespace) -> Optional[List[Any]]:
    origins: List[Any] = [*getattr(args, "origins", ()), *getattr(args, "origin_patterns", ())]
    if getattr(args, "allow_no_origin", False):
        if not origins:
            raise ValueError("--allow-no-origin goes with --origin or --origin-regex (without them, any origin is allowed)")
        origins.append(None)
    return origins or None


def _check(options: Dict[str, Any]) -> None:
    """Check the settings as :func:`~syncws.serve` will, naming the option at fault."""
    names = {setting.dest: setting.flag for setting in SETTINGS}
    shared = {name: value for name, value in options.items() if name in _SHARED_SETTINGS}
    try:
        check_settings(**shared)
        check_origins(options.get("origins"))
    except (TypeError, ValueError) as exc:
        text = str(exc)
        for dest, flag in names.items():
            text = re.sub(rf"\b{dest}\b", flag, text)
        raise ValueError(text) from None


# serve()'s settings that syncws.settings.check_settings checks.
_SHARED_SETTINGS = frozenset({
    "max_size", "max_queue", "open_timeout", "close_timeout", "write_timeout", "read_limit", "write_limit",
    "ping_interval", "ping_timeout",
})


def admin_server(args: argparse.Namespace, render: Optional[Callable[[], str]] = None,
                 reuse_port: bool = False, ready: Optional[Callable[[], bool]] = None) -> Optional[WebSocketServer]:
    """Start the listener ``--admin-port`` asks for (:func:`syncws.admin.serve_admin`).

    Args:
        args: the parsed ``serve`` command line, checked by
            :func:`server_options`.
        render: writes the metrics (see :func:`routes`).
        reuse_port: share the port with the other workers of a group.
        ready: whether the process takes new clients: the WebSocket
            server's :meth:`~syncws.WebSocketServer.is_serving`, so that
            ``--health`` answers ``503`` while it drains (see
            :func:`syncws.admin.serve_admin`).

    Returns:
        The running server; ``None`` without ``--admin-port``.

    Raises:
        OSError: the address can't be bound; its ``filename`` is the
            address, ``host:port``, for the message.
    """
    if args.admin_port is None:
        return None
    host = args.admin_host or args.host
    try:
        return serve_admin(
            host, args.admin_port, health=args.health, metrics_path=args.metrics,
            render=render, reuse_port=reuse_port, ready=ready,
        )
    except OSError as exc:  # bind()'s error doesn't say where
        raise OSError(exc.errno, exc.strerror or str(exc), f"{host}:{args.admin_port}") from None
