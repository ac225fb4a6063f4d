"""Several server processes on one port: a supervisor and its workers.

::

    python -m syncws serve --processes 4 --port 8765 myapp:handler

Theory of operation
-------------------
A thread-per-connection server uses one core at a time (the interpreter
lock); to use more, run several processes. The kernel shares one port
between them: every worker binds its own listening socket with
``SO_REUSEPORT`` (:func:`syncws.serve` with ``reuse_port=True``) and Linux
spreads incoming connections over those sockets by a hash of the
connection's addresses. No socket is passed around and no process accepts
for another.

The **supervisor** (:func:`run_supervisor`, the parent) does no serving:

* it reserves the address first (:func:`syncws.ports.reserve`): bound,
  never listening, so it takes no connections. The reservation refuses an
  address where anything listens already, syncws or not, with a clear error
  that names the process; picks the port when asked for port 0; and keeps
  that port for the workers while one restarts. Once the workers listen,
  it checks that no other process does (:func:`syncws.ports.strangers`:
  two supervisors started at once both get a reservation);
* with ``--admin-port``, it reserves the admin listener's address the same
  way (:mod:`syncws.admin`: every worker listens there too);
* it starts every worker with the options of ``serve`` it was given (the
  same parser reads them back: :mod:`syncws.serveconfig`), its index, and,
  with ``--metrics``, a private directory the workers share for their
  metrics (:class:`syncws.metrics.GroupMetrics`), removed when the
  supervisor ends, or by the next supervisor to start if it was killed
  (:class:`syncws.metrics.GroupDirectory`); a dead worker's files there
  are removed before it is restarted;
* it starts N workers as fresh interpreters (:mod:`subprocess`, running
  ``python -m syncws.workers``), not with :func:`os.fork`: a forked child
  would inherit the parent's threads' locks in whatever state they were, and
  a fresh interpreter shares nothing with the parent but its pipes, so a
  worker that crashes, even in C code, takes nothing else with it;
* it waits for signals: ``SIGCHLD`` (a worker ended), ``SIGTERM`` and
  ``SIGINT``, delivered to a pipe by :func:`signal.set_wakeup_fd` so the
  main loop can :func:`select.select` on it with the time of the next
  restart as timeout; and for each new worker's *ready pipe*, on which the
  worker writes once it listens, so "serving" is announced only when
  connections will be accepted;
* a worker that ends while the supervisor runs is restarted after a delay
  that doubles on each quick death (from :data:`RESTART_DELAY` up to
  :data:`MAX_RESTART_DELAY`) and goes back to the start once a worker has
  stayed up :data:`STABLE_AFTER` seconds, so a handler that crashes at
  import doesn't spin the CPU;
* a worker that can't start at all (a handler that doesn't import, an
  address that can't be bound) exits with :data:`EXIT_CONFIG`: restarting it
  would fail the same way, so the supervisor stops everything and reports;
* on ``SIGTERM`` or ``SIGINT`` it sends ``SIGTERM`` to every worker and
  waits for them: each gives up on its connections after
  ``shutdown_timeout`` seconds (``--shutdown-timeout``) and exits; one still
  running :data:`KILL_GRACE` seconds later (stuck in C code, or waiting for
  a thread of its own at exit) gets ``SIGKILL``. Then it exits. No process
  is left behind.

Each **worker** (:func:`run_worker`) serves the handler until ``SIGTERM`` or
``SIGINT``, then drains (:func:`drain`): every open connection gets 1001
(going away), and the worker exits once their threads are done, or once
``shutdown_timeout`` passed, aborting what is still open. Its standard input
is a pipe from the supervisor that is never written: when it reads end of
file, the supervisor is gone (even killed with ``SIGKILL``), and the worker
closes the same way instead of serving on as an orphan.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import logconfig, metrics, ports, serveconfig
from .server import WebSocketServer, serve

__all__ = [
    "DEFAULT_HANDLER",
    "EXIT_CONFIG",
    "HandlerImportError",
    "Supervisor",
    "drain",
    "load_handler",
    "run_supervisor",
    "run_worker",
]

logger = logging.getLogger("syncws.workers")

#: The handler served when none is named: the command line's echo handler.
DEFAULT_HANDLER = "syncws.__main__:_echo"

#: A worker's exit status when it can't start (bad handler, address in use):
#: ``EX_CONFIG`` from ``sysexits.h``. Restarting wouldn't help.
EXIT_CONFIG = 78

#: Seconds before restarting a worker that died, doubled after each quick
#: death up to :data:`MAX_RESTART_DELAY`.
RESTART_DELAY = 0.1
MAX_RESTART_DELAY = 30.0

#: A worker up this many seconds is stable: its next restart delay is back to
#: :data:`RESTART_DELAY`.
STABLE_AFTER = 10.0

#: Seconds the supervisor gives a worker, past its ``shutdown_timeout``,
#: to exit by itself before it kills it.
KILL_GRACE = 5.0


class HandlerImportError(ImportError):
    """A ``module:handler`` specification that doesn't name a callable."""


