"""The addresses a server listens on, and who else holds its port.

Theory of operation
-------------------
:func:`listening_sockets` binds what :func:`~syncws.serve` listens on: one
dual-stack socket for every interface (``host`` ``None`` or empty; IPv4
where the system has no dual stack), or every address a name resolves to,
all on one port. :func:`bind` binds one address, listening or not.

**Sharing a port.** With ``SO_REUSEPORT`` (Linux), several sockets of one
user listen on one address and the kernel spreads new connections over
them: the workers of ``python -m syncws serve --processes`` share a port so.
A second server that sets the option (another syncws, nginx's ``listen ...
reuseport``, uvicorn, anything) joins them the same way, without an error,
and takes a share of their clients: the kernel can't tell a sibling from a
stranger. So whoever starts a group checks for strangers, twice:

* :func:`reserve`, before any member starts, binds each address *without*
  ``SO_REUSEPORT``, which fails with ``EADDRINUSE`` when any socket listens
  there, with the option or without; only then is the option set on the
  bound socket, and the members can join (Linux looks at the options of the
  sockets already bound when a new one binds, so an option set after the
  bind counts). The reservation never listens: it takes no connection, and
  keeps the port while members restart.
* Two reservations don't exclude each other: sockets that are bound and
  not listening share an address under ``SO_REUSEADDR`` (which a server
  needs, or a restart fails while its old connections are in
  ``TIME_WAIT``). Two groups started at the same moment would both pass,
  and their members would share. Once its members listen, the group's
  founder calls :func:`strangers`, which lists the sockets listening on
  the port (``/proc/net/tcp``) that no member holds.

A server that binds with ``SO_REUSEPORT`` later still joins; a syncws one
refuses at its own start, others can't be stopped by the kernel's rules.
:func:`serve(..., reuse_port=True) <syncws.serve>` alone joins whatever
listens with the option: it is how a group's members join.

When an address is taken, :func:`bind` and :func:`reserve` say by whom
(:func:`holders`, Linux): ``Address already in use: served by another
process (pid 4242, nginx)``.

**Unix sockets.** :func:`unix_listener` listens on a path for
:func:`~syncws.unix_serve`: it replaces a socket file that a server which is
gone left there, and refuses anything else (a file, a directory, a link, a
socket that a server still listens on). :func:`remove_socket_file` removes
the server's file when it closes, unless another took its place.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import sys
from typing import Any, Collection, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple

__all__ = [
    "Holder", "SocketFile", "address_in_use", "bind", "holders", "listening_sockets", "remove_socket_file", "reserve",
    "strangers", "unix_listener",
]


class Holder(NamedTuple):
    """A process with a socket listening on a port.

    Attributes:
        pid: its process id.
        name: its command name (``/proc/<pid>/comm``), ``?`` when unreadable.
    """

    pid: int
    name: str

    def __str__(self) -> str:
        return f"pid {self.pid}, {self.name}"


def _addresses(host: Optional[str], port: int) -> List[Tuple[int, Any, bool]]:
    """``(family, address, dual-stack)`` of each address to bind for ``host``."""
    if host is None or host == "":
        if socket.has_dualstack_ipv6():
            return [(socket.AF_INET6, ("", port), True)]
        return [(socket.AF_INET, ("", port), False)]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return [(family, address, False) for family, address in dict.fromkeys((i[0], i[4]) for i in infos)]


def bind(
    family: int, address: Any, *, dualstack: bool = False, reuse_port: bool = False, backlog: Optional[int] = None
) -> socket.socket:
    """Bind a TCP socket, as :func:`socket.create_server` does, listening or not.

    Args:
        family: ``AF_INET`` or ``AF_INET6``.
        address: the address to bind.
        dualstack: an IPv6 socket that takes IPv4 too.
        reuse_port: set ``SO_REUSEPORT`` before binding.
        backlog: listen with this backlog; ``None`` leaves it bound only.

    Returns:
        The socket.

    Raises:
        OSError: the address can't be bound. Taken, it is ``EADDRINUSE``,
            saying by whom when the system tells (see :func:`holders`).
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Binds despite the TIME_WAIT connections of an earlier server
        # (Windows' SO_REUSEADDR would let another listener in: not there).
        if os.name == "posix" and sys.platform != "cygwin":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dualstack else 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise address_in_use(address[1]) from None
        if backlog is not None:
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_all(host: Optional[str], port: int, **options: Any) -> List[socket.socket]:
    sockets: List[socket.socket] = []
    try:
        for family, address, dualstack in _addresses(host, port):
            if port == 0 and sockets:
                # Keep one port for all addresses, as the first bind chose it.
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sockets.append(bind(family, address, dualstack=dualstack, **options))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def listening_sockets(host: Optional[str], port: int, backlog: int, *, reuse_port: bool = False) -> List[socket.socket]:
    """Listen on every address ``host`` resolves to (all interfaces for ``None``).

    Args:
        host: the interface, a name, or ``None``.
        port: the port; 0 picks one, the same for every address.
        backlog: the listen backlog.
        reuse_port: set ``SO_REUSEPORT``, so that other processes of this
            user may listen on the same addresses.

    Returns:
        The listening sockets.

    Raises:
        OSError: an address can't be bound (see :func:`bind`).
    """
    return _bind_all(host, port, backlog=backlog, reuse_port=reuse_port)


