"""Real services for the tests: redis-server, nginx, chat servers, gunicorn; the programs they need.

Each runs as a child process on 127.0.0.1 and a free port, with its files in
a temporary directory, and is stopped by its PID (never by name). Starting
waits until the service answers, within a deadline.

A test that needs a program this machine lacks ends with
:func:`cannot_run`: skipped, saying why and how to install it, except under
CI (``CI=true``), which installs everything the tests need, and where such a
test fails instead. :func:`find_program` does that for a program, and the
``needs`` marker (``@pytest.mark.needs("redis-server", "nginx")``, handled
in conftest.py) for a test or a module.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO, Any, List, NoReturn, Optional, Sequence

import pytest

REPO = Path(__file__).resolve().parent.parent
CHAT_SERVER = REPO / "examples" / "chat" / "server.py"
WSGI_APPS = REPO / "tests" / "wsgi_apps"
NGINX_CONF = REPO / "examples" / "chat" / "nginx.conf"
HOST = "127.0.0.1"
START_TIMEOUT = 15.0


# How to install each program the tests start (Debian's packages; .ci/run
# installs them).
INSTALL = {
    "redis-server": "apt-get install redis-server",
    "nginx": "apt-get install nginx",
    "microsocks": "apt-get install microsocks",
    "danted": "apt-get install dante-server",
    "chromium": "apt-get install chromium",
    "node": "apt-get install nodejs npm",
    "npm": "apt-get install npm",
    "openssl": "apt-get install openssl",
    "curl": "apt-get install curl",
    "ip": "apt-get install iproute2",
    "ss": "apt-get install iproute2",
}

# Where programs for root live, searched after PATH: a user's PATH often
# lacks them, though nginx or danted run fine as any user.
_SBIN = os.pathsep.join(["/usr/local/sbin", "/usr/sbin", "/sbin"])


def in_ci() -> bool:
    """Whether the tests run in CI (``CI=true``, as .ci/run sets it)."""
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def cannot_run(reason: str) -> NoReturn:
    """End a test that this machine can't run: skip it, saying why; in CI, fail it.

    CI installs every program the tests need: there, one missing is a broken
    setup, not a reason to skip.
    """
    if in_ci():
        pytest.fail(f"{reason}; CI=true, where every test must run", pytrace=False)
    pytest.skip(reason)


def find_program(*names: str) -> str:
    """The path of the first of ``names`` installed here; else :func:`cannot_run`.

    Args:
        names: a program and the other names it goes by (``danted`` or
            ``sockd``), the one in :data:`INSTALL` first.
    """
    for name in names:
        path = shutil.which(name) or shutil.which(name, path=_SBIN)
        if path is not None:
            return path
    cannot_run(f"{' or '.join(names)} is not installed ({INSTALL.get(names[0], 'install it')})")


def ip(*args: str) -> None:
    """Run ``ip ARGS`` (iproute2), failing on an error."""
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=START_TIMEOUT)


@functools.lru_cache(maxsize=None)
def netns_unavailable() -> str:
    """Why network namespaces can't be made here, or "" when they can (asked once)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux's"
    if shutil.which("ip") is None:
        return f"ip is not installed ({INSTALL['ip']})"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"swprobe{os.getpid()}"
    try:
        ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        return f"ip netns add failed: {exc.stderr.decode(errors='replace').strip()}"
    try:
        ip("netns", "del", name)
    except subprocess.CalledProcessError:
        pass
    return ""


