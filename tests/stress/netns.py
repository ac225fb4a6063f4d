"""A peer in its own network namespace, that can vanish.

:func:`vanishing_peer` creates a network namespace joined to this one by a
veth pair on a private /30, and runs Python code in it. ``vanish()`` sets the
peer's end of the link down: from then on every packet between the two is
dropped, no FIN and no RST ever arrive, as when a client is unplugged or a
NAT forgets it. ``block_here()`` and ``lose_route()`` cut it off on this side
instead, so that nothing sent to the peer even leaves this host, as with a
firewall dropping everything or the route to it gone. Needs root and ``ip``
(iproute2): see ``services.need_network_namespaces()``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional

REPO = Path(__file__).resolve().parents[2]


def _ip(*args: str, namespace: Optional[str] = None) -> None:
    command = ["ip", *args] if namespace is None else ["ip", "netns", "exec", namespace, "ip", *args]
    subprocess.run(command, check=True, capture_output=True, timeout=10)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 that no interface of this namespace uses."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    while True:
        subnet = ipaddress.IPv4Network(f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.{4 * random.randint(0, 63)}/30")
        if f" {subnet[1]}/" not in used and f" {subnet[2]}/" not in used:
            return subnet


class Peer:
    """The namespace, its address and ours, and the processes run in it."""

    def __init__(self, namespace: str, local: str, remote: str, local_link: str, remote_link: str) -> None:
        self.namespace = namespace
        #: Our address on the link: bind servers here.
        self.local = local
        #: The peer's address.
        self.remote = remote
        self._local_link = local_link
        self._remote_link = remote_link
        self._processes: List[subprocess.Popen[str]] = []

    def run(self, code: str) -> "subprocess.Popen[str]":
        """Run ``python3 -c code`` in the namespace, this tree's syncws importable."""
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, sys.executable, "-c", code],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self._processes.append(process)
        return process

    def vanish(self) -> None:
        """Drop every packet from now on: the peer's link goes down."""
        _ip("link", "set", self._remote_link, "down", namespace=self.namespace)

    def block_here(self) -> None:
        """Refuse, on this host, every packet to the peer: a route that prohibits its address.

        Nothing sent to it leaves this host any more, as behind a local
        firewall that drops everything. Removed at the end.
        """
        _ip("route", "add", "prohibit", f"{self.remote}/32")

    def lose_route(self) -> None:
        """Make the peer unreachable from this host, as when the route to it is gone.

        (Deleting the link's route alone isn't that: packets would take the
        default route instead.) Removed at the end.
        """
        _ip("route", "add", "unreachable", f"{self.remote}/32")

    def _stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)


@contextlib.contextmanager
def vanishing_peer() -> Iterator[Peer]:
    """A namespace joined to ours by a veth pair; torn down at the end."""
    tag = f"{os.getpid() % 100000}{random.randint(0, 99)}"
    namespace = f"syncws-{tag}"
    local_link, remote_link = f"sw{tag}a", f"sw{tag}b"
    subnet = _free_subnet()
    local, remote = str(subnet[1]), str(subnet[2])
    _ip("netns", "add", namespace)
    peer = Peer(namespace, local, remote, local_link, remote_link)
    try:
        _ip("link", "add", local_link, "type", "veth", "peer", "name", remote_link)
        _ip("link", "set", remote_link, "netns", namespace)
        _ip("addr", "add", f"{local}/30", "dev", local_link)
        _ip("link", "set", local_link, "up")
        _ip("addr", "add", f"{remote}/30", "dev", remote_link, namespace=namespace)
        _ip("link", "set", remote_link, "up", namespace=namespace)
        _ip("link", "set", "lo", "up", namespace=namespace)
        yield peer
    finally:
        peer._stop()
        # Deleting the namespace deletes its end of the pair, and so both.
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", local_link], capture_output=True, timeout=10)
        for kind in ("prohibit", "unreachable"):
            subprocess.run(["ip", "route", "del", kind, f"{remote}/32"], capture_output=True, timeout=10)
