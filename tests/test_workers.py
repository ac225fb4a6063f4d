"""Tests for ``syncws.workers``: ``python -m syncws serve --processes N``.

The supervisor runs as users run it, in a subprocess, on 127.0.0.1 and a free
port. The handler tells the test which worker answered by sending its PID
first, then echoes. Every wait has a deadline, and every process the test
started (the supervisor, and through it the workers) is killed at teardown
if it is still there.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Mapping, Optional, Sequence, Set

import pytest

import syncws
from syncws.workers import EXIT_CONFIG, HandlerImportError, Supervisor, load_handler

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TIMEOUT = 20

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balancing is Linux's")

PID_HANDLER = '''
import os

def handler(websocket):
    websocket.send(str(os.getpid()))
    for message in websocket:
        websocket.send(message)
'''


# A handler that never returns, even once its connection is closed; the
# wedged one also leaves a thread that the interpreter waits for at exit.
STUCK_HANDLER = '''
import os
import threading

def handler(websocket):
    websocket.send(str(os.getpid()))
    for message in websocket:
        pass
    threading.Event().wait()

def wedged(websocket):
    threading.Thread(target=threading.Event().wait, daemon=False).start()
    handler(websocket)
'''


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and isn't a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, or reaped while read
        return False


def wait_until(predicate, timeout: float = TIMEOUT) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Supervised:
    """``python -m syncws serve --processes N`` with the PID handler."""

    def __init__(
        self, tmp_path: Path, processes: int = 2, handler: str = "pidapp:handler", port: int = 0,
        options: Sequence[str] = (), env: Mapping[str, str] = {},
    ) -> None:
        (tmp_path / "pidapp.py").write_text(PID_HANDLER)
        env = dict(os.environ, **env)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(tmp_path)])
        self.process = subprocess.Popen(
            [sys.executable, "-m", "syncws", "serve", "--processes", str(processes), "--host", HOST, "--port", str(port),
             *options, handler],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.stderr: List[str] = []
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_thread.start()
        self.port = 0

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def wait_serving(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # bounded by the test's timeout
        assert line.startswith("serving on ws://127.0.0.1:"), (line, self.stderr)
        self.port = int(line.split(":")[2].split("/")[0])

    @property
    def uri(self) -> str:
        return f"ws://{HOST}:{self.port}/"

    def connect(self) -> "syncws.WebSocketClientProtocol":
        """Connect to any worker, retrying while workers start or restart."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                return syncws.connect(self.uri, timeout=TIMEOUT)
            except (ConnectionError, syncws.InvalidHandshake):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def answering_pid(self) -> int:
        with self.connect() as websocket:
            return int(websocket.recv(TIMEOUT))

    def pids_seen(self, want: int, exclude: Set[int] = frozenset()) -> Set[int]:  # type: ignore[assignment]
        """Connect until ``want`` different worker PIDs (not in ``exclude``) answered."""
        seen: Set[int] = set()
        deadline = time.monotonic() + TIMEOUT
        while len(seen - exclude) < want:
            assert time.monotonic() < deadline, f"only workers {seen} answered"
            seen.add(self.answering_pid())
        return seen - exclude

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(TIMEOUT)


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Supervised]:
    server = Supervised(tmp_path)
    try:
        server.wait_serving()
        yield server
    finally:
        # SIGTERM first: the supervisor takes its workers down with it.
        if server.process.poll() is None:
            server.process.terminate()
            try:
                server.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                server.kill()


def test_serve_reuse_port_shares_the_port() -> None:
    with syncws.serve(lambda ws: None, HOST, 0, reuse_port=True) as first:
        # A second listener on the same port: allowed with reuse_port only.
        with syncws.serve(lambda ws: None, HOST, first.port, reuse_port=True) as second:
            assert second.port == first.port
        with pytest.raises(OSError):
            syncws.serve(lambda ws: None, HOST, first.port)
    # IPv6 addresses too (they used to be bound as IPv4).
    with syncws.serve(lambda ws: None, "::1", 0, reuse_port=True) as first:
        with syncws.serve(lambda ws: None, "::1", first.port, reuse_port=True):
            with syncws.connect(f"ws://[::1]:{first.port}/", timeout=TIMEOUT) as websocket:
                assert websocket.remote_address[0] == "::1"


def test_load_handler_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_app.py").write_text("raise RuntimeError('no config')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(HandlerImportError, match="cannot import module 'broken_app': RuntimeError: no config"):
        load_handler("broken_app:handler")
    with pytest.raises(HandlerImportError, match="expected module:name"):
        load_handler("no_colon")
    with pytest.raises(HandlerImportError, match="cannot import module 'no_such_module_xyz'"):
        load_handler("no_such_module_xyz:handler")
    with pytest.raises(HandlerImportError, match="has no attribute 'nope'"):
        load_handler("syncws:nope")
    with pytest.raises(HandlerImportError, match="str object is not callable"):
        load_handler("syncws:__version__")
    assert load_handler("syncws.workers:load_handler") is load_handler