def need_network_namespaces() -> None:
    """:func:`cannot_run` unless this process can make network namespaces (root, Linux, iproute2)."""
    reason = netns_unavailable()
    if reason:
        cannot_run(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = START_TIMEOUT, process: Optional[subprocess.Popen] = None) -> None:
    """Wait until something accepts on ``port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout} s")
            time.sleep(0.02)


def wait_message(websocket: Any, text: str, timeout: float = START_TIMEOUT) -> None:
    """Read messages from a syncws connection until ``text`` arrives."""
    deadline = time.monotonic() + timeout
    while websocket.recv(max(0.0, deadline - time.monotonic())) != text:
        pass


def stop(process: Optional[subprocess.Popen], sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Stop one process we started, by its PID; kill it if it doesn't stop."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


class Redis:
    """``redis-server`` on a free port: without persistence, or with ``appendonly yes`` (``persist``).

    Started again after :meth:`kill` or :meth:`stop`, it keeps its port and,
    persisting, what it had written to its append-only file in ``directory``.
    ``appendfsync="always"`` for a test that kills it and counts on every
    write it acknowledged: with ``everysec`` (Redis's default), a write made
    while a background fsync runs is acknowledged before it is written, and
    a SIGKILL then loses it.
    """

    def __init__(self, directory: Path, persist: bool = False, appendfsync: str = "everysec") -> None:
        self.binary = find_program("redis-server")
        self.directory = directory
        self.persist = persist
        self.appendfsync = appendfsync
        self.port = free_port()
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        log = open(self.directory / "redis.log", "ab")
        self.process = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", HOST, "--save", "",
                "--appendonly", "yes" if self.persist else "no", "--appendfsync", self.appendfsync,
                "--dir", str(self.directory), "--protected-mode", "no",
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        wait_port(self.port, process=self.process)

    def kill(self) -> None:
        """SIGKILL: as a crash, with no goodbye to the clients."""
        stop(self.process, signal.SIGKILL)

    def stop(self) -> None:
        stop(self.process)

    def freeze(self) -> None:
        """SIGSTOP: Redis stalls (a slow disk, a loaded machine): connections stay open, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: answers what came meanwhile, in the order it came."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class Nginx:
    """nginx in the foreground, with examples/chat/nginx.conf pointed at ``upstreams``."""

    def __init__(self, directory: Path, upstreams: Sequence[int]) -> None:
        self.binary = find_program("nginx")
        self.directory = directory
        self.port = free_port()
        self.upstreams = list(upstreams)
        self.process: Optional[subprocess.Popen] = None

    def write_config(self) -> Path:
        site = NGINX_CONF.read_text()
        # The example's addresses become this test's ports.
        servers = "".join(f"    server {HOST}:{port};\n" for port in self.upstreams)
        site, count = re.subn(r"(?m)^    server 127\.0\.0\.1:\d+;\n(?:    server 127\.0\.0\.1:\d+;\n)*", servers, site)
        assert count == 1, "examples/chat/nginx.conf: the upstream's server lines moved"
        site, count = re.subn(r"listen 127\.0\.0\.1:\d+;", f"listen {HOST}:{self.port};", site)
        assert count == 1, "examples/chat/nginx.conf: the listen line moved"
        d = self.directory
        (d / "chat.conf").write_text(site)
        temp = "\n".join(
            f"    {name}_temp_path {d / name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root;\n" if os.geteuid() == 0 else ""
        main = (
            f"{user}worker_processes 1;\n"
            f"pid {d / 'nginx.pid'};\n"
            f"error_log {d / 'error.log'} warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            "    access_log off;\n"
            f"{temp}\n"
            f"    include {d / 'chat.conf'};\n"
            "}\n"
        )
        path = d / "nginx.conf"
        path.write_text(main)
        return path

    def start(self) -> None:
        config = self.write_config()
        self.process = subprocess.Popen(
            [self.binary, "-p", str(self.directory), "-c", str(config), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=open(self.directory / "stderr.log", "wb"), stdin=subprocess.DEVNULL,
        )
        wait_port(self.port, process=self.process)

    def stop(self) -> None:
        stop(self.process, signal.SIGQUIT)  # graceful for nginx; killed if slow


class ChatServer:
    """``examples/chat/server.py`` on a free port; its log in a file."""

    def __init__(self, directory: Path, redis_url: Optional[str], name: str, host: str = HOST,
                 prefix: Sequence[str] = (), extra: Sequence[str] = ()) -> None:
        self.log_path = directory / f"{name}.log"
        self.host = host
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        command = [*prefix, sys.executable, str(CHAT_SERVER), "--host", host, "--port", "0"]
        if redis_url:
            command += ["--redis", redis_url]
        command += extra
        self._log: IO[bytes] = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, text=True,
        )
        self.port = 0

    def wait_serving(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.match(r"serving on ws://[^:]+:(\d+)/", line)
        assert match, f"chat server said {line!r}; log: {self.log()}"
        self.port = int(match.group(1))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop(self.process)
        self._log.close()


def start_chat_servers(directory: Path, redis_url: Optional[str], count: int) -> List[ChatServer]:
    servers = [ChatServer(directory, redis_url, f"chat{i}") for i in range(count)]
    try:
        for server in servers:
            server.wait_serving()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


@functools.lru_cache(maxsize=None)
def _no_control_socket() -> List[str]:
    """gunicorn >= 25 opens a control socket at a fixed path: not in tests."""
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


def gunicorn_command(app: str, *args: str, port: Optional[int] = None, config: bool = True) -> List[str]:
    """The command that runs gunicorn serving ``app``, without a control socket.

    Args:
        app: the WSGI application, ``module:name``.
        args: gunicorn's options.
        port: the port of 127.0.0.1 to listen on (bound after ``args``, so
            it wins); ``None`` leaves the address to the configuration.
        config: with syncws's gunicorn configuration
            (``-c python:syncws.gunicorn_conf``).
    """
    command = [sys.executable, "-m", "gunicorn"]
    if config:
        command += ["-c", "python:syncws.gunicorn_conf"]
    command += [*_no_control_socket(), *args]
    if port is not None:
        command += ["-b", f"{HOST}:{port}"]
    return [*command, app]


class Gunicorn:
    """gunicorn serving ``app`` (a module of tests/wsgi_apps) on a free port, its log in a file.

    With syncws's gunicorn configuration (SIGTERM closes WebSockets with
    1001); ``args`` go before the app (``--preload``, ``--workers 2``...).
    """

    def __init__(self, directory: Path, app: str, *args: str, env: Optional[dict] = None) -> None:
        self.port = free_port()
        self.log_path = directory / "gunicorn.log"
        environ = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(WSGI_APPS), environ.get("PYTHONPATH")]))
        command = gunicorn_command(app, *args, port=self.port)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=WSGI_APPS, env=environ, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        try:
            wait_port(self.port, process=self.process)
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop(self.process, sig)


