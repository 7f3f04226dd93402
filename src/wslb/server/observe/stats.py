"""What a worker counts, and the snapshot it publishes for the admin listener.

Only with ``--admin``: the data path then adds a few dictionary updates per request and per
tunnel (no locks, no prometheus objects: a worker is one thread; the process figures are
prometheus_client's, read once a second for the snapshot). Once a second each worker
writes a snapshot (its state and its counters) as JSON to the shared state directory; the admin
listener (server/observe/admin.py) sums the workers' snapshots into Prometheus metrics, the
JSON API and the dashboard. Workers share nothing else.

Counters only go up: a worker the master starts again in place of one that died takes its
predecessor's last snapshot as where its counters (and CPU time) begin (:func:`resume`), so the
sums ``/metrics`` shows never drop and ``rate()`` sees no reset.
"""

from __future__ import annotations

import json
import os
import time
from bisect import bisect_left
from typing import Any

from prometheus_client.process_collector import ProcessCollector

from wslb.server.observe.records import RequestRecord, TunnelRecord

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TUNNEL_BUCKETS = (1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0)


class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf), sum and count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def dump(self) -> dict[str, Any]:
        return {"counts": self.counts, "sum": self.sum}

    @classmethod
    def load(cls, bounds: tuple[float, ...], data: dict[str, Any]) -> Histogram:
        h = cls(bounds)
        if len(data["counts"]) == len(h.counts):
            h.counts = [int(c) for c in data["counts"]]
            h.sum = float(data["sum"])
        return h


def _route_name(ex: RequestRecord) -> str:
    route = ex.route
    if route is None:
        return ""
    spec = route.spec
    return f"{spec.host or '*'}{spec.path}"


