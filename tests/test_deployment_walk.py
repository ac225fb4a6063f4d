"""docs/deployment.rst's walk from one process to several machines, command by command.

Every ``$`` command of the page is taken from the page itself and run as an
operator would, from ``examples/chat``, with free ports in place of 8765
(the server), 9100 (its admin port), 6379 (Redis) and 8000 (nginx), and
127.0.0.1 in place of the machines' addresses. nginx runs
``examples/chat/nginx.conf``. Everything is
stopped by its PID at the end. ``test_every_command_of_the_page_is_run``
fails when the page shows a command that no test here runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest

import syncws
from services import HOST, Nginx, find_program, free_port, wait_message, wait_port

pytest.importorskip("redis", reason="redis-py is not installed (pip install 'syncws[redis]')")

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "deployment.rst"
CHAT = REPO / "examples" / "chat"
TIMEOUT = 20.0


def page_commands() -> List[str]:
    """Every ``$`` command of docs/deployment.rst."""
    return re.findall(r"(?m)^    \$ (.+)$", PAGE.read_text())


# The commands the tests below run, taken from the page.
RUN: Set[str] = set()


def command(fragment: str) -> str:
    """The one command of the page that contains ``fragment``."""
    found = [line for line in page_commands() if fragment in line]
    assert len(found) == 1, f"{fragment!r} is in {len(found)} commands of {PAGE.name}: {found}"
    RUN.add(found[0])
    return found[0]


ONE_PROCESS = command("serve --port 8765 --process-request")
TUNED = command("--max-size 65536")
REDIS = command("redis-server --port 6379 --save")
PROCESSES = command("--processes 4 --port 8765 --health")
HEALTH = command("curl -fsS http://127.0.0.1:8765/healthz")
METRICS = command("curl -fsS http://127.0.0.1:8765/metrics")
ADMIN = command("--admin-port 9100")
ADMIN_HEALTH = command("curl -fsS http://127.0.0.1:9100/healthz")
ADMIN_METRICS = command("curl -fsS http://127.0.0.1:9100/metrics")
LOGS = command("--log-format json")
MACHINE_REDIS = command("--bind 10.0.0.5")
MACHINE = command("--host 10.0.0.11")
HISTORY_REDIS = command("--appendonly yes")
HISTORY = command("CHAT_HISTORY=1000")


def test_every_command_of_the_page_is_run() -> None:
    assert sorted(RUN) == sorted(page_commands())


def prepare(line: str, ports: Dict[str, int]) -> Tuple[List[str], Dict[str, str]]:
    """A command of the page as argv and environment, with this test's ports and addresses."""
    for shown, port in ports.items():
        line = re.sub(rf"\b{shown}\b", str(port), line)
    line = line.replace("10.0.0.5", HOST).replace("10.0.0.11", HOST)
    words = shlex.split(line)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    program = words[0]
    words[0] = sys.executable if program == "python" else find_program(program)
    return words, env


