"""What a server did, counted, and in Prometheus' text format.

::

    server = syncws.serve(handler, "", 8765)
    server.metrics()            # a ServerMetrics: connections, messages, bytes...
    syncws.metrics.render()     # the Prometheus text of this process

Theory of operation
-------------------
Nothing is counted per message here. A connection already counts its own
messages and bytes (:attr:`~syncws.WebSocketCommonProtocol.stats`, kept by
its core as it parses and serializes); the server's
:class:`ConnectionCounters` only learn that a connection opened and that it
ended, once each, under their lock:

* while a connection is open, its counts are read when a snapshot is taken
  (:meth:`ConnectionCounters.snapshot`), without a lock: each is an integer
  that only grows;
* when it ends (the last act of its reader thread), its counts and its close
  code are added to the server's totals, and it leaves the set of open
  connections, in one step under the lock. A snapshot takes the totals and
  that set in one step too, so no connection is counted twice or missed,
  and every counter only grows from one snapshot to the next.

:class:`ConnectionCounters` exist per :class:`~syncws.WebSocketServer`
(:meth:`~syncws.WebSocketServer.metrics`), and once per process for the
connections :func:`syncws.wsgi.accept` opens, which belong to no
:class:`~syncws.WebSocketServer`. :func:`collect` adds up every one of them,
and :func:`render` writes what :func:`collect` returns, with the counters of
every :class:`~syncws.fanout.Fanout` of the process, in Prometheus' text
exposition format (version 0.0.4), without any dependency::

    # a WSGI route (Flask)
    @app.route("/metrics")
    def metrics():
        return syncws.metrics.render(), {"Content-Type": syncws.metrics.CONTENT_TYPE}

The names follow Prometheus' conventions: a ``syncws_`` prefix, units in the
name, ``_total`` on counters, and labels for what a count is broken down by
(``code``, ``status``)::

    syncws_connections_open 3
    syncws_connections_opened_total 120
    syncws_connections_closed_total{code="1000"} 110
    syncws_connections_closed_total{code="1006"} 7
    syncws_handshakes_refused_total{status="403"} 2
    syncws_received_messages_total 5120
    syncws_sent_messages_total 60110
    syncws_received_bytes_total 1048576
    syncws_sent_bytes_total 9437184
    syncws_fanout_published_total 5120
    syncws_fanout_delivered_total 60110
    syncws_fanout_pending_bytes 0
    syncws_fanout_oldest_pending_seconds 0
    ...
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
import threading
import time
import weakref
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

__all__ = [
    "CONTENT_TYPE",
    "ConnectionCounters",
    "Family",
    "GroupDirectory",
    "GroupMetrics",
    "ServerMetrics",
    "collect",
    "exposition",
    "families",
    "fanout_stats",
    "render",
    "track",
    "track_fanout",
    "wsgi_counters",
]

logger = logging.getLogger("syncws.metrics")

#: The ``Content-Type`` of :func:`render`'s text.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# A connection that ended without a close frame.
_NO_CLOSE_FRAME = 1006


class ServerMetrics(NamedTuple):
    """What a server's connections did, as of a snapshot.

    Attributes:
        connections_open: connections open now (gauge).
        connections_opened: connections that completed their opening
            handshake.
        connections_closed: connections that ended, by close code: the
            client's close frame's, else the server's (a connection it
            failed: 1009, 1011...), else 1006 (none either way).
        handshakes_refused: opening handshakes answered with an HTTP error
            instead of 101, by status (400, 403, 503...).
        messages_received: messages received, by every connection.
        messages_sent: messages sent.
        bytes_received: WebSocket bytes received, frame headers included.
        bytes_sent: WebSocket bytes sent.
    """

    connections_open: int = 0
    connections_opened: int = 0
    connections_closed: Mapping[int, int] = {}
    handshakes_refused: Mapping[int, int] = {}
    messages_received: int = 0
    messages_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0

    def __add__(self, other: Any) -> "ServerMetrics":
        """The sum of two snapshots (every field, code by code)."""
        if not isinstance(other, ServerMetrics):
            return NotImplemented
        pairs: Iterable[Tuple[Any, Any]] = zip(self, other)
        total: List[Any] = [
            _add_counts(mine, theirs) if isinstance(mine, Mapping) else mine + theirs for mine, theirs in pairs
        ]
        return ServerMetrics(*total)

    def as_dict(self) -> Dict[str, Any]:
        """The snapshot as JSON-ready data (codes and statuses as strings)."""
        return {
            name: {str(key): count for key, count in value.items()} if isinstance(value, Mapping) else value
            for name, value in self._asdict().items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ServerMetrics":
        """Read what :meth:`as_dict` wrote.

        Args:
            data: the dict.

        Returns:
            The snapshot.
        """
        fields: Dict[str, Any] = {
            name: {int(key): int(count) for key, count in value.items()} if isinstance(value, Mapping) else int(value)
            for name, value in data.items() if name in cls._fields
        }
        return cls(**fields)


def _add_counts(first: Mapping[int, int], second: Mapping[int, int]) -> Dict[int, int]:
    total = dict(first)
    for key, count in second.items():
        total[key] = total.get(key, 0) + count
    return total


class ConnectionCounters:
    """Counts the connections of a server as they open and end.

    Each method is called once per connection (or per refused handshake),
    never per message, and is safe from any thread.
    """

    def __init__(self) -> None:
        # Guards every attribute below.
        self._lock = threading.Lock()
        # Open connections: their own counts are read at snapshot time.
        self._open: Set[Any] = set()
        self._opened = 0
        self._closed: Dict[int, int] = {}
        self._refused: Dict[int, int] = {}
        # Messages and bytes, each way, of the connections that ended.
        self._messages_received = self._messages_sent = self._bytes_received = self._bytes_sent = 0

    def opened(self, connection: Any) -> None:
        """A connection completed its opening handshake.

        Args:
            connection: the connection; :meth:`ended` must follow.
        """
        with self._lock:
            self._opened += 1
            self._open.add(connection)

    def ended(self, connection: Any) -> None:
        """A connection that :meth:`opened` is closed: add up what it did.

        Args:
            connection: the connection.
        """
        stats = connection.stats
        code = _close_code(connection)
        with self._lock:
            self._open.discard(connection)
            self._closed[code] = self._closed.get(code, 0) + 1
            self._messages_received += stats.messages_in
            self._messages_sent += stats.messages_out
            self._bytes_received += stats.bytes_in
            self._bytes_sent += stats.bytes_out

    def refused(self, status: int) -> None:
        """An opening handshake was answered with HTTP ``status`` (4xx or 5xx).

        Args:
            status: the status.
        """
        number = int(status)  # an HTTPStatus prints as its name before Python 3.11
        with self._lock:
            self._refused[number] = self._refused.get(number, 0) + 1

    def snapshot(self) -> ServerMetrics:
        """The counts as of now.

        Returns:
            A :class:`ServerMetrics`.
        """
        with self._lock:
            open_connections = list(self._open)
            snapshot = ServerMetrics(
                connections_open=len(open_connections),
                connections_opened=self._opened,
                connections_closed=dict(self._closed),
                handshakes_refused=dict(self._refused),
                messages_received=self._messages_received,
                messages_sent=self._messages_sent,
                bytes_received=self._bytes_received,
                bytes_sent=self._bytes_sent,
            )
        if not open_connections:
            return snapshot
        live = [connection.stats for connection in open_connections]
        return snapshot._replace(
            messages_received=snapshot.messages_received + sum(stats.messages_in for stats in live),
            messages_sent=snapshot.messages_sent + sum(stats.messages_out for stats in live),
            bytes_received=snapshot.bytes_received + sum(stats.bytes_in for stats in live),
            bytes_sent=snapshot.bytes_sent + sum(stats.bytes_out for stats in live),
        )


def _close_code(connection: Any) -> int:
    """The code a connection ended with: its close code (the peer's close
    frame's, or 1006 when either side's frame is missing), except that one
    we closed or failed whose frame went out counts as its code (1009,
    1011...: we don't wait for the peer's answer)."""
    sent = connection.close_sent
    if connection.close_rcvd is None and sent is not None:
        return int(sent[0])
    return int(connection.close_code or _NO_CLOSE_FRAME)


# Every ConnectionCounters alive in the process (servers' and WSGI's), for
# collect(); and every fan-out, for render().
_counters: "weakref.WeakSet[ConnectionCounters]" = weakref.WeakSet()
_fanouts: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()
_fanout_order = itertools.count()


def track(counters: ConnectionCounters) -> ConnectionCounters:
    """Count ``counters`` in :func:`collect` for as long as they exist.

    Args:
        counters: a server's counters.

    Returns:
        ``counters``.
    """
    _counters.add(counters)
    return counters


#: The counters of the connections :func:`syncws.wsgi.accept` opens in this
#: process (they belong to no :class:`~syncws.WebSocketServer`), and of the
#: upgrades refused under WSGI: by :func:`~syncws.wsgi.accept`, or by the
#: application (a 401, a 404) behind :func:`~syncws.wsgi.close_refused_upgrades`.
wsgi_counters = track(ConnectionCounters())


def collect() -> ServerMetrics:
    """Add up the connections of every server in this process, WSGI's included.

    Returns:
        The sum of the snapshots of every :class:`ConnectionCounters`.
    """
    return sum((counters.snapshot() for counters in list(_counters)), ServerMetrics())


def track_fanout(fanout: Any) -> None:
    """Include a fan-out's ``stats`` in :func:`render` while it exists.

    Called by every :class:`~syncws.fanout.Fanout` as it is made.

    Args:
        fanout: anything with a ``stats`` dataclass.
    """
    _fanouts[next(_fanout_order)] = fanout


def fanout_stats() -> List[Any]:
    """The ``stats`` of every fan-out alive in this process, oldest first.

    Returns:
        Their :class:`~syncws.fanout.FanoutStats`.
    """
    return [fanout.stats for _, fanout in sorted(_fanouts.items())]


# -- the text exposition format -------------------------------------------------


class Family(NamedTuple):
    """One metric: its name, type (``counter``, ``gauge``), help, and samples: ``(labels, value)``."""

    name: str
    type: str
    help: str
    samples: List[Tuple[Tuple[Tuple[str, str], ...], float]]


# name, type, help, and the ServerMetrics field with its label, if broken down.
_SERVER_FAMILIES: Sequence[Tuple[str, str, str, str, Optional[str]]] = (
    ("syncws_connections_open", "gauge", "WebSocket connections open.", "connections_open", None),
    ("syncws_connections_opened_total", "counter", "WebSocket connections that completed the opening handshake.",
     "connections_opened", None),
    ("syncws_connections_closed_total", "counter",
     "WebSocket connections closed, by close code (the client's, else the server's, else 1006).",
     "connections_closed", "code"),
    ("syncws_handshakes_refused_total", "counter", "Opening handshakes answered with an HTTP error, by status.",
     "handshakes_refused", "status"),
    ("syncws_received_messages_total", "counter", "WebSocket messages received.", "messages_received", None),
    ("syncws_sent_messages_total", "counter", "WebSocket messages sent.", "messages_sent", None),
    ("syncws_received_bytes_total", "counter", "WebSocket bytes received, frame headers included.",
     "bytes_received", None),
    ("syncws_sent_bytes_total", "counter", "WebSocket bytes sent, frame headers included.", "bytes_sent", None),
)


def _server_families(metrics: ServerMetrics, labels: Tuple[Tuple[str, str], ...]) -> List[Family]:
    families = []
    for name, kind, text, field, label in _SERVER_FAMILIES:
        value = getattr(metrics, field)
        if label is None:
            samples = [(labels, float(value))]
        else:
            samples = [(labels + ((label, str(key)),), float(count)) for key, count in sorted(value.items())]
        families.append(Family(name, kind, text, samples))
    return families


def _fanout_families(stats: Any, labels: Tuple[Tuple[str, str], ...]) -> List[Family]:
    """Families from a fan-out's stats dataclass.

    A field is a counter unless its ``metadata["kind"]`` says ``"gauge"``.
    Its metric is named as Prometheus names them: the field's name, then
    its ``metadata["unit"]`` (a base unit, plural: ``seconds``,
    ``bytes``) unless the name ends with it already, then ``_total`` for a
    counter (``oldest_pending`` is ``syncws_fanout_oldest_pending_seconds``).
    """
    described = _attribute_docs(type(stats))
    families = []
    for field in dataclasses.fields(stats):
        kind = field.metadata.get("kind", "counter")
        unit = field.metadata.get("unit")
        name = f"syncws_fanout_{field.name}"
        if unit is not None and not name.endswith(f"_{unit}"):
            name += f"_{unit}"
        if kind == "counter":
            name += "_total"
        text = described.get(field.name, field.name.replace("_", " "))
        # "(gauge)" tells a Python reader what TYPE tells Prometheus.
        text = re.sub(r" \(gauge\)|(?<=\()gauge; ", "", text)
        families.append(Family(name, kind, f"Fan-out: {text}", [(labels, float(getattr(stats, field.name)))]))
    return families


def _attribute_docs(cls: type) -> Dict[str, str]:
    """The ``Attributes:`` sections of a class's docstring and its bases': name -> text, on one line.

    A subclass documents the fields it adds; those it inherits keep their
    base's text.
    """
    docs: Dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        section = (klass.__dict__.get("__doc__") or "").partition("Attributes:")[2]
        for name, text in re.findall(r"^\s{4,8}(\w+): (.*(?:\n\s{10,}.*)*)", section, re.MULTILINE):
            docs[name] = " ".join(text.split())
    return docs


def _label_text(labels: Tuple[Tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    escaped = (value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for _, value in labels)
    return "{" + ",".join(f'{name}="{value}"' for (name, _), value in zip(labels, escaped)) + "}"


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def exposition(families: Iterable[Family]) -> str:
    """Write metric families in the text format, each name once, its samples together.

    Args:
        families: from :func:`families`, of one process or of several.

    Returns:
        The text.
    """
    merged: Dict[str, Family] = {}
    for family in families:
        if family.name in merged:
            merged[family.name].samples.extend(family.samples)
        else:
            merged[family.name] = Family(family.name, family.type, family.help, list(family.samples))
    lines = []
    for family in merged.values():
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.type}")
        lines.extend(f"{family.name}{_label_text(labels)} {_number(value)}" for labels, value in family.samples)
    return "\n".join(lines) + "\n"


def families(
    metrics: ServerMetrics, fanouts: Sequence[Any] = (), labels: Mapping[str, str] = {}
) -> List[Family]:
    """The metric families of a server's snapshot and fan-outs' stats.

    Args:
        metrics: the server's.
        fanouts: fan-outs' stats; with more than one, each gets a label
            ``fanout`` with its position.
        labels: labels for every sample (``worker``).

    Returns:
        The families, for :func:`exposition`.
    """
    base = tuple(labels.items())
    result = _server_families(metrics, base)
    for index, stats in enumerate(fanouts):
        result.extend(_fanout_families(stats, base + ((("fanout", str(index)),) if len(fanouts) > 1 else ())))
    return result


def render(metrics: Optional[ServerMetrics] = None, fanouts: Optional[Sequence[Any]] = None) -> str:
    """Prometheus' text exposition format of a server's metrics and fan-outs.

    Args:
        metrics: a snapshot; by default :func:`collect`: every server of this
            process, WSGI connections included.
        fanouts: fan-outs' stats (:attr:`~syncws.fanout.Fanout.stats`); by
            default every fan-out of this process.

    Returns:
        The text, to serve with :data:`CONTENT_TYPE`.
    """
    return exposition(families(
        collect() if metrics is None else metrics, fanout_stats() if fanouts is None else fanouts,
    ))


class GroupMetrics:
    """The metrics of a group of processes sharing a port, whichever one is asked.

    The workers of ``python -m syncws serve --processes`` share one port, so
    a scrape reaches any one of them. Each writes its own families (from
    :func:`collect` and :func:`fanout_stats`, every sample labelled
    ``worker="<index>"``) to ``<directory>/<index>.json``, every
    ``interval`` seconds from a thread of its own (:meth:`start`) and at each
    scrape; :meth:`render` reads the files of every worker alive. A worker
    restarted under the same index starts its counters from zero, which
    Prometheus reads as a counter reset.

    Args:
        directory: a directory the group shares (the supervisor makes it).
        index: this process's place in the group.
        interval: seconds between two writes.
    """

    def __init__(self, directory: str, index: int, interval: float = 1.0) -> None:
        self.directory = directory
        self.index = index
        self.interval = interval
        # Held by publish(), which the publishing thread and every scrape
        # (connection threads) call: one at a time, they don't write the
        # same temporary file at once, and the file's snapshots follow
        # each other in order.
        self._publishing = threading.Lock()

    def start(self) -> None:
        """Publish every ``interval`` seconds, from a daemon thread, for the life of the process."""

        def publish_forever() -> None:
            while True:
                try:
                    self.publish()
                except OSError as exc:  # the directory went away: the group is stopping
                    logger.debug("metrics of worker %d not written: %s", self.index, exc)
                time.sleep(self.interval)

        threading.Thread(target=publish_forever, name="syncws-metrics", daemon=True).start()

    def publish(self) -> None:
        """Write this process's families to its file (atomically: written aside, then renamed).

        Safe from any thread: one write at a time.
        """
        import json  # only in the workers of a group: not every server's memory
        path = _published(self.directory, self.index)
        temporary = f"{path}.{os.getpid()}.tmp"
        with self._publishing:
            labelled = families(collect(), fanout_stats(), {"worker": str(self.index)})
            data = {"pid": os.getpid(), "families": [[f.name, f.type, f.help, f.samples] for f in labelled]}
            with open(temporary, "w") as file:
                json.dump(data, file)
            os.replace(temporary, path)

    def render(self) -> str:
        """Prometheus' text for the whole group, this process's counts fresh.

        Returns:
            The text, every sample labelled with its worker.
        """
        import json

        try:
            self.publish()
            names = sorted(os.listdir(self.directory))
        except OSError as exc:  # the directory went away: this worker's own, at least
            logger.warning("metrics of the other workers unavailable: %s", exc)
            return exposition(families(collect(), fanout_stats(), {"worker": str(self.index)}))
        found: List[Family] = []
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.directory, name)) as file:
                    data = json.load(file)
            except (OSError, ValueError):  # being replaced, or gone
                continue
            if not _alive(data["pid"]):
                continue  # a worker being restarted: its successor starts from zero
            for name_, kind, text, samples in data["families"]:
                found.append(Family(name_, kind, text, [(tuple(map(tuple, labels)), value) for labels, value in samples]))
        return exposition(found)


def _published(directory: str, index: int) -> str:
    """The file where the worker ``index`` of a group publishes its families."""
    return os.path.join(directory, f"{index}.json")


class GroupDirectory:
    """Where a group's workers write their metrics (:class:`GroupMetrics`): made, held and removed by their supervisor.

    Made in the system's temporary directory (``TMPDIR``), named
    ``syncws-metrics-*``. Its owner holds a lock on it (``flock``) as long
    as the owner lives, and the kernel drops the lock when the owner ends,
    however it ends. :meth:`remove` deletes it when the group stops; a
    supervisor killed with ``SIGKILL`` can't, so a new one removes first
    every such directory that no process holds (:meth:`sweep`). A worker
    killed while writing its file leaves a temporary file there:
    :meth:`forget` removes a dead worker's files before it is restarted.
    POSIX only, as groups are.

    Raises:
        OSError: the directory can't be made.
    """

    PREFIX = "syncws-metrics-"

    def __init__(self) -> None:
        import fcntl  # POSIX
        import tempfile

        while True:
            path = tempfile.mkdtemp(prefix=self.PREFIX)
            lock = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(lock, fcntl.LOCK_EX)  # waits only while another's sweep() looks at it
            try:
                kept = os.path.samestat(os.fstat(lock), os.stat(path))
            except FileNotFoundError:
                kept = False
            if kept:
                break
            os.close(lock)  # swept between its making and its lock: make another
        #: The directory's path.
        self.path = path
        # The descriptor whose lock says the directory is in use; not
        # inherited by the workers (descriptors aren't, by default).
        self._lock: Optional[int] = lock

    @classmethod
    def sweep(cls) -> None:
        """Remove the directories of this user's groups whose supervisor is gone."""
        import fcntl
        import shutil
        import tempfile

        parent = tempfile.gettempdir()
        try:
            entries = list(os.scandir(parent))
        except OSError as exc:
            logger.debug("stale metrics directories not looked for in %s: %s", parent, exc)
            return
        for entry in entries:
            if not entry.name.startswith(cls.PREFIX):
                continue
            try:
                if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                    continue
                lock = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:  # gone meanwhile
                continue
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its supervisor runs
                os.close(lock)
                continue
            logger.info("removing %s, left by a supervisor that was killed", entry.path)
            shutil.rmtree(entry.path, ignore_errors=True)
            os.close(lock)

    def forget(self, index: int) -> None:
        """Remove the files of the worker ``index``, which ended.

        Args:
            index: the worker's place in the group.
        """
        import glob

        published = _published(self.path, index)
        for path in [published, *glob.glob(f"{glob.escape(published)}.*.tmp")]:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass

    def remove(self) -> None:
        """Delete the directory and everything in it; idempotent."""
        import shutil

        if self._lock is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock)  # after the removal: no sweep() takes it half removed
        self._lock = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