def load_handler(spec: str, what: str = "handler") -> Callable[..., Any]:
    """Import the handler that ``spec`` names.

    Args:
        spec: ``"package.module:name"``; ``name`` may be dotted
            (``"app:Chat.handler"``).
        what: what it is, for the errors' messages.

    Returns:
        The callable.

    Raises:
        HandlerImportError: ``spec`` isn't ``module:name``, the module doesn't
            import, it has no such attribute, or the attribute isn't
            callable. The message says which.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise HandlerImportError(f"{what} {spec!r}: expected module:name, e.g. myapp.server:handler")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised
        raise HandlerImportError(
            f"{what} {spec!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HandlerImportError(f"{what} {spec!r}: {module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise HandlerImportError(f"{what} {spec!r}: {type(target).__name__} object is not callable")
    return target  # type: ignore[no-any-return]


# -- the worker -----------------------------------------------------------------


def drain(server: WebSocketServer, timeout: float) -> bool:
    """Close ``server`` and wait for its connections, for ``timeout`` seconds at most.

    How every process of ``python -m syncws serve`` stops: the single
    process and each worker. Every connection gets 1001 (going away); the
    handlers get :exc:`~syncws.ConnectionClosed` once the closing handshake
    is over (``close_timeout``). A handler that hasn't returned when
    ``timeout`` passes is given up on: its thread is left to end with the
    process, and connections still open are aborted.

    Args:
        server: the server to close.
        timeout: seconds to wait.

    Returns:
        Whether every connection was done in time (else the log says how
        many weren't).
    """
    server.close()
    try:
        server.wait_closed(timeout)
    except TimeoutError as exc:
        still_open = server.connections
        aborting = f"; aborting {len(still_open)} still open" if still_open else ""
        logger.warning("gave up draining: %s%s", exc, aborting)
        for connection in still_open:
            connection.abort("shutdown timeout")
        return False
    return True


def run_worker(
    spec: Union[str, Callable[..., Any]],
    host: str,
    port: int,
    watch_fd: Optional[int] = None,
    ready_fd: Optional[int] = None,
    admin: Optional[Callable[[WebSocketServer], Optional[WebSocketServer]]] = None,
    shutdown_timeout: float = serveconfig.SHUTDOWN_TIMEOUT,
    **serve_options: Any,
) -> int:
    """Serve ``spec`` on ``host:port`` with ``SO_REUSEPORT`` until told to stop.

    Stops on ``SIGTERM`` or ``SIGINT``, or when ``watch_fd`` reaches end of
    file (the supervisor is gone): the server closes every connection with
    1001 and this returns once they are done, or once ``shutdown_timeout``
    passed (:func:`drain`).

    Args:
        spec: the handler, or ``module:name`` to import it from.
        host: the interface.
        port: the port, shared with the other workers.
        watch_fd: a file descriptor whose end of file means "stop".
        ready_fd: a file descriptor written to, then closed, once the
            server listens.
        admin: starts the worker's admin listener once the server listens,
            given the server (:func:`syncws.admin.serve_admin`, ``ready``
            its :meth:`~syncws.WebSocketServer.is_serving`: the health
            check fails while the worker drains); closed last. An
            :exc:`OSError` it raises names the address in its ``filename``
            (:func:`syncws.serveconfig.admin_server`).
        shutdown_timeout: seconds to wait for the connections once told
            to stop.
        **serve_options: more keyword arguments of :func:`~syncws.serve`.

    Returns:
        The exit status: 0, or :data:`EXIT_CONFIG` when the handler doesn't
        import or an address can't be bound.
    """
    # Set by a signal or by the watcher thread; the main thread waits on it.
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    try:
        handler = load_handler(spec) if isinstance(spec, str) else spec
        server = serve(handler, host, port, reuse_port=True, **serve_options)
    except HandlerImportError as exc:
        logger.error("worker %d: %s", os.getpid(), exc)
        return EXIT_CONFIG
    except OSError as exc:
        logger.error("worker %d: cannot listen on %s:%d: %s", os.getpid(), host, port, exc.strerror or exc)
        return EXIT_CONFIG
    try:
        admin_server = None if admin is None else admin(server)
    except OSError as exc:
        logger.error("worker %d: cannot start its admin listener on %s: %s", os.getpid(), exc.filename,
                     exc.strerror or exc)
        server.close()
        server.wait_closed()
        return EXIT_CONFIG
    logger.info("worker %d serving on %s:%d", os.getpid(), host, server.port)
    try:
        return _serve_until_stopped(server, stop, watch_fd, ready_fd, shutdown_timeout)
    finally:
        if admin_server is not None:
            admin_server.close()


def _serve_until_stopped(server: WebSocketServer, stop: threading.Event, watch_fd: Optional[int],
                         ready_fd: Optional[int], shutdown_timeout: float) -> int:
    """run_worker()'s wait: until ``stop`` is set, then close ``server`` and wait for it."""
    if watch_fd is not None:

        def watch() -> None:
            # Blocks until the supervisor's end of the pipe closes.
            try:
                while os.read(watch_fd, 512):
                    pass
            except OSError:
                pass
            stop.set()

        threading.Thread(target=watch, name="syncws-worker-watch", daemon=True).start()
    if ready_fd is not None:
        os.write(ready_fd, b"ready")
        os.close(ready_fd)
    # A timed wait lets the signal handler run promptly on every platform.
    while not stop.wait(1.0):
        pass
    logger.info("worker %d closing %d connections (for %g s at most)", os.getpid(), len(server.connections),
                shutdown_timeout)
    drain(server, shutdown_timeout)
    return 0


# -- the supervisor -------------------------------------------------------------


class _Slot:
    """One worker's place: its process and its restart schedule."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self.started = 0.0  # monotonic time of the last start
        self.delay = RESTART_DELAY  # before the next restart
        self.restart_at: Optional[float] = None  # when dead: monotonic time to restart
        self.ready_fd: Optional[int] = None  # until the worker says it listens
        self.ready = False  # it said so


class Supervisor:
    """Start, watch, restart and stop the workers; see the module docstring.

    Args:
        spec: the handler, ``module:name``.
        host: the interface.
        port: the port; 0 picks a free one (:attr:`port` has it after
            :meth:`bind`).
        processes: how many workers.
        shutdown_timeout: seconds each worker waits for its connections on
            shutdown before giving up on them (given to the workers as
            ``--shutdown-timeout``); one still running :data:`KILL_GRACE`
            seconds later is killed.
        python: the interpreter for the workers (default: this one).
        options: options of ``python -m syncws serve`` for every worker
            (``["--max-size", "65536"]``: see :mod:`syncws.serveconfig`).
        admin: ``(host, port)`` of the workers' admin listener
            (``--admin-port``: :mod:`syncws.admin`), reserved as the
            port is; port 0 picks one (:attr:`admin` has it after
            :meth:`bind`).

    Raises:
        ValueError: ``processes`` below 1, or ``shutdown_timeout`` not a
            number of seconds above 0 that a wait can take.
    """

    def __init__(
        self,
        spec: str,
        host: str,
        port: int,
        processes: int,
        *,
        shutdown_timeout: float = serveconfig.SHUTDOWN_TIMEOUT,
        python: Optional[str] = None,
        options: Sequence[str] = (),
        admin: Optional[Tuple[str, int]] = None,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        # Checked here, not by each worker's command line: a worker that
        # refused it would exit and be restarted for ever.
        problem = serveconfig.wait_problem(shutdown_timeout)
        if problem is not None:
            raise ValueError(f"shutdown_timeout {problem}, got {shutdown_timeout!r}")
        self.spec = spec
        self.host = host
        self.port = port
        self.shutdown_timeout = shutdown_timeout
        self.python = python or sys.executable
        self.options = list(options)
        self.admin = admin
        self.slots = [_Slot(i) for i in range(processes)]
        # Bound, never listening: reserve the port, and the admin port
        # (see the module docstring).
        self._reserved: Optional[List[socket.socket]] = None
        self._admin_reserved: List[socket.socket] = []
        self._failed: Optional[str] = None  # why the supervisor gave up
        # Another process listens on the port too (see _check_alone).
        self._conflict: Optional[OSError] = None
        # A directory the workers share for --metrics, while running.
        self._directory: Optional[metrics.GroupDirectory] = None

    def bind(self) -> None:
        """Reserve the address (and pick the port for port 0).

        Refuses an address where anything listens, with ``SO_REUSEPORT``
        or without (see :func:`syncws.ports.reserve`).

        Raises:
            OSError: the address is taken (``EADDRINUSE``, saying by whom)
                or can't be bound, or the system has no ``SO_REUSEPORT``.
        """
        self._reserved = ports.reserve(self.host, self.port)
        self.port = self._reserved[0].getsockname()[1]
        if self.admin is not None:
            host, port = self.admin
            try:
                self._admin_reserved = ports.reserve(host, port)
            except OSError as exc:  # which address of the two, in the file name's place
                self._release()
                raise OSError(exc.errno, exc.strerror, f"{host}:{port}") from None
            self.admin = (host, self._admin_reserved[0].getsockname()[1])

    def _release(self) -> None:
        """Close the reservations."""
        for sock in [*(self._reserved or ()), *self._admin_reserved]:
            sock.close()
        self._reserved = None
        self._admin_reserved = []

    def _start(self, slot: _Slot) -> None:
        ready_read, ready_write = os.pipe()
        command = [
            self.python, "-m", "syncws.workers", *self.options, "--host", self.host, "--port", str(self.port),
            "--ready-fd", str(ready_write), "--worker-index", str(slot.index),
            "--shutdown-timeout", repr(self.shutdown_timeout),
            *(["--admin-port", str(self.admin[1])] if self.admin is not None else []),
            *(["--group-dir", self._directory.path] if self._directory is not None else []), self.spec,
        ]
        # stdin: the pipe whose end of file tells the worker we are gone;
        # stdout and stderr are ours.
        try:
            slot.process = subprocess.Popen(command, stdin=subprocess.PIPE, pass_fds=(ready_write,))
        finally:
            os.close(ready_write)
        os.set_blocking(ready_read, False)
        self._close_ready(slot)
        slot.ready_fd = ready_read
        slot.ready = False
        slot.started = time.monotonic()
        slot.restart_at = None
        logger.info("started worker %d (pid %d)", slot.index, slot.process.pid)

    def _close_ready(self, slot: _Slot) -> None:
        if slot.ready_fd is not None:
            os.close(slot.ready_fd)
            slot.ready_fd = None

    def _read_ready(self, readable: Sequence[int]) -> None:
        """Note the workers that said they listen (or closed their pipe)."""
        for slot in self.slots:
            if slot.ready_fd is None or slot.ready_fd not in readable:
                continue
            try:
                data = os.read(slot.ready_fd, 16)
            except BlockingIOError:
                continue
            slot.ready = bool(data)  # end of file: it ended first; _reap sees to it
            self._close_ready(slot)

    def _reap(self, now: float) -> None:
        """Notice workers that ended; schedule their restarts."""
        for slot in self.slots:
            process = slot.process
            if process is None or process.poll() is None:
                continue
            status = process.returncode
            uptime = now - slot.started
            if process.stdin is not None:
                process.stdin.close()
            self._close_ready(slot)
            slot.process = None
            if self._directory is not None:
                self._directory.forget(slot.index)
            if status == EXIT_CONFIG:
                self._failed = f"worker {slot.index} (pid {process.pid}) could not start; see its error above"
                return
            if uptime >= STABLE_AFTER:
                slot.delay = RESTART_DELAY
            slot.restart_at = now + slot.delay
            logger.warning(
                "worker %d (pid %d) ended with %s after %.1f s; restarting in %.1f s",
                slot.index, process.pid, _describe_status(status), uptime, slot.delay,
            )
            slot.delay = min(slot.delay * 2, MAX_RESTART_DELAY)

    def run(self, ready: Optional[Callable[["Supervisor"], None]] = None) -> int:
        """Run until ``SIGTERM`` or ``SIGINT``; must run in the main thread.

        Args:
            ready: called once every worker listens.

        Returns:
            The exit status: 0 after a signal, 1 when a worker couldn't start.

        Raises:
            OSError: the address can't be bound, or another process
                listens on it too (``EADDRINUSE``, saying which).
        """
        if self._reserved is None:
            self.bind()
        metrics.GroupDirectory.sweep()
        if "--metrics" in self.options:
            self._directory = metrics.GroupDirectory()
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        stop_signals: List[int] = []

        def on_signal(signum: int, frame: object) -> None:
            if signum != signal.SIGCHLD:
                stop_signals.append(signum)

        previous: Dict[int, Any] = {}
        old_wakeup = signal.set_wakeup_fd(write_fd)
        try:
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, on_signal)
            for slot in self.slots:
                self._start(slot)
            announced = False
            while not stop_signals and self._failed is None and self._conflict is None:
                now = time.monotonic()
                self._reap(now)
                if not announced and all(slot.ready for slot in self.slots) and self._failed is None:
                    self._check_alone()
                    if self._conflict is not None:
                        break
                    announced = True
                    if ready is not None:
                        ready(self)
                for slot in self.slots:
                    if slot.restart_at is not None and slot.restart_at <= now and self._failed is None:
                        self._start(slot)
                if stop_signals or self._failed is not None:
                    break
                pending = [s.restart_at for s in self.slots if s.restart_at is not None]
                timeout = max(0.0, min(pending) - now) if pending else None
                ready_fds = [slot.ready_fd for slot in self.slots if slot.ready_fd is not None]
                readable, _, _ = select.select([read_fd, *ready_fds], [], [], timeout)
                self._read_ready(readable)
                try:
                    while os.read(read_fd, 512):
                        pass
                except BlockingIOError:
                    pass
        finally:
            self._stop_all()
            for slot in self.slots:
                self._close_ready(slot)
            signal.set_wakeup_fd(old_wakeup)
            for number, handler in previous.items():
                signal.signal(number, handler)
            os.close(read_fd)
            os.close(write_fd)
            self._release()
            if self._directory is not None:
                self._directory.remove()
                self._directory = None
        if self._conflict is not None:
            raise self._conflict
        if self._failed is not None:
            logger.error("%s", self._failed)
            return 1
        return 0

    def _check_alone(self) -> None:
        """Refuse to serve when a process other than the workers listens on the port.

        Two supervisors started at the same moment both get their
        reservation (see :mod:`syncws.ports`); once the workers listen,
        each sees the other's and stops. Linux only (``/proc``).
        """
        assert self._reserved is not None
        pids = [slot.process.pid for slot in self.slots if slot.process is not None]
        reservations = [(self._reserved, self.port)]
        if self.admin is not None:
            reservations.append((self._admin_reserved, self.admin[1]))
        for reserved, port in reservations:
            others = ports.strangers(reserved, pids)
            if others:
                self._conflict = ports.address_in_use(port, others)
                return

    def _stop_all(self) -> None:
        """SIGTERM every worker, wait for them, SIGKILL the late ones."""
        running = [s.process for s in self.slots if s.process is not None]
        for process in running:
            _send_signal(process, signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout + KILL_GRACE
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker pid %d still running %g s after its shutdown timeout (%g s): killing it",
                               process.pid, KILL_GRACE, self.shutdown_timeout)
                _send_signal(process, signal.SIGKILL)
                process.wait()
            if process.stdin is not None:
                process.stdin.close()
        for slot in self.slots:
            slot.process = None


def _send_signal(process: "subprocess.Popen[bytes]", signum: int) -> None:
    try:
        process.send_signal(signum)
    except OSError as exc:  # already reaped
        if exc.errno != errno.ESRCH:
            raise


def _describe_status(status: int) -> str:
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"status {status}"


def run_supervisor(
    spec: str = DEFAULT_HANDLER,
    host: str = "127.0.0.1",
    port: int = 8765,
    processes: Optional[int] = None,
    *,
    ready: Optional[Callable[[Supervisor], None]] = None,
    options: Sequence[str] = (),
    admin: Optional[Tuple[str, int]] = None,
    shutdown_timeout: float = serveconfig.SHUTDOWN_TIMEOUT,
) -> int:
    """Serve ``spec`` from ``processes`` workers sharing ``host:port``.

    Blocks until ``SIGTERM`` or ``SIGINT`` (Ctrl-C); must run in the main
    thread, since it handles signals.

    Args:
        spec: the handler, ``module:name``, imported by each worker.
        host: the interface.
        port: the port; 0 picks a free one.
        processes: how many workers; ``None`` for one per CPU.
        ready: called with the :class:`Supervisor` once every worker
            listens (its ``port`` is the bound port).
        options: options of ``python -m syncws serve`` for every worker.
        admin: ``(host, port)`` of the workers' admin listener, if any
            (see :class:`Supervisor`).
        shutdown_timeout: seconds each worker waits for its connections
            once told to stop (see :class:`Supervisor`).

    Returns:
        The exit status: 0 after a signal, 1 when a worker couldn't start.

    Raises:
        OSError: the address can't be bound, or another process listens
            on it (``EADDRINUSE``, saying which).
        ValueError: ``processes`` is below 1.
    """
    supervisor = Supervisor(spec, host, port, processes or os.cpu_count() or 1, options=options, admin=admin,
                            shutdown_timeout=shutdown_timeout)
    return supervisor.run(ready)


def _worker_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m syncws.workers``: one worker, as the supervisor starts it."""
    parser = argparse.ArgumentParser(prog="python -m syncws.workers", description="One worker (started by the supervisor).")
    serveconfig.add_arguments(parser)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--worker-index", type=int, default=0)
    parser.add_argument("--group-dir")
    args = parser.parse_args(argv)
    try:
        handler = load_handler(args.handler or DEFAULT_HANDLER)
        hook = load_handler(args.process_request, "--process-request") if args.process_request else None
    except HandlerImportError as exc:
        logconfig.configure(args.log_level, args.log_format)
        logger.error("worker %d: %s", os.getpid(), exc)
        return EXIT_CONFIG
    # After the import: a handler's module that configures logging keeps it.
    logconfig.configure(args.log_level, args.log_format)
    group = None
    if args.metrics is not None and args.group_dir is not None:
        group = metrics.GroupMetrics(args.group_dir, args.worker_index)
    render = None if group is None else group.render
    try:
        options = serveconfig.server_options(args, render, hook)
    except (OSError, ValueError) as exc:  # checked by the supervisor first: a file that changed meanwhile
        logger.error("worker %d: %s", os.getpid(), exc)
        return EXIT_CONFIG

    def admin(server: WebSocketServer) -> Optional[WebSocketServer]:
        return serveconfig.admin_server(args, render, reuse_port=True, ready=server.is_serving)

    if group is not None:
        group.start()
    return run_worker(handler, args.host, args.port, watch_fd=sys.stdin.fileno(), ready_fd=args.ready_fd,
                      admin=admin, shutdown_timeout=args.shutdown_timeout, **options)


if __name__ == "__main__":
    sys.exit(_worker_main())