@pytest.mark.timeout(60)
def test_two_workers_share_the_port_and_echo_200_clients(supervised: Supervised) -> None:
    # "serving on" comes once both workers listen: the first try connects.
    with syncws.connect(supervised.uri, timeout=TIMEOUT) as websocket:
        int(websocket.recv(TIMEOUT))
    workers = supervised.pids_seen(2)
    assert supervised.process.pid not in workers
    clients = []
    try:
        for _ in range(200):
            clients.append(supervised.connect())
        pids = {int(c.recv(TIMEOUT)) for c in clients}
        assert pids == workers  # the kernel spread the 200 over both
        for i, client in enumerate(clients):
            client.send(f"message {i}")
        for i, client in enumerate(clients):
            assert client.recv(TIMEOUT) == f"message {i}"
    finally:
        for client in clients:
            client.close()


@pytest.mark.timeout(60)
def test_killed_worker_is_replaced(supervised: Supervised) -> None:
    workers = supervised.pids_seen(2)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: not alive(victim)), "the supervisor didn't reap the killed worker"
    replacement = supervised.pids_seen(1, exclude=workers)
    assert len(replacement) == 1 and victim not in replacement
    assert supervised.process.poll() is None
    assert wait_until(lambda: any("signal SIGKILL" in line and "restarting" in line for line in supervised.stderr))


@pytest.mark.timeout(60)
def test_sigterm_closes_clients_with_1001_and_leaves_no_process(supervised: Supervised) -> None:
    workers = supervised.pids_seen(2)
    clients = []
    pids: Set[int] = set()
    try:
        while pids != workers or len(clients) < 10:
            clients.append(supervised.connect())
            pids.add(int(clients[-1].recv(TIMEOUT)))
        supervised.process.send_signal(signal.SIGTERM)
        for client in clients:
            with pytest.raises(syncws.ConnectionClosed) as info:
                client.recv(TIMEOUT)
            assert info.value.code == 1001
        assert supervised.process.wait(TIMEOUT) == 0
    finally:
        for client in clients:
            client.close()
    assert wait_until(lambda: not any(alive(pid) for pid in workers))
    assert not alive(supervised.process.pid)


@pytest.mark.timeout(60)
def test_workers_exit_when_the_supervisor_is_killed(supervised: Supervised) -> None:
    workers = supervised.pids_seen(2)
    supervised.process.kill()  # no chance to stop its workers
    supervised.process.wait(TIMEOUT)
    # Orphans notice the closed pipe, close their server and exit.
    assert wait_until(lambda: not any(alive(pid) for pid in workers))


def metrics_supervisor(tmp_path: Path, temp: Path, processes: int = 2) -> Supervised:
    """A supervisor with ``--metrics``, its group's directory made in ``temp`` (``TMPDIR``)."""
    server = Supervised(tmp_path, processes, options=["--metrics", "/metrics"], env={"TMPDIR": str(temp)})
    server.wait_serving()
    return server


def published_pid(path: Path) -> Optional[int]:
    """The pid of the worker whose metrics are in ``path``, if there."""
    try:
        return int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError):
        return None


