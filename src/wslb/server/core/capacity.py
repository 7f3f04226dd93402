"""Connection limits: per listener, per client address and per process (from the file-descriptor
limit), and warnings that are said once rather than once per refused connection.

HAProxy derives its global ``maxconn`` from ``ulimit -n`` so that every accepted connection can
still get the descriptor of its upstream connection; wslb does the same. A worker raises its
soft ``RLIMIT_NOFILE`` to the hard limit at start (as HAProxy does) and then admits at most
``(limit - RESERVED_FDS) // 2`` client connections: past that, a new connection is refused (an
HTTP listener answers 503 with ``Retry-After``, a TCP listener closes it), and the connections
already open keep working. The listener and per-address limits (``client.max_connections``,
``client.max_connections_per_ip``, as nginx's ``limit_conn``) are refused the same way.
"""

from __future__ import annotations

import errno
import logging
import resource
import time

log = logging.getLogger("wslb.server")

#: what an HTTP/1.1 client gets when its connection is refused (written before reading)
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 24\r\n"
    b"Connection: close\r\n\r\n503 Service Unavailable\n"
)

#: a connect that failed for want of a descriptor in wslb, not because of its endpoint
NO_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})

#: descriptors kept back for listeners, health checks, logs, DNS, the admin listener
RESERVED_FDS = 64


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return int(min(soft, 1 << 20))


def process_connection_limit(fd_limit: int) -> int:
    """Client connections one process can hold with an upstream connection each."""
    return max(1, (fd_limit - RESERVED_FDS) // 2)


class Warnings:
    """A warning said once, then at most once a minute with how many times it happened since."""

    __slots__ = ("_seen",)
    INTERVAL = 60.0

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, int]] = {}

    def warn(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.INTERVAL:
            self._seen[key] = (last[0], last[1] + 1)
            return
        more = last[1] if last is not None else 0
        self._seen[key] = (now, 0)
        if more:
            log.warning(message + " (and %d more times in the last minute)", *args, more)
        else:
            log.warning(message, *args)


class Slot:
    """One admitted client connection; ``release`` (idempotent) gives its place back."""

    __slots__ = ("count", "ip")

    def __init__(self, count: ConnectionCount, ip: str) -> None:
        self.count: ConnectionCount | None = count
        self.ip = ip

    def release(self) -> None:
        count = self.count
        if count is None:
            return
        self.count = None
        count.open -= 1
        count.process.open -= 1
        n = count.by_ip[self.ip] - 1
        if n:
            count.by_ip[self.ip] = n
        else:
            del count.by_ip[self.ip]


class ProcessCount:
    """Client connections open in this process, against the descriptor-derived limit."""

    __slots__ = ("limit", "open", "refused")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0


class ConnectionCount:
    """Open client connections of one listener (the same object across reloads)."""

    __slots__ = ("by_ip", "open", "process", "refused")

    def __init__(self, process: ProcessCount) -> None:
        self.process = process
        self.open = 0
        self.by_ip: dict[str, int] = {}
        self.refused = 0

    def admit(self, ip: str, limit: int | None, per_ip: int | None) -> Slot | tuple[str, str]:
        """A slot for a new connection from ``ip``, or (the limit that is full, a message)."""
        process = self.process
        if process.open >= process.limit:
            name = "process"
            why = f"this worker holds {process.limit} connections (its file-descriptor limit)"
        elif limit is not None and self.open >= limit:
            name = "listener"
            why = f"the listener holds {limit} connections (client.max_connections)"
        elif per_ip is not None and self.by_ip.get(ip, 0) >= per_ip:
            name = "client"
            why = f"{ip} holds {per_ip} connections (client.max_connections_per_ip)"
        else:
            self.open += 1
            process.open += 1
            self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
            return Slot(self, ip)
        self.refused += 1
        process.refused += 1
        return name, why


def share(value: int | None, workers: int) -> int | None:
    """A worker's part of a limit that the workers enforce each on their own (nothing is
    shared between them): the limit divided among them, rounded up."""
    return None if value is None else max(1, -(-value // workers))