def reserve(host: Optional[str], port: int) -> List[socket.socket]:
    """Reserve the addresses :func:`listening_sockets` binds, for a group of processes.

    Each address is bound without ``SO_REUSEPORT``, so that the bind fails
    when anything listens there, then the option is set, so that the group's
    members can join with ``reuse_port=True``. The sockets never listen;
    close them when the group stops.

    Args:
        host: as for :func:`listening_sockets`.
        port: the port; 0 picks one.

    Returns:
        The bound sockets.

    Raises:
        OSError: an address is taken (``EADDRINUSE``, saying by whom) or
            can't be bound, or the system has no ``SO_REUSEPORT``.
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("SO_REUSEPORT isn't available on this system: several processes can't share a port")
    sockets = _bind_all(host, port)
    for sock in sockets:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sockets


# -- who holds a port (Linux: /proc) ------------------------------------------------

# The TCP state of a listening socket in /proc/net/tcp.
_LISTEN = "0A"


def _listeners(port: int) -> Iterator[Tuple[bytes, str]]:
    """``(packed IP address, socket inode)`` of each socket listening on ``port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)  # the column names
                rows = [line.split() for line in lines]
        except (OSError, StopIteration):
            continue
        for row in rows:
            local, state, inode = row[1], row[3], row[9]
            address, _, hex_port = local.partition(":")
            if state == _LISTEN and int(hex_port, 16) == port:
                yield _unpack(address), inode


def _unpack(address: str) -> bytes:
    """An address of /proc/net/tcp, packed: 32-bit words in the host's byte order."""
    words = [bytes.fromhex(address[i:i + 8]) for i in range(0, len(address), 8)]
    return b"".join(word[::-1] if sys.byteorder == "little" else word for word in words)


def _packed(sock: socket.socket) -> bytes:
    return socket.inet_pton(sock.family, sock.getsockname()[0].partition("%")[0])


# IPv4 addresses as IPv6 ones (::ffff:a.b.c.d), and the two wildcards.
_V4_MAPPED = bytes(10) + b"\xff\xff"
_ANY_V4 = _V4_MAPPED + bytes(4)
_ANY_V6 = bytes(16)


def _overlap(first: bytes, second: bytes) -> bool:
    """Whether sockets bound to these two IP addresses take some of the same connections.

    An IPv6 wildcard counts as dual-stack: /proc doesn't say.
    """
    first, second = (_V4_MAPPED + a if len(a) == 4 else a for a in (first, second))
    if first == second or _ANY_V6 in (first, second):
        return True
    if _ANY_V4 in (first, second):
        return first.startswith(_V4_MAPPED) and second.startswith(_V4_MAPPED)
    return False


def _links(pid: int) -> Set[str]:
    """What the file descriptors of ``pid`` point to (``socket:[inode]``...)."""
    links = set()
    for fd in _listdir(f"/proc/{pid}/fd"):
        try:
            links.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed meanwhile
            continue
    return links


def _listdir(path: str) -> List[str]:
    try:
        return os.listdir(path)
    except OSError:  # gone, or another user's
        return []


