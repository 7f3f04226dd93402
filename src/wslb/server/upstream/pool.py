"""Idle upstream HTTP/1.1 connections of one endpoint, reused most-recent first.

A connection is put back only after a complete response to a completely sent request, when both
sides agreed to keep it alive. It leaves the pool when it is reused, when it has idled longer
than ``idle_timeout``, when the pool is full (the oldest goes), or when the backend closes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class Poolable(Protocol):
    idle_since: float
    served: int
    closed: bool  # set once close() was called or the peer closed

    def close(self) -> None: ...


C = TypeVar("C", bound=Poolable)


class Pool(Generic[C]):
    __slots__ = ("_idle", "idle_timeout", "max_idle", "max_requests")

    def __init__(self, max_idle: int, idle_timeout: float, max_requests: int) -> None:
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.max_requests = max_requests
        self._idle: list[C] = []

    def __len__(self) -> int:
        return len(self._idle)

    def __iter__(self) -> Iterator[C]:
        return iter(self._idle)

    def get(self) -> C | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def put(self, conn: C, now: float) -> bool:
        """Keep ``conn`` for reuse; False (and the caller closes it) when it should not be kept."""
        if conn.served >= self.max_requests or conn.closed:
            return False
        if len(self._idle) >= self.max_idle:
            self._idle.pop(0).close()
        conn.idle_since = now
        self._idle.append(conn)
        return True

    def discard(self, conn: C) -> None:
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    def sweep(self, now: float) -> None:
        if not self._idle:
            return
        keep = []
        for conn in self._idle:
            if now - conn.idle_since >= self.idle_timeout:
                conn.close()
            else:
                keep.append(conn)
        self._idle = keep

    def close_all(self, retire: bool = False) -> None:
        """Close the idle connections; ``retire``: and keep none from now on (a connection
        handed back later is closed by its caller)."""
        if retire:
            self.max_requests = 0
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