class Stats:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}  # (backend, route, status)
        self.latency: dict[str, Histogram] = {}  # backend
        self.bytes: dict[tuple[str, str], int] = {}  # (kind, direction)
        self.endpoint_requests: dict[tuple[str, str], int] = {}  # (backend, endpoint)
        self.endpoint_errors: dict[tuple[str, str], int] = {}  # 5xx and aborts
        self.tunnels_opened: dict[tuple[str, str], int] = {}  # (backend, endpoint)
        self.tunnels_closed: dict[tuple[str, str], int] = {}  # (backend, reason)
        self.tunnel_duration: dict[str, Histogram] = {}  # backend
        self.upgrade_failures: dict[tuple[str, int], int] = {}  # (backend, status)
        self.refused: dict[tuple[str, str], int] = {}  # (backend, limit)
        self.connections_refused: dict[tuple[str, str], int] = {}  # (listener, limit)
        self.acme: dict[tuple[str, str, str], int] = {}  # (certificate, kind, result)
        # "endpoints": changes of endpoints only, applied without a reload
        self.reloads = {"applied": 0, "refused": 0, "endpoints": 0}
        self.cpu_before = 0.0  # CPU seconds of the workers this one replaced (same index)
        self.started = time.time()  # of the first worker of this index

    # ---- called from the data path
    def request(self, ex: RequestRecord, aborted: bool) -> None:
        route = ex.route
        backend = route.backend.name if route is not None else ""
        key = (backend, _route_name(ex), ex.status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(backend)
        if hist is None:
            hist = self.latency[backend] = Histogram(LATENCY_BUCKETS)
        hist.observe(time.monotonic() - ex.born)
        b = self.bytes
        b["http", "in"] = b.get(("http", "in"), 0) + ex.body_received
        b["http", "out"] = b.get(("http", "out"), 0) + ex.resp_bytes
        ep = ex.endpoint
        if ep is not None:
            ek = (backend, ep.address)
            self.endpoint_requests[ek] = self.endpoint_requests.get(ek, 0) + 1
            if aborted or ex.status >= 500:
                self.endpoint_errors[ek] = self.endpoint_errors.get(ek, 0) + 1
        if ex.is_upgrade:  # an upgrade that ended as a plain response: it failed
            uk = (backend, ex.status)
            self.upgrade_failures[uk] = self.upgrade_failures.get(uk, 0) + 1

    def refusal(self, backend: str, limit: str) -> None:
        key = (backend, limit)
        self.refused[key] = self.refused.get(key, 0) + 1

    def connection_refused(self, listener: str, limit: str) -> None:
        key = (listener, limit)
        self.connections_refused[key] = self.connections_refused.get(key, 0) + 1

    def acme_event(self, name: str, kind: str, result: str) -> None:
        key = (name, kind, result)
        self.acme[key] = self.acme.get(key, 0) + 1

    def tunnel_opened(self, t: TunnelRecord) -> None:
        key = (t.backend, t.endpoint.address)
        self.tunnels_opened[key] = self.tunnels_opened.get(key, 0) + 1

    def tunnel_closed(self, t: TunnelRecord, from_client: int, from_upstream: int) -> None:
        key = (t.backend, t.reason)
        self.tunnels_closed[key] = self.tunnels_closed.get(key, 0) + 1
        hist = self.tunnel_duration.get(t.backend)
        if hist is None:
            hist = self.tunnel_duration[t.backend] = Histogram(TUNNEL_BUCKETS)
        hist.observe(time.monotonic() - t.started)
        b = self.bytes
        b["tunnel", "in"] = b.get(("tunnel", "in"), 0) + from_client
        b["tunnel", "out"] = b.get(("tunnel", "out"), 0) + from_upstream

    # ---- the snapshot
    def dump(self) -> dict[str, Any]:
        def rows(d: dict[Any, int]) -> list[list[Any]]:
            return [[*k, v] if isinstance(k, tuple) else [k, v] for k, v in d.items()]

        return {
            "requests": rows(self.requests),
            "latency": {k: h.dump() for k, h in self.latency.items()},
            "bytes": rows(self.bytes),
            "endpoint_requests": rows(self.endpoint_requests),
            "endpoint_errors": rows(self.endpoint_errors),
            "tunnels_opened": rows(self.tunnels_opened),
            "tunnels_closed": rows(self.tunnels_closed),
            "tunnel_duration": {k: h.dump() for k, h in self.tunnel_duration.items()},
            "upgrade_failures": rows(self.upgrade_failures),
            "refused": rows(self.refused),
            "connections_refused": rows(self.connections_refused),
            "acme": rows(self.acme),
            "reloads": dict(self.reloads),
            "process": process_figures(self),
        }

    def resume(self, dump: dict[str, Any]) -> None:
        """Start from a predecessor's snapshot (its ``dump()``): counters go on from there."""
        tables: dict[str, dict[Any, int]] = {
            "requests": self.requests,
            "bytes": self.bytes,
            "endpoint_requests": self.endpoint_requests,
            "endpoint_errors": self.endpoint_errors,
            "tunnels_opened": self.tunnels_opened,
            "tunnels_closed": self.tunnels_closed,
            "upgrade_failures": self.upgrade_failures,
            "refused": self.refused,
            "connections_refused": self.connections_refused,
            "acme": self.acme,
        }
        for name, table in tables.items():
            for *key, n in dump.get(name, []):
                k = tuple(key) if len(key) > 1 else key[0]
                table[k] = table.get(k, 0) + int(n)
        for name, hists, bounds in (
            ("latency", self.latency, LATENCY_BUCKETS),
            ("tunnel_duration", self.tunnel_duration, TUNNEL_BUCKETS),
        ):
            for backend, data in dump.get(name, {}).items():
                hists[backend] = Histogram.load(bounds, data)
        for key, n in dump.get("reloads", {}).items():
            if key in self.reloads:
                self.reloads[key] = int(n)
        process = dump.get("process", {})
        self.cpu_before = float(process.get("cpu_seconds", 0.0))
        self.started = float(process.get("start_time", self.started))


# prometheus_client's reading of /proc/self (whichever process calls it; nothing on other
# systems): process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
_PROCESS = ProcessCollector(registry=None)


def process_figures(stats: Stats) -> dict[str, float]:
    """This worker's process figures for process_* metrics (CPU includes its predecessors',
    the start is the first worker's of this index)."""
    read = {s.name: float(s.value) for m in _PROCESS.collect() for s in m.samples}
    figures = {"start_time": stats.started}
    if "process_cpu_seconds_total" in read:
        figures["cpu_seconds"] = stats.cpu_before + read["process_cpu_seconds_total"]
    for key in ("resident_memory_bytes", "open_fds", "max_fds"):
        if "process_" + key in read:
            figures[key] = read["process_" + key]
    return figures


def resume(directory: str, index: int, stats: Stats) -> bool:
    """Counters from the last snapshot of worker ``index`` in ``directory``, if one is there
    (a worker restarted by the master); True when they were taken."""
    try:
        with open(os.path.join(directory, f"worker-{index}.json"), encoding="utf-8") as fh:
            snap = json.load(fh)
    except (OSError, ValueError):
        return False
    if not isinstance(snap, dict) or not isinstance(snap.get("stats"), dict):
        return False
    stats.resume(snap["stats"])
    return True


def write_snapshot(directory: str, index: int, data: dict[str, Any]) -> None:
    path = os.path.join(directory, f"worker-{index}.json")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