class Running:
    """A command of the page running in the background, until stopped by its PID."""

    def __init__(self, line: str, ports: Dict[str, int], log: Path, cwd: Path = CHAT) -> None:
        argv, env = prepare(line, ports)
        self.log = log
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=output, stdin=subprocess.DEVNULL, text=True,
            )

    def wait_serving(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # bounded by the test's timeout
        assert line.startswith("serving on "), (line, self.stderr())
        return line

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return int(self.process.returncode)


def run(line: str, ports: Dict[str, int]) -> "subprocess.CompletedProcess[str]":
    """A command of the page run to its end."""
    argv, env = prepare(line, ports)
    return subprocess.run(argv, cwd=CHAT, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def get(url: str) -> Tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def chat_round(uris: List[str], room: str, senders: int = 3) -> None:
    """Clients join ``room`` at ``uris`` (in turn); each says one line; everyone hears every line, once."""
    clients = []
    try:
        for index in range(senders * 2):
            websocket = syncws.connect(uris[index % len(uris)] + f"/chat/{room}", timeout=TIMEOUT)
            websocket.send(f"hello {index}")
            wait_message(websocket, f"hello {index}", TIMEOUT)  # in the room everywhere
            clients.append(websocket)
        for index in range(senders):
            clients[index].send(f"line {index}")
        expected = {f"line {index}" for index in range(senders)}
        for websocket in clients:
            heard: List[str] = []
            deadline = time.monotonic() + TIMEOUT
            while len(heard) < senders:
                message = websocket.recv(max(0.0, deadline - time.monotonic()))
                if isinstance(message, str) and message.startswith("line "):
                    heard.append(message)
            assert sorted(heard) == sorted(expected)
    finally:
        for websocket in clients:
            websocket.close()


# -- one process ------------------------------------------------------------------------


@pytest.fixture
def background(tmp_path: Path) -> Iterator["Background"]:
    started: List[Running] = []

    def start(line: str, ports: Dict[str, int], cwd: Path = CHAT) -> Running:
        running = Running(line, ports, tmp_path / f"{len(started)}.log", cwd)
        started.append(running)
        return running

    yield start  # type: ignore[misc]
    for running in reversed(started):
        running.stop()


Background = object  # the fixture's start(line, ports, cwd=CHAT) -> Running


@pytest.mark.timeout(60)
def test_one_process(background: "Background") -> None:
    port = free_port()
    server = background(ONE_PROCESS, {"8765": port})  # type: ignore[operator]
    assert server.wait_serving() == f"serving on ws://127.0.0.1:{port}/\n"
    status, body = get(f"http://{HOST}:{port}/")
    assert status == 200 and b"new WebSocket" in body
    chat_round([f"ws://{HOST}:{port}"], "lobby")
    assert server.stop() == 0


@pytest.mark.timeout(60)
def test_limits_that_fit_the_protocol(background: "Background") -> None:
    port = free_port()
    background(TUNED, {"8765": port}).wait_serving()  # type: ignore[operator]
    uri = f"ws://{HOST}:{port}/chat/tuned"
    with pytest.raises(syncws.InvalidStatusCode) as refused:
        syncws.connect(uri, origin="https://elsewhere.example", timeout=TIMEOUT)
    assert refused.value.status_code == 403
    with syncws.connect(uri, origin=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as browser:
        with syncws.connect(uri, timeout=TIMEOUT, compression=None) as script:  # no Origin
            script.send("x" * 65537)
            with pytest.raises(syncws.ConnectionClosed) as closed:
                script.recv(TIMEOUT)
            assert closed.value.code == 1009
        browser.send("still here")
        wait_message(browser, "still here", TIMEOUT)


# -- several processes behind nginx ---------------------------------------------------


class Machine:
    """Redis, ``--processes 4`` and nginx, as the page starts them."""

    def __init__(self, directory: Path) -> None:
        self.ports = {"8765": free_port(), "6379": free_port()}
        self.redis = Running(REDIS.replace("--port 6379", "--port 6379 --bind 10.0.0.5"), self.ports,
                             directory / "redis.log", cwd=directory)
        self.server: Optional[Running] = None
        self.nginx: Optional[Nginx] = None
        try:
            wait_port(self.ports["6379"], process=self.redis.process)
            self.server = Running(PROCESSES, self.ports, directory / "server.log")
            self.line = self.server.wait_serving()
            self.nginx = Nginx(directory, [self.ports["8765"]])
            self.nginx.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        if self.server is not None:
            self.server.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    running = Machine(tmp_path_factory.mktemp("walk"))
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.needs("redis-server", "nginx")
@pytest.mark.timeout(90)
def test_processes_behind_nginx(machine: Machine) -> None:
    port = machine.ports["8765"]
    assert re.match(rf"serving on ws://127\.0\.0\.1:{port}/ with 4 worker processes \(supervisor pid \d+\)$",
                    machine.line.rstrip())
    assert machine.nginx is not None
    through_nginx = f"ws://{HOST}:{machine.nginx.port}"
    status, body = get(f"http://{HOST}:{machine.nginx.port}/")
    assert status == 200 and b"new WebSocket" in body
    # The kernel spreads connections over the workers: several answer.
    pids = set()
    deadline = time.monotonic() + TIMEOUT
    while len(pids) < 2:
        assert time.monotonic() < deadline, f"only worker {pids} answered"
        pids.add(json.loads(get(f"http://{HOST}:{port}/stats")[1])["pid"])
    # Members of one room in different workers, through nginx and not.
    chat_round([through_nginx, f"ws://{HOST}:{port}"], "walk", senders=4)


@pytest.mark.needs("redis-server", "nginx", "curl")
@pytest.mark.timeout(60)
def test_health_checks(machine: Machine) -> None:
    for _ in range(8):  # whichever worker takes it
        result = run(HEALTH, machine.ports)
        assert (result.returncode, result.stdout) == (0, "OK\n"), result.stderr
    assert machine.nginx is not None
    for path in ("/healthz", "/healthz%3F", "/healthz%3f?x", "/healthz%23"):  # not for the public, in any spelling
        assert get(f"http://{HOST}:{machine.nginx.port}{path}")[0] in (400, 404), path


@pytest.mark.needs("redis-server", "nginx", "curl")
@pytest.mark.timeout(60)
def test_metrics(machine: Machine) -> None:
    port = machine.ports["8765"]
    with syncws.connect(f"ws://{HOST}:{port}/chat/metrics", timeout=TIMEOUT) as websocket:
        websocket.send("counted")
        wait_message(websocket, "counted", TIMEOUT)

        def scrape() -> str:
            result = run(METRICS, machine.ports)
            assert result.returncode == 0, result.stderr
            return result.stdout

        def counted(text: str) -> bool:
            """Every worker's samples, and this connection and its message counted."""
            workers = re.findall(r'^syncws_connections_open\{worker="(\d)"\} (\S+)$', text, re.M)
            published = re.findall(r'^syncws_fanout_published_total\{worker="\d"\} (\S+)$', text, re.M)
            return (
                sorted(worker for worker, _ in workers) == ["0", "1", "2", "3"]
                and sum(float(value) for _, value in workers) >= 1
                and sum(map(float, published)) >= 1
            )

        # Whichever worker answers, it answers for all (each writes its own
        # every second).
        assert wait_for_text(scrape, counted), scrape()
        assert "# TYPE syncws_fanout_delivered_total counter" in scrape()
    assert machine.nginx is not None
    for path in ("/metrics", "/metrics%3F", "/metrics%3f?x", "/metrics%23"):  # nginx matches the decoded path
        status, body = get(f"http://{HOST}:{machine.nginx.port}{path}")
        assert status in (400, 404) and b"syncws_" not in body, path


@pytest.mark.needs("redis-server", "nginx", "curl")
@pytest.mark.timeout(90)
def test_admin_port(machine: Machine, background: "Background") -> None:
    ports = dict(machine.ports, **{"8765": free_port(), "9100": free_port()})  # the same Redis, another server
    server = background(ADMIN, ports)  # type: ignore[operator]
    assert server.wait_serving().startswith(f"serving on ws://127.0.0.1:{ports['8765']}/ with 2 worker processes ")
    assert server.process.stdout is not None
    assert server.process.stdout.readline() == f"answering /healthz and /metrics on http://127.0.0.1:{ports['9100']}/\n"
    for _ in range(4):  # whichever worker takes it
        result = run(ADMIN_HEALTH, ports)
        assert (result.returncode, result.stdout) == (0, "OK\n"), result.stderr

    def scrape() -> str:
        result = run(ADMIN_METRICS, ports)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def every_worker(text: str) -> bool:
        return sorted(re.findall(r'^syncws_connections_open\{worker="(\d)"\} ', text, re.M)) == ["0", "1"]

    assert wait_for_text(scrape, every_worker), scrape()
    # No longer on the WebSocket port: the chat's own answer there.
    assert get(f"http://{HOST}:{ports['8765']}/healthz")[0] == 404
    assert server.stop() == 0


def wait_for_text(scrape: Callable[[], str], ready: Callable[[str], bool]) -> bool:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if ready(scrape()):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.needs("redis-server", "nginx")
@pytest.mark.timeout(60)
def test_log_format(machine: Machine, background: "Background") -> None:
    ports = dict(machine.ports, **{"8765": free_port()})  # the same Redis, another server
    server = background(LOGS, ports)  # type: ignore[operator]
    server.wait_serving()
    with syncws.connect(f"ws://{HOST}:{ports['8765']}/chat/logs", timeout=TIMEOUT) as websocket:
        websocket.send("logged")
        wait_message(websocket, "logged", TIMEOUT)
    assert server.stop() == 0
    lines = [json.loads(line) for line in server.stderr().splitlines()]  # every line is JSON
    assert {"time", "level", "logger", "pid", "connection", "message"} <= set(lines[0])
    assert len({line["pid"] for line in lines}) == 5  # the supervisor and 4 workers
    opened = next(line for line in lines if " opened: " in line["message"])
    assert opened["connection"] and opened["message"].startswith(f"connection {opened['connection']} opened")
    assert {line["level"] for line in lines} <= {"INFO", "WARNING"}


# -- several machines ---------------------------------------------------------------


@pytest.mark.needs("redis-server", "nginx")
@pytest.mark.timeout(120)
def test_several_machines(tmp_path: Path, background: "Background") -> None:
    redis_port = free_port()
    redis = background(MACHINE_REDIS, {"6379": redis_port}, cwd=tmp_path)  # type: ignore[operator]
    wait_port(redis_port, process=redis.process)
    # Two machines: the same command, each on its own port here.
    ports = [free_port(), free_port()]
    for port in ports:
        background(MACHINE, {"6379": redis_port, "8765": port}).wait_serving()  # type: ignore[operator]
    nginx = Nginx(tmp_path, ports)
    nginx.start()
    try:
        # Through nginx (least_conn) and straight to each machine: one room.
        chat_round([f"ws://{HOST}:{nginx.port}", f"ws://{HOST}:{ports[0]}", f"ws://{HOST}:{ports[1]}"], "far", 6)
    finally:
        nginx.stop()


# -- history ----------------------------------------------------------------------


@pytest.mark.needs("redis-server")
@pytest.mark.timeout(90)
def test_history_outlives_a_redis_restart(tmp_path: Path, background: "Background") -> None:
    ports = {"6379": free_port(), "8765": free_port()}
    redis = background(HISTORY_REDIS, ports, cwd=tmp_path)  # type: ignore[operator]
    wait_port(ports["6379"], process=redis.process)
    background(HISTORY, ports).wait_serving()  # type: ignore[operator]
    uri = f"ws://{HOST}:{ports['8765']}/chat/kept"

    def texts(websocket: syncws.WebSocketClientProtocol, count: int) -> List[Dict[str, str]]:
        found: List[Dict[str, str]] = []
        while len(found) < count:
            event = json.loads(websocket.recv(TIMEOUT))
            if "text" in event or "recovered" in event:
                found.append(event)
        return found

    with syncws.connect(uri + "?name=ann", timeout=TIMEOUT) as ann:
        for line in ("one", "two", "three"):
            ann.send(line)
        said = texts(ann, 3)
    assert [event["text"] for event in said] == ["one", "two", "three"]
    redis.stop(signal.SIGKILL)  # appendfsync always: its file has all it acknowledged
    redis = background(HISTORY_REDIS, ports, cwd=tmp_path)  # type: ignore[operator]
    wait_port(ports["6379"], process=redis.process)
    # Back with the first id: the two that followed, from the Redis restarted.
    with syncws.connect(uri + f"?name=bob&since={said[0]['id']}", timeout=TIMEOUT) as bob:
        assert texts(bob, 2) == said[1:]
        bob.send("four")
        assert texts(bob, 1)[0]["text"] == "four"
    # An id of no stream here: the client is told, then gets the history.
    with syncws.connect(uri + "?since=000000000000:1-0", timeout=TIMEOUT) as carol:
        assert texts(carol, 5)[:4] == [{"recovered": False}] + said
    # Whoever connects names a room: its keys expire a day after its last
    # message, or rooms made up by the thousand would fill Redis.
    redis_py = pytest.importorskip("redis")
    client = redis_py.Redis(host=HOST, port=ports["6379"])
    try:
        for key in ("syncws:s:kept", "syncws:m:kept"):
            assert 0 < client.ttl(key) <= 86_400, key
    finally:
        client.close()
