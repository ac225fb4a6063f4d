"""``python -m syncws``: an interactive client, an echo server and a demo.

::

    python -m syncws ws://localhost:8765/      # interactive client
    python -m syncws serve [--host H] [--port P]   # echo server
    python -m syncws serve --processes 4 app:handler  # 4 processes, one port
    python -m syncws serve --help               # every option a deployment tunes
    python -m syncws demo                       # a client and a server, end to end

Theory of operation of the interactive client
---------------------------------------------
Three threads:

* the connection's **reader thread** (syncws's own) queues incoming messages;
* the **main thread** takes them with ``recv()`` and prints them, and owns the
  exit: it is the thread that gets ``KeyboardInterrupt`` (Ctrl-C), and it
  returns once the connection is closed, whoever closed it;
* a daemon **stdin thread** reads lines and sends them; at end of input
  (Ctrl-D) it closes the connection, which ends the main thread's ``recv()``.
  When stdin isn't a terminal (``printf 'a\nb' | python -m syncws URI``), it
  first waits for as many replies as it sent lines, so that the echoes get
  printed, giving up when none arrives for ``--reply-timeout`` seconds.

Reading stdin is the one wait nothing can interrupt portably (a blocked
``read()`` ignores the socket closing), so it gets the thread that may be
abandoned at exit: when the server closes first, the main thread simply
returns. That thread reads the file descriptor with :func:`os.read`, never
through ``sys.stdin``'s buffer, whose lock a daemon thread would still hold
at interpreter shutdown.

Output: received messages go to stdout, one per line, prefixed with ``< ``;
what the client says about the connection goes to stderr, so that stdout can
be piped. Nothing the server sends reaches the terminal raw: control
characters (escape sequences, carriage returns, C1 controls) and Unicode
bidirectional controls and line separators show escaped (``\\x1b``,
``\\u202e``), printable Unicode as it is. A text message keeps its line feeds
and tabs, so that multi-line text reads as such; close reasons and HTTP
bodies are shown on one line, line feeds escaped too. URIs are shown
without their password and query values.
"""

from __future__ import annotations

import argparse
import codecs
import ipaddress
import logging
import os
import signal
import ssl
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import (
    ConnectionClosed, InvalidHandshake, InvalidStatusCode, InvalidURI, connect, logconfig, serve, serveconfig, unix_serve,
    workers,
)
# "1001 (going away) reason", as exception messages say it (reason escaped).
from .framing import describe_close
from .close_codes import OK_CLOSE_CODES
from .protocol import WebSocketCommonProtocol
from .safetext import escape, redact_uri
from .version import __version__

__all__ = ["main"]

logger = logging.getLogger("syncws.cli")

PROG = "python -m syncws"

# Exit statuses: 1 for any failure, 2 for options that don't go together
# (as argparse's usage errors), 130 (128 + SIGINT) for a Ctrl-C that
# interrupted something other than an open connection, as shells do.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# How many bytes of a binary message are shown, in hex.
BINARY_PREVIEW = 16

# Piped input: at its end, how long to wait for the next reply before closing.
DEFAULT_REPLY_TIMEOUT = 2.0

# How long the main thread waits in recv() before checking for Ctrl-C again.
# On POSIX a blocked recv() takes KeyboardInterrupt at once; on Windows a
# lock wait doesn't, so it wakes up this often to let it in.
POLL_INTERVAL = 1.0

# How much of a refused handshake's body is shown, in characters.
BODY_PREVIEW = 200


def format_message(message: Union[str, bytes]) -> str:
    """Render a received message for the terminal, without its ``< `` prefix.

    Text is shown as is but for control characters, escaped
    (:func:`syncws.safetext.escape`; line feeds and tabs are kept); binary
    as its size and the first :data:`BINARY_PREVIEW` bytes in hex.
    """
    if isinstance(message, str):
        return escape(message, keep="\n\t")
    size = len(message)
    text = f"<binary {size} byte{'' if size == 1 else 's'}>"
    if size:
        text += " " + message[:BINARY_PREVIEW].hex(" ")
        if size > BINARY_PREVIEW:
            text += " ..."
    return text


def websocket_uri(address: Sequence[object], secure: bool = False) -> str:
    """The ``ws://`` (``wss://`` when ``secure``) URI of a listening socket's address."""
    return _url("wss" if secure else "ws", address)


def _url(scheme: str, address: Sequence[object]) -> str:
    host, port = str(address[0]), address[1]
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a name
    return f"{scheme}://{host}:{port}/"


