"""Real services for the scaling tests: redis-server, nginx, chat servers.

Each runs as a child process on 127.0.0.1 and a free port, with its files in
a temporary directory, and is stopped by its PID (never by name). Starting
waits until the service answers, within a deadline.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
CHAT_SERVER = REPO / "examples" / "chat" / "server.py"
NGINX_CONF = REPO / "examples" / "chat" / "nginx.conf"
HOST = "127.0.0.1"
START_TIMEOUT = 15.0


def ip(*args: str) -> None:
    """Run ``ip ARGS`` (iproute2), failing on an error."""
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=START_TIMEOUT)


def netns_unavailable() -> str:
    """Why network namespaces can't be made here, or "" when they can."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
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
    """``redis-server`` without persistence on a free port."""

    def __init__(self, directory: Path) -> None:
        self.binary = shutil.which("redis-server")
        self.directory = directory
        self.port = free_port()
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        assert self.binary is not None
        log = open(self.directory / "redis.log", "ab")
        self.process = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
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


class Nginx:
    """nginx in the foreground, with examples/chat/nginx.conf pointed at ``upstreams``."""

    def __init__(self, directory: Path, upstreams: Sequence[int]) -> None:
        self.binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
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
        assert self.binary is not None
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