@pytest.mark.timeout(60)
def test_a_killed_workers_metrics_files_are_removed(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = metrics_supervisor(tmp_path, temp)
    try:
        [group] = list(temp.iterdir())
        assert wait_until(lambda: published_pid(group / "0.json") is not None)
        victim = published_pid(group / "0.json")
        # What a worker killed while writing its metrics leaves behind.
        unfinished = group / f"0.json.{victim}.tmp"
        unfinished.write_text('{"pid": ')
        os.kill(victim, signal.SIGKILL)  # type: ignore[arg-type]
        # Its successor, under the same index, publishes its own.
        assert wait_until(lambda: published_pid(group / "0.json") not in (None, victim))
        assert not unfinished.exists()
    finally:
        server.process.terminate()
        assert server.process.wait(TIMEOUT) == 0
    assert list(temp.iterdir()) == []  # the supervisor removed its directory


@pytest.mark.timeout(90)
def test_a_killed_supervisors_metrics_directory_is_removed_by_the_next(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    killed = metrics_supervisor(tmp_path, temp, processes=1)
    [stale] = list(temp.iterdir())
    live = metrics_supervisor(tmp_path, temp, processes=1)
    [kept] = set(temp.iterdir()) - {stale}
    try:
        workers = killed.pids_seen(1)
        killed.kill()  # SIGKILL: no chance to remove anything
        assert wait_until(lambda: not any(alive(pid) for pid in workers))
        assert stale.exists()
        following = metrics_supervisor(tmp_path, temp, processes=1)
        try:
            # The killed supervisor's directory is gone; the live one's stays.
            assert not stale.exists()
            assert kept.exists() and len(list(temp.iterdir())) == 2
        finally:
            following.process.terminate()
            assert following.process.wait(TIMEOUT) == 0
    finally:
        live.process.terminate()
        assert live.process.wait(TIMEOUT) == 0
    assert list(temp.iterdir()) == []


@pytest.mark.timeout(60)
def test_handler_that_does_not_import_stops_the_supervisor(tmp_path: Path) -> None:
    server = Supervised(tmp_path, handler="pidapp:missing")
    try:
        assert server.process.wait(TIMEOUT) == 1
        assert server.process.stdout is not None
        assert server.process.stdout.read() == ""  # never announced "serving"
        assert wait_until(lambda: any("could not start" in line for line in server.stderr), 5)
        assert any("'pidapp' has no attribute 'missing'" in line for line in server.stderr)
    finally:
        server.kill()


@pytest.mark.timeout(60)
def test_a_worker_that_cannot_bind_its_admin_listener_says_where(tmp_path: Path) -> None:
    # The supervisor reserves the admin port first; a worker still fails
    # when the port is not its own by then (or not its to take: below 1024).
    (tmp_path / "pidapp.py").write_text(PID_HANDLER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]))
    with socket.socket() as taken:  # no SO_REUSEPORT: the worker can't share it
        taken.bind((HOST, 0))
        taken.listen(1)
        admin_port = taken.getsockname()[1]
        worker = subprocess.run(
            [sys.executable, "-m", "syncws.workers", "--host", HOST, "--port", "0", "--admin-port", str(admin_port),
             "--health", "/healthz", "pidapp:handler"],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=TIMEOUT, stdin=subprocess.PIPE,
        )
    assert worker.returncode == EXIT_CONFIG, worker.stderr
    assert f"cannot start its admin listener on {HOST}:{admin_port}: Address already in use" in worker.stderr


def test_processes_must_be_positive() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "syncws", "serve", "--processes", "0"],
        capture_output=True, text=True, cwd=REPO, timeout=TIMEOUT,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert result.returncode == 2
    assert "--processes: must be at least 1, got 0" in result.stderr


@pytest.mark.timeout(60)
def test_one_process_serves_a_named_handler(tmp_path: Path) -> None:
    (tmp_path / "pidapp.py").write_text(PID_HANDLER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]))
    bad = subprocess.run(
        [sys.executable, "-m", "syncws", "serve", "--port", "0", "pidapp:nope"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=TIMEOUT,
    )
    assert bad.returncode == 1 and "'pidapp' has no attribute 'nope'" in bad.stderr
    process = subprocess.Popen(
        [sys.executable, "-m", "syncws", "serve", "--host", HOST, "--port", "0", "pidapp:handler"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        port = int(line.split(":")[2].split("/")[0])
        with syncws.connect(f"ws://{HOST}:{port}/", timeout=TIMEOUT) as websocket:
            assert int(websocket.recv(TIMEOUT)) == process.pid
            websocket.send("ping")
            assert websocket.recv(TIMEOUT) == "ping"
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)


def stop_stuck_server(tmp_path: Path, handler: str, *args: str) -> "subprocess.CompletedProcess[str]":
    """``serve --shutdown-timeout 1 *args stuck:handler``: SIGTERM while a client is connected, to its end."""
    (tmp_path / "stuck.py").write_text(STUCK_HANDLER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]))
    process = subprocess.Popen(
        [sys.executable, "-m", "syncws", "serve", *args, "--host", HOST, "--port", "0", "--shutdown-timeout", "1",
         f"stuck:{handler}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # bounded by the test's timeout
        port = int(line.split(":")[2].split("/")[0])
        with syncws.connect(f"ws://{HOST}:{port}/", timeout=TIMEOUT) as websocket:
            worker = int(websocket.recv(TIMEOUT))
            process.send_signal(signal.SIGTERM)
            with pytest.raises(syncws.ConnectionClosed) as closed:
                websocket.recv(TIMEOUT)
            assert closed.value.code == 1001
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=TIMEOUT)
    assert not alive(worker)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("processes", [[], ["--processes", "1"]], ids=["one process", "a worker"])
def test_shutdown_timeout_gives_up_on_handlers_that_never_return(tmp_path: Path, processes: List[str]) -> None:
    stopped = stop_stuck_server(tmp_path, "handler", *processes)
    assert stopped.returncode == 0, stopped.stderr
    # The process gave up by itself, after the timeout given (not 15 s).
    assert "gave up draining: 1 connection still being served after 1.0 seconds" in stopped.stderr
    assert "killing it" not in stopped.stderr
    if processes:
        assert "closing 1 connections (for 1 s at most)" in stopped.stderr


@pytest.mark.timeout(60)
def test_supervisor_kills_a_worker_still_running_after_its_shutdown_timeout(tmp_path: Path) -> None:
    # The worker gives up on the handler, then waits at exit for the
    # handler's own thread: the supervisor's SIGKILL ends it.
    stopped = stop_stuck_server(tmp_path, "wedged", "--processes", "1")
    assert stopped.returncode == 0, stopped.stderr
    gave_up = stopped.stderr.index("gave up draining: 1 connection still being served after 1.0 seconds")
    killed = stopped.stderr.index("s after its shutdown timeout (1 s): killing it")
    assert gave_up < killed


def run_serve(tmp_path: Path, *args: str) -> "subprocess.CompletedProcess[str]":
    """``python -m syncws serve args`` to its end (killed after TIMEOUT)."""
    (tmp_path / "pidapp.py").write_text(PID_HANDLER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path)]))
    return subprocess.run(
        [sys.executable, "-m", "syncws", "serve", *args],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=TIMEOUT,
    )