def _error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _status(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _echo(websocket: WebSocketCommonProtocol) -> None:
    """The echo server's handler: send every message back as it came."""
    logger.info("%s connected, path %s", websocket.remote_address, redact_uri(websocket.path))
    try:
        while True:
            websocket.send(websocket.recv())
    except ConnectionClosed as exc:  # from recv(), or from send() mid-echo
        logger.info("%s disconnected: %s", websocket.remote_address, describe_close(exc.code, exc.reason))


# -- the interactive client ---------------------------------------------------


class InteractiveClient:
    """Send stdin lines over a connection and print what comes back."""

    def __init__(
        self, websocket: WebSocketCommonProtocol, stdin_fd: int, reply_timeout: Optional[float] = None
    ) -> None:
        self.websocket = websocket
        self.stdin_fd = stdin_fd
        # None: close at end of input at once (a terminal). A number: first
        # wait for a reply to each line sent, as long as one arrives within
        # that many seconds of the previous one (piped input).
        self.reply_timeout = reply_timeout
        # Lines sent (stdin thread) and messages printed (main thread);
        # _progress guards both and wakes the stdin thread on each message.
        self._progress = threading.Condition()
        self._sent = 0
        self._received = 0
        # Set before this side starts the closing handshake (end of input or
        # Ctrl-C), so the main thread can tell our close from the server's.
        # Written by the stdin thread or the main thread, read by the main
        # thread after recv() failed: an Event makes the write visible.
        self.closing = threading.Event()

    def run(self) -> int:
        """Run until the connection closes; return the exit status."""
        reader = threading.Thread(target=self._send_lines, name="syncws-cli-stdin", daemon=True)
        reader.start()
        try:
            return self._print_messages()
        except KeyboardInterrupt:
            # Ctrl-C: close like Ctrl-D. Messages that arrive meanwhile are
            # dropped: the user asked to stop.
            self._close()
            return EXIT_OK

    def _print_messages(self) -> int:
        """Print messages until the connection closes (main thread)."""
        while True:
            try:
                message = self.websocket.recv(timeout=POLL_INTERVAL)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                return self._report_close(exc)
            print("< " + format_message(message), flush=True)
            with self._progress:
                self._received += 1
                self._progress.notify_all()

    def _report_close(self, exc: ConnectionClosed) -> int:
        if self.closing.is_set():
            return EXIT_OK  # we closed it, as asked
        if self.websocket.close_rcvd is None:
            _status(f"connection lost: {describe_close(exc.code, exc.reason)}")
            return EXIT_ERROR
        _status(f"connection closed by the server: {describe_close(exc.code, exc.reason)}")
        return EXIT_OK if exc.code in OK_CLOSE_CODES else EXIT_ERROR

    def _close(self) -> None:
        self.closing.set()
        self.websocket.close()

    def _send_lines(self) -> None:
        """Send each line of stdin as a text message; close at its end (stdin thread)."""
        decoder = codecs.getincrementaldecoder(sys.stdin.encoding or "utf-8")(errors="replace")
        pending = ""
        try:
            while True:
                try:
                    chunk = os.read(self.stdin_fd, 65536)
                except OSError:
                    chunk = b""  # stdin closed or unreadable: treat as its end
                pending += decoder.decode(chunk, final=not chunk)
                *lines, pending = pending.split("\n")
                if not chunk and pending:
                    lines.append(pending)  # a last line without a newline
                for line in lines:
                    self.websocket.send(line[:-1] if line.endswith("\r") else line)
                    with self._progress:
                        self._sent += 1
                if not chunk:
                    break
        except ConnectionClosed:
            return  # the main thread reports how it ended
        except TimeoutError:
            return  # the server stopped reading: syncws aborted the connection
        self._wait_for_replies()
        self._close()

    def _wait_for_replies(self) -> None:
        """Piped input: wait until a reply per line sent was printed, or until
        none arrived for ``reply_timeout`` seconds (stdin thread)."""
        if self.reply_timeout is None:
            return
        with self._progress:
            while self._received < self._sent and self.websocket.open:
                before = self._received
                self._progress.wait(self.reply_timeout)
                if self._received == before:
                    return  # silence: the server doesn't answer every line


def parse_header(text: str) -> Tuple[str, str]:
    """Read a ``--header 'Name: value'`` option.

    Args:
        text: the option's value.

    Returns:
        ``(name, value)``, both stripped.

    Raises:
        argparse.ArgumentTypeError: no colon, or an empty name.
    """
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _insecure_context() -> ssl.SSLContext:
    """A TLS context that checks nothing: for --insecure only."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def run_client(args: argparse.Namespace) -> int:
    """``python -m syncws URI``."""
    uri: str = args.uri
    options: Dict[str, object] = {
        "compression": None if args.no_compression else "deflate",
        "additional_headers": args.header or None,
        "subprotocols": args.subprotocol or None,
        "origin": args.origin,
    }
    if args.insecure:
        if uri.lower().startswith("wss:"):
            _error(
                "WARNING: --insecure: the server's TLS certificate is NOT checked; "
                "anyone on the network path can read and change this connection"
            )
            options["ssl"] = _insecure_context()
        else:
            _error("warning: --insecure does nothing for a ws:// URI (no TLS)")
    shown_uri = redact_uri(uri)
    try:
        websocket = connect(uri, **options)  # type: ignore[arg-type]
    except InvalidURI as exc:
        _error(str(exc))
        return EXIT_ERROR
    except ConnectionRefusedError:
        _error(f"could not connect to {shown_uri}: connection refused")
        return EXIT_ERROR
    except (OSError, InvalidHandshake) as exc:
        # Name resolution, timeouts, TLS, HTTP refusals: the exception says
        # which; strerror alone drops the "[Errno n]" noise where there is one.
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if isinstance(exc, InvalidStatusCode) and exc.body:
            # The user asked for this server: what it answered helps
            # ("token expired"), shown escaped and cut short.
            reason += ": " + escape(exc.body.decode("utf-8", "replace").strip()[:BODY_PREVIEW])
        _error(f"could not connect to {shown_uri}: {reason}")
        return EXIT_ERROR
    interactive = os.isatty(sys.stdin.fileno())
    if interactive:
        protocol = f" (subprotocol {escape(websocket.subprotocol)})" if websocket.subprotocol else ""
        _status(f"connected to {shown_uri}{protocol}; type a line to send it, Ctrl-D or Ctrl-C to quit")
    reply_timeout = None if interactive else args.reply_timeout
    return InteractiveClient(websocket, sys.stdin.fileno(), reply_timeout).run()


# -- the echo server ------------------------------------------------------------


def run_server(args: argparse.Namespace) -> int:
    """``python -m syncws serve``: a server until Ctrl-C or SIGTERM.

    The first Ctrl-C (or SIGTERM, from a service manager) closes the server
    gracefully: clients get 1001 (going away), and the handlers have
    ``--shutdown-timeout`` seconds to return (:func:`syncws.workers.drain`).
    A second one stops waiting at once.
    """
    if args.processes is not None:
        return _run_processes(args)
    try:
        handler = workers.load_handler(args.handler) if args.handler else _echo
        hook = workers.load_handler(args.process_request, "--process-request") if args.process_request else None
    except workers.HandlerImportError as exc:
        _error(str(exc))
        return EXIT_ERROR
    # After the handler's import: a module that configures logging keeps it.
    logconfig.configure(args.log_level, args.log_format)
    options = _server_options(args, hook)
    if isinstance(options, int):
        return options
    interrupts: List[int] = []

    def interrupt(signum: int, frame: object) -> None:
        # Count and raise, nothing more: a signal handler must not take a
        # lock that the main thread it interrupted may be holding.
        interrupts.append(signum)
        raise KeyboardInterrupt

    for name in ("SIGINT", "SIGTERM"):
        signum = getattr(signal, name, None)
        # A signal ignored by whoever started us (``nohup``, ``&`` in a
        # script) stays ignored.
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, interrupt)

    where = args.unix or f"{args.host}:{args.port}"
    try:
        if args.unix:
            server = unix_serve(handler, args.unix, **options)
        else:
            server = serve(handler, args.host, args.port, **options)
    except OSError as exc:
        _error(f"could not listen on {where}: {exc.strerror or exc}")
        return EXIT_ERROR
    try:
        admin = serveconfig.admin_server(args, ready=server.is_serving)
    except OSError as exc:
        server.close()
        server.wait_closed()
        _error(f"could not listen on {exc.filename}: {exc.strerror or exc}")
        return EXIT_ERROR
    try:
        try:
            if args.unix:
                print(f"serving on unix socket {args.unix}", flush=True)
            for sock in server.sockets if not args.unix else ():
                print(f"serving on {websocket_uri(sock.getsockname(), secure='ssl' in options)}", flush=True)
            for sock in admin.sockets if admin is not None else ():
                _announce_admin(args, sock.getsockname())
            # Not serve_forever(): it waits for the connections without a
            # bound. Ctrl-C and SIGTERM raise KeyboardInterrupt here.
            while server.is_serving():
                time.sleep(1.0)
        except KeyboardInterrupt:
            if len(interrupts) > 1:
                raise
        # A second Ctrl-C meanwhile escapes it.
        drained = workers.drain(server, args.shutdown_timeout)
    except KeyboardInterrupt:
        _status("server stopped without waiting for every connection to close")
        return EXIT_INTERRUPTED
    finally:
        if admin is not None:
            admin.close()
    _status("server closed" if drained else "server closed without waiting any longer for its handlers")
    return EXIT_OK


def _announce_admin(args: argparse.Namespace, address: Sequence[object]) -> None:
    """Print where ``--admin-port`` answers, after the ``serving on`` lines."""
    paths = " and ".join(path for path in (args.health, args.metrics) if path is not None)
    print(f"answering {paths} on {_url('http', address)}", flush=True)


def _server_options(args: argparse.Namespace, hook: Any = None) -> Union[Dict[str, Any], int]:
    """serve()'s options from the command line, or the exit status after saying what's wrong."""
    try:
        return serveconfig.server_options(args, process_request=hook)
    except ValueError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except OSError as exc:  # ssl.SSLError included
        _error(f"could not load the TLS certificate: {exc.strerror or exc}")
        return EXIT_ERROR


def _run_processes(args: argparse.Namespace) -> int:
    """``serve --processes N``: a supervisor and N workers (syncws.workers)."""
    logconfig.configure(args.log_level, args.log_format)
    if args.unix:
        _error("--unix and --processes don't go together: processes share a TCP port, not a Unix socket")
        return EXIT_USAGE
    # Checked here once, so that a typo is one clear line, not N workers failing.
    options = _server_options(args)
    if isinstance(options, int):
        return options
    secure = "ssl" in options

    def ready(supervisor: workers.Supervisor) -> None:
        print(
            f"serving on {websocket_uri((supervisor.host, supervisor.port), secure=secure)} with "
            f"{len(supervisor.slots)} worker processes (supervisor pid {os.getpid()})",
            flush=True,
        )
        if supervisor.admin is not None:
            _announce_admin(args, supervisor.admin)

    admin = None if args.admin_port is None else (args.admin_host or args.host, args.admin_port)
    try:
        return workers.run_supervisor(
            args.handler or workers.DEFAULT_HANDLER, args.host, args.port, args.processes or None, ready=ready,
            options=serveconfig.worker_arguments(args), admin=admin, shutdown_timeout=args.shutdown_timeout,
        )
    except OSError as exc:
        _error(f"could not listen on {exc.filename or f'{args.host}:{args.port}'}: {exc.strerror or exc}")
        return EXIT_ERROR


# -- the demo -----------------------------------------------------------------


def _preview(text: str, width: int = 60) -> str:
    """``text`` cut to ``width`` characters, saying how long it was."""
    if len(text) <= width:
        return text
    return f"{text[:width]}... ({len(text)} characters)"


class DemoFailed(Exception):
    """An echo didn't come back as sent."""


def run_demo(args: argparse.Namespace) -> int:
    """``python -m syncws demo``: a server and a client in one process."""
    # Everything is bounded, so a broken build fails the demo instead of
    # hanging it.
    timeout = 5.0
    with serve(_echo, "127.0.0.1", 0) as server:
        address = websocket_uri(server.sockets[0].getsockname())
        print(f"echo server listening on {address}")
        uri = address + "demo"
        with connect(uri) as websocket:
            extension = websocket.response_headers.get_joined("Sec-WebSocket-Extensions")
            print(f"client connected to {uri}")
            print(f"negotiated extension: {extension or 'none'}")

            def exchange(label: str, message: object, expected: Union[str, bytes]) -> None:
                before = websocket.stats.bytes_out
                websocket.send(message)  # type: ignore[arg-type]
                print(f"> {label} ({websocket.stats.bytes_out - before} bytes on the wire)")
                echoed = websocket.recv(timeout)
                print(f"< {_preview(format_message(echoed))}")
                if echoed != expected:
                    raise DemoFailed(f"sent {_preview(repr(expected))}, got {_preview(repr(echoed))} back")

            exchange("text: Hello, syncws!", "Hello, syncws!", "Hello, syncws!")
            binary = bytes(range(8))
            exchange(f"binary: {format_message(binary)}", binary, binary)
            fragments = ["a fragmented ", "message ", "in three pieces"]
            exchange(f"fragmented text, one frame per piece: {fragments}", fragments, "".join(fragments))
            big = "syncws compresses repetitive text. " * 1000
            exchange(f"text of {len(big)} characters", big, big)

            print("> ping")
            if not websocket.ping().wait(timeout):
                raise DemoFailed(f"no pong within {timeout} seconds")
            print(f"< pong, latency {websocket.latency * 1000:.3f} ms")

            stats = websocket.stats
            print(
                f"client: {stats.messages_out} messages sent in {stats.bytes_out} bytes, "
                f"{stats.messages_in} received in {stats.bytes_in} bytes"
            )
        code, reason = websocket.close_code, websocket.close_reason
        assert code is not None and reason is not None  # set once closed
        print(f"client closed: {describe_close(code, reason)}")
    print("server closed")
    return EXIT_OK


# -- command line ---------------------------------------------------------------


def _client_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=(
            f"{PROG} [-h] [--version] [--no-compression] [--header 'NAME: VALUE'] ...\n"
            f"       {' ' * len(PROG)} [--subprotocol NAME] ... [--origin ORIGIN] [--insecure]\n"
            f"       {' ' * len(PROG)} [--reply-timeout SECONDS] URI\n"
            f"       {PROG} serve [-h] [--host HOST] [--port PORT] [--processes [N]] [options] [module:handler]\n"
            f"       {PROG} demo [-h]"
        ),
        description=(
            "Interactive WebSocket client: each line typed is sent as a text "
            "message; messages received are printed, prefixed with '< '. "
            "Ctrl-D or Ctrl-C closes the connection."
        ),
        epilog=(
            "commands:\n"
            "  serve   run a server: echo, or your handler (see 'serve -h')\n"
            "  demo    start an echo server, talk to it, and show what happens"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("uri", metavar="URI", help="the ws:// or wss:// URI to connect to")
    parser.add_argument(
        "--no-compression", action="store_true", help="don't offer permessage-deflate"
    )
    parser.add_argument(
        "--header", action="append", type=parse_header, metavar="'NAME: VALUE'",
        help="an extra request header (repeatable), e.g. --header 'Authorization: Bearer x'",
    )
    parser.add_argument(
        "--subprotocol", action="append", metavar="NAME",
        help="a subprotocol to offer (repeatable, in order of preference)",
    )
    parser.add_argument("--origin", help="the Origin header to send")
    parser.add_argument(
        "--insecure", action="store_true",
        help="don't check the server's TLS certificate (wss://): for tests only",
    )
    parser.add_argument(
        "--reply-timeout", type=float, default=DEFAULT_REPLY_TIMEOUT, metavar="SECONDS",
        help=(
            "with piped input, at its end: wait for a reply to each line sent, "
            f"as long as one arrives within SECONDS of the last (default: {DEFAULT_REPLY_TIMEOUT:g})"
        ),
    )
    parser.add_argument("--version", action="version", version=f"syncws {__version__}")
    return parser


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} serve",
        description=(
            "Run a WebSocket server (echo, or module:handler) until Ctrl-C (or SIGTERM). "
            "Options not given keep syncws.serve()'s defaults."
        ),
    )
    serveconfig.add_arguments(parser)
    return parser


def _demo_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"{PROG} demo",
        description=(
            "Start an echo server on 127.0.0.1 (a free port), connect a client, "
            "exchange a text, a binary, a fragmented and a compressed message and "
            "a ping, then close both."
        ),
    )


# Subcommands: name -> (argument parser factory, runner).
COMMANDS: Dict[str, Tuple[Callable[[], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]] = {
    "serve": (_serve_parser, run_server),
    "demo": (_demo_parser, run_demo),
}


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        make_parser, run = COMMANDS[argv[0]]
        args = make_parser().parse_args(argv[1:])
    else:
        args, run = _client_parser().parse_args(argv), run_client
    # Received text may hold characters the terminal's encoding lacks.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        return run(args)
    except KeyboardInterrupt:
        # Ctrl-C while connecting, or a second one while closing.
        return EXIT_INTERRUPTED
    except DemoFailed as exc:
        _error(f"demo failed: {exc}")
        return EXIT_ERROR
    except BrokenPipeError:
        # stdout was closed (``| head``): stop quietly. Point stdout at
        # devnull so the flush at exit doesn't fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