def _holders(inodes: Collection[str]) -> List[Holder]:
    """The processes holding these socket inodes, of those this user can read."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    pids = sorted(int(entry) for entry in _listdir("/proc") if entry.isdigit())
    return [_holder(pid) for pid in pids if not wanted.isdisjoint(_links(pid))]


def _holder(pid: int) -> Holder:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return Holder(pid, comm.read().strip() or "?")
    except OSError:
        return Holder(pid, "?")


def holders(port: int) -> List[Holder]:
    """The processes with a socket listening on ``port``, on any address.

    Reads ``/proc`` (Linux); a process of another user can't be named
    there, and elsewhere nobody can.

    Args:
        port: the TCP port.

    Returns:
        The processes found, by pid.
    """
    inodes = {inode for _, inode in _listeners(port)}
    return _holders(inodes) if inodes else []


def strangers(sockets: Sequence[socket.socket], members: Collection[int]) -> List[Holder]:
    """The processes other than ``members`` that listen where ``sockets`` are bound.

    Args:
        sockets: a group's reservation (:func:`reserve`).
        members: the pids of the group's processes.

    Returns:
        The other processes, by pid (``Holder(0, "?")`` for sockets whose
        process this user can't see). Empty where ``/proc/net/tcp``
        doesn't exist.
    """
    if not sockets:
        return []
    port = sockets[0].getsockname()[1]
    ours = [_packed(sock) for sock in sockets]
    inodes = {inode for address, inode in _listeners(port) if any(_overlap(address, a) for a in ours)}
    for pid in members:
        inodes -= {link[len("socket:["):-1] for link in _links(pid) if link.startswith("socket:[")}
    if not inodes:
        return []
    return _holders(inodes) or [Holder(0, "?")]


def address_in_use(port: int, found: Optional[Sequence[Holder]] = None) -> OSError:
    """The ``EADDRINUSE`` error for ``port``, naming who listens there if known.

    Args:
        port: the port.
        found: the processes in the way; by default, :func:`holders`.

    Returns:
        The error, to raise.
    """
    if found is None:
        found = holders(port)
    text = os.strerror(errno.EADDRINUSE)
    if not found:
        return OSError(errno.EADDRINUSE, f"{text}: another socket is bound to port {port}")
    listed = "; ".join(map(str, found[:3])) + ("; ..." if len(found) > 3 else "")
    return OSError(errno.EADDRINUSE, f"{text}: served by another process ({listed})")


# -- Unix sockets --------------------------------------------------------------


class SocketFile(NamedTuple):
    """The file of a Unix socket a server bound, to remove when it closes.

    Attributes:
        path: its path.
        identity: its ``(device, inode)``, to tell it from a file that took
            its place since.
    """

    path: str
    identity: Tuple[int, int]


def unix_listener(path: str, backlog: int) -> Tuple[socket.socket, Optional[SocketFile]]:
    """Listen on a Unix socket at ``path``.

    A socket file left there by a server that is gone is replaced; anything
    else is refused: a file, a directory, a symbolic link, or a socket that a
    server still listens on.

    Args:
        path: the socket's path; one starting with ``"\\0"`` is in Linux's
            abstract namespace, where there is no file.
        backlog: the listen backlog.

    Returns:
        The listening socket, and its file (``None`` in the abstract
        namespace), for :func:`remove_socket_file`.

    Raises:
        FileExistsError: something other than a socket is at ``path``.
        OSError: a server is listening on ``path`` (``EADDRINUSE``), or it
            can't be bound.
    """
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except BaseException:
        sock.close()
        raise
    socket_file = None
    try:
        if not path.startswith("\0"):
            status = os.lstat(path)
            socket_file = SocketFile(path, (status.st_dev, status.st_ino))
        sock.listen(backlog)
    except BaseException:
        if socket_file is not None:
            remove_socket_file(socket_file, logging.getLogger("syncws.server"))
        sock.close()
        raise
    return sock, socket_file


def _remove_stale_socket(path: str) -> None:
    """Remove the socket file a server that is gone left at ``path``.

    Anything else there is refused: a file, a directory, a symbolic link, or
    a socket a server still listens on (the connection attempt tells, as
    other servers that reuse a socket path do).

    Raises:
        FileExistsError: ``path`` is not a socket.
        OSError: a server listens on it (``EADDRINUSE``), or whether one does
            can't be told.
    """
    if path.startswith("\0"):
        return  # Linux's abstract namespace: no file
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(
            errno.EEXIST, "can't listen on this path: it exists and is not a socket (remove it or choose another path)",
            path,
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        # Without blocking: a server whose backlog is full answers EAGAIN.
        probe.setblocking(False)
        error = probe.connect_ex(path)
    if error == errno.ECONNREFUSED:  # nobody listens: stale
        os.unlink(path)
    elif error in (0, errno.EAGAIN, errno.EWOULDBLOCK):
        raise OSError(errno.EADDRINUSE, "can't listen on this path: a server is listening on it", path)
    elif error != errno.ENOENT:  # gone meanwhile: free
        raise OSError(error, f"can't tell whether a server listens on this path: {os.strerror(error)}", path)


def remove_socket_file(socket_file: SocketFile, logger: logging.Logger) -> None:
    """Remove a socket file :func:`unix_listener` made, if it is still there.

    A file that took its place since (a newer server's socket, anything
    else) stays. Call it while the listening socket still listens: a newer
    :func:`unix_listener` refuses a live socket's path, so the file can't
    change between the check and the removal.

    Args:
        socket_file: what :func:`unix_listener` returned.
        logger: where to warn when the file can't be removed.
    """
    path = socket_file.path
    try:
        status = os.lstat(path)
        if (status.st_dev, status.st_ino) == socket_file.identity and stat.S_ISSOCK(status.st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass  # removed by someone else: nothing of ours is left
    except OSError as exc:
        logger.warning("could not remove the socket file %s: %s", path, exc.strerror or exc)