@pytest.mark.timeout(60)
def test_processes_refuse_a_port_that_syncws_processes_serve(supervised: Supervised, tmp_path: Path) -> None:
    workers = supervised.pids_seen(2)
    second = run_serve(tmp_path, "--processes", "1", "--host", HOST, "--port", str(supervised.port))
    assert second.returncode == 1, second.stderr
    assert second.stdout == ""  # never announced "serving"
    message = f"could not listen on {HOST}:{supervised.port}: Address already in use: served by another process (pid "
    assert message in second.stderr
    # It names one of the workers that serve the port.
    named = int(second.stderr.split(message, 1)[1].split(",", 1)[0])
    assert named in workers
    # Every client still reaches the first server's workers.
    assert supervised.pids_seen(2) == workers
    for _ in range(20):
        assert supervised.answering_pid() in workers


@pytest.mark.timeout(60)
@pytest.mark.parametrize("reuse_port", [True, False], ids=["SO_REUSEPORT", "plain"])
def test_processes_refuse_a_port_another_program_serves(tmp_path: Path, reuse_port: bool) -> None:
    # Not syncws: a listener of this process, with or without SO_REUSEPORT
    # (nginx's "listen ... reuseport", uvicorn and others set it).
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind((HOST, 0))
        other.listen(8)
        port = other.getsockname()[1]
        for args in (["--processes", "1"], ["--processes", "2"], []):
            result = run_serve(tmp_path, *args, "--host", HOST, "--port", str(port), "pidapp:handler")
            assert result.returncode == 1, (args, result.stderr)
            assert result.stdout == ""
            assert (
                f"could not listen on {HOST}:{port}: Address already in use: "
                f"served by another process (pid {os.getpid()}, "
            ) in result.stderr, (args, result.stderr)
            assert "Traceback" not in result.stderr
        # Nothing took a connection from it.
        other.settimeout(0)
        with pytest.raises(BlockingIOError):
            other.accept()


@pytest.mark.timeout(90)
def test_supervisors_started_at_the_same_moment_do_not_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first reserves the port; the second starts before the first's
    # workers listen, so its own check at bind time finds nobody serving.
    (tmp_path / "pidapp.py").write_text(PID_HANDLER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(tmp_path)]))
    first = Supervisor("pidapp:handler", HOST, 0, 1, shutdown_timeout=TIMEOUT)
    first.bind()
    second = Supervised(tmp_path, processes=1, port=first.port)
    try:
        second.wait_serving()
        assert second.port == first.port
        theirs = second.pids_seen(1)

        def announced(supervisor: Supervisor) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # stops run() at once

        # Once its workers listen, the first sees the second's and stops.
        with pytest.raises(OSError) as raised:
            first.run(announced)
        assert raised.value.errno == errno.EADDRINUSE
        assert f"served by another process (pid {min(theirs)}, " in raised.value.strerror
        assert all(slot.process is None for slot in first.slots)
        for _ in range(10):
            assert second.answering_pid() in theirs
    finally:
        second.process.terminate()
        try:
            second.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            second.kill()


@pytest.mark.parametrize("shutdown_timeout", [0, -1, float("inf"), float("nan"), 1e10])
def test_supervisor_refuses_a_shutdown_timeout_its_workers_would_refuse(shutdown_timeout: float) -> None:
    """Each worker's command line refuses it: the worker would exit, be restarted, and exit, for ever."""
    with pytest.raises(ValueError, match=r"shutdown_timeout must be"):
        Supervisor("pidapp:handler", HOST, 0, 1, shutdown_timeout=shutdown_timeout)