class Chromium:
    """Headless Chromium showing ``url``, driven through its DevTools protocol (a syncws client).

    :meth:`evaluate` runs JavaScript in the page. Stopped by its PID, its
    profile (a temporary directory) removed.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        binary = find_program("chromium", "chromium-browser", "google-chrome")
        self.profile = tempfile.mkdtemp(prefix="syncws-chromium-")
        self.process = subprocess.Popen(
            [
                binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={self.profile}", "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0", url,
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.cdp: Any = None
        self.requests = 0
        try:
            self._attach()
        except BaseException:
            self.stop()
            raise

    def _attach(self) -> None:
        import syncws

        assert self.process.stderr is not None
        devtools = None
        for line in self.process.stderr:
            if "DevTools listening on" in line:
                devtools = line.split()[-1]
                break
        assert devtools, "chromium didn't start its DevTools endpoint"
        port = devtools.split("/")[2].split(":")[1]
        threading.Thread(target=self.process.stderr.read, daemon=True).start()  # keep the pipe drained
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=START_TIMEOUT) as answer:
            pages = json.load(answer)
        [page] = [p for p in pages if p["type"] == "page" and p["url"].startswith(self.url.partition("?")[0])]
        self.cdp = syncws.connect(page["webSocketDebuggerUrl"], max_size=None)

    def evaluate(self, expression: str, timeout: float = 60) -> Any:
        """The value of ``expression`` in the page (a promise is awaited); JSON-like values only.

        The first evaluation may land in the blank page the browser starts
        with, destroyed when ours commits: it is evaluated again then.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.requests += 1
            request_id = self.requests
            self.cdp.send(json.dumps({"id": request_id, "method": "Runtime.evaluate", "params": {
                "expression": expression, "awaitPromise": True, "returnByValue": True,
                "timeout": int(timeout * 1000)}}))
            answer = json.loads(self.cdp.recv(timeout=max(0.0, deadline - time.monotonic())))
            while answer.get("id") != request_id:  # events
                answer = json.loads(self.cdp.recv(timeout=max(0.0, deadline - time.monotonic())))
            if "destroyed" not in answer.get("error", {}).get("message", ""):
                break
        assert "result" in answer and "exceptionDetails" not in answer["result"], answer
        return answer["result"]["result"].get("value")

    def wait_for(self, condition: str, timeout: float = 30) -> Any:
        """Wait until the JavaScript ``condition`` is truthy in the page; its value."""
        return self.evaluate(
            f"new Promise(resolve => {{ const check = () => {{ const value = ({condition});"
            f" value ? resolve(value) : setTimeout(check, 50); }}; check(); }})",
            timeout,
        )

    def stop(self) -> None:
        if self.cdp is not None:
            self.cdp.close()
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
