"""The workers' snapshots summed: readiness from the state directory, the JSON the admin API
and the dashboard read, and the Prometheus collector of ``/metrics`` (the master process's,
fed by the files each worker writes once a second, see ``observe/stats.py``)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from wslb.server.observe.stats import LATENCY_BUCKETS, TUNNEL_BUCKETS

log = logging.getLogger("wslb.admin")

FRESH = 3.0  # seconds: an older snapshot is a worker that is not there

STOPPING = "stopping"  # the mark in the state directory: SIGTERM arrived, readiness is 503


def mark_stopping(directory: str) -> None:
    """Readiness answers 503 from now on (called on SIGTERM, before anything else)."""
    try:
        with open(os.path.join(directory, STOPPING), "w", encoding="utf-8"):
            pass
    except OSError as exc:
        log.warning("cannot mark %s as stopping: %s", directory, exc)


class State:
    """The workers' snapshots, read from the state directory."""

    def __init__(self, directory: str, workers: int) -> None:
        self.directory = directory
        self.workers = workers

    def snapshots(self) -> list[dict[str, Any]]:
        out = []
        for i in range(self.workers):
            try:
                with open(os.path.join(self.directory, f"worker-{i}.json"), encoding="utf-8") as f:
                    out.append(json.load(f))
            except (OSError, ValueError):
                continue
        return out

    def ready(self) -> tuple[bool, str]:
        if os.path.exists(os.path.join(self.directory, STOPPING)):
            return False, "stopping"
        snaps = self.snapshots()
        now = time.time()
        fresh = [s for s in snaps if now - s["time"] < FRESH]
        if len(fresh) < self.workers:
            return False, f"{len(fresh)} of {self.workers} workers reporting"
        if any(s["draining"] for s in fresh):
            return False, "draining"
        return True, "ready"

    def merged(self, snaps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """One view of all workers: counts summed, health as the first worker sees it."""
        if snaps is None:
            snaps = self.snapshots()
        if not snaps:
            return {"workers": 0, "expected_workers": self.workers}
        first = snaps[0]
        backends: dict[str, Any] = {}
        for snap in snaps:
            for name, b in snap["backends"].items():
                merged_b = backends.setdefault(
                    name, {k: v for k, v in b.items() if k != "endpoints"} | {"endpoints": {}}
                )
                for addr, ep in b["endpoints"].items():
                    m = merged_b["endpoints"].get(addr)
                    if m is None:
                        merged_b["endpoints"][addr] = dict(ep, requests=0, errors=0)
                    else:
                        m["active"] += ep["active"]
                        m["tunnels"] += ep["tunnels"]
            for backend, addr, n in snap["stats"]["endpoint_requests"]:
                ep = backends.get(backend, {}).get("endpoints", {}).get(addr)
                if ep is not None:
                    ep["requests"] += n
            for backend, addr, n in snap["stats"]["endpoint_errors"]:
                ep = backends.get(backend, {}).get("endpoints", {}).get(addr)
                if ep is not None:
                    ep["errors"] += n
        requests: dict[int, int] = {}
        for snap in snaps:
            for _b, _r, status, n in snap["stats"]["requests"]:
                requests[status] = requests.get(status, 0) + n
        return {
            "time": time.time(),
            "workers": len(snaps),
            "expected_workers": self.workers,
            "generation": min(s["generation"] for s in snaps),
            "listeners": first["listeners"],
            "routes": first["routes"],
            "backends": backends,
            "connections": sum(s["connections"] for s in snaps),
            "requests_by_status": {str(k): v for k, v in sorted(requests.items())},
        }


class Collector:
    """Prometheus metrics summed over the workers' snapshots."""

    def __init__(self, state: State, master: Callable[[], dict[str, Any]]) -> None:
        self.state = state
        self.master = master

    def collect(self) -> Iterator[Metric]:
        snaps = self.state.snapshots()
        stats = [s["stats"] for s in snaps]

        def counter(name: str, doc: str, labels: list[str], key: str) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=labels)
            sums: dict[tuple[str, ...], float] = {}
            for st in stats:
                for *lv, n in st[key]:
                    k = tuple(str(v) for v in lv)
                    sums[k] = sums.get(k, 0) + n
            for k, n in sorted(sums.items()):
                family.add_metric(list(k), n)
            return family

        yield counter(
            "wslb_requests",
            "HTTP requests answered (by wslb or an endpoint), by backend, route and status",
            ["backend", "route", "code"],
            "requests",
        )
        yield counter(
            "wslb_endpoint_requests",
            "Requests sent to each endpoint",
            ["backend", "endpoint"],
            "endpoint_requests",
        )
        yield counter(
            "wslb_endpoint_errors",
            "Requests to each endpoint that ended in 5xx or were aborted",
            ["backend", "endpoint"],
            "endpoint_errors",
        )
        yield counter(
            "wslb_bytes",
            "Bytes relayed: kind http (bodies) or tunnel; direction in (from clients) or out",
            ["kind", "direction"],
            "bytes",
        )
        yield counter(
            "wslb_tunnels_opened",
            "WebSocket and tcp tunnels opened, by endpoint",
            ["backend", "endpoint"],
            "tunnels_opened",
        )
        yield counter(
            "wslb_tunnels_closed",
            "Tunnels closed, by reason",
            ["backend", "reason"],
            "tunnels_closed",
        )
        yield counter(
            "wslb_upgrade_failures",
            "WebSocket handshakes that did not become tunnels, by the status answered",
            ["backend", "code"],
            "upgrade_failures",
        )
        yield counter(
            "wslb_admission_refused",
            "Handshakes refused by admission control",
            ["backend", "limit"],
            "refused",
        )
        yield counter(
            "wslb_connections_refused",
            "Client connections refused at a connection limit (process: the file-descriptor "
            "limit or server.max_connections; listener; client: per address)",
            ["listener", "limit"],
            "connections_refused",
        )
        yield counter(
            "wslb_acme_orders",
            "ACME orders of certificates, by certificate, kind (order, renewal) and result",
            ["certificate", "kind", "result"],
            "acme",
        )
        for name, doc, key, bounds in (
            (
                "wslb_request_duration_seconds",
                "Time from a request's head to the end of its response",
                "latency",
                LATENCY_BUCKETS,
            ),
            (
                "wslb_tunnel_duration_seconds",
                "Lifetime of closed tunnels",
                "tunnel_duration",
                TUNNEL_BUCKETS,
            ),
        ):
            hist = HistogramMetricFamily(name, doc, labels=["backend"])
            merged: dict[str, tuple[list[int], float]] = {}
            for st in stats:
                for backend, h in st[key].items():
                    counts, total = merged.get(backend, ([0] * (len(bounds) + 1), 0.0))
                    merged[backend] = (
                        [a + b for a, b in zip(counts, h["counts"], strict=True)],
                        total + h["sum"],
                    )
            for backend, (counts, total) in sorted(merged.items()):
                cumulative, buckets = 0, []
                for bound, c in zip([*map(str, bounds), "+Inf"], counts, strict=True):
                    cumulative += c
                    buckets.append((bound, cumulative))
                hist.add_metric([backend], buckets, total)
            yield hist
        tunnels = GaugeMetricFamily(
            "wslb_tunnels_open", "Tunnels open now, by endpoint", labels=["backend", "endpoint"]
        )
        up = GaugeMetricFamily(
            "wslb_endpoint_up",
            "1 when the endpoint takes new requests (healthy, not ejected, not draining)",
            labels=["backend", "endpoint"],
        )
        draining = GaugeMetricFamily(
            "wslb_endpoint_draining", "1 while an endpoint drains", labels=["backend", "endpoint"]
        )
        merged_state = self.state.merged(snaps)  # the same reading as the counters above
        for backend, b in sorted(merged_state.get("backends", {}).items()):
            for addr, ep in sorted(b["endpoints"].items()):
                tunnels.add_metric([backend, addr], ep["tunnels"])
                up.add_metric([backend, addr], 1 if ep["available"] else 0)
                draining.add_metric([backend, addr], 1 if ep["draining"] else 0)
        yield tunnels
        yield up
        yield draining
        conns = GaugeMetricFamily("wslb_client_connections", "Client connections open now")
        conns.add_metric([], sum(s["connections"] for s in snaps))
        yield conns
        gen = GaugeMetricFamily(
            "wslb_config_generation", "Generation of the configuration (1 at start, +1 a reload)"
        )
        gen.add_metric([], min((s["generation"] for s in snaps), default=0))
        yield gen
        reloads = CounterMetricFamily("wslb_reloads", "Reloads, by result", labels=["result"])
        applied = max((st["reloads"]["applied"] for st in stats), default=0)
        refused = self.master().get("reloads_refused", 0) + max(
            (st["reloads"]["refused"] for st in stats), default=0
        )
        reloads.add_metric(["applied"], applied)
        reloads.add_metric(["refused"], refused)
        yield reloads
        updates = CounterMetricFamily(
            "wslb_endpoint_updates",
            "Changes of backends' endpoints alone, applied without a reload (controller mode)",
        )
        updates.add_metric([], max((st["reloads"].get("endpoints", 0) for st in stats), default=0))
        yield updates
        workers = GaugeMetricFamily("wslb_workers", "Workers reporting")
        workers.add_metric([], len(snaps))
        yield workers
        yield from process_metrics([st.get("process", {}) for st in stats])
        yield from certificate_metrics(snaps)


def process_metrics(figures: list[dict[str, float]]) -> Iterator[Metric]:
    """The process_* metrics of the client libraries, for wslb's workers together: CPU time,
    memory and descriptors summed, the lowest descriptor limit, the first start (a worker
    started again keeps its predecessor's start and CPU time: the counter does not drop)."""
    figures = [f for f in figures if f]
    cpus = [f["cpu_seconds"] for f in figures if "cpu_seconds" in f]
    if cpus:
        cpu = CounterMetricFamily(
            "process_cpu_seconds", "User and system CPU time of the workers, in seconds"
        )
        cpu.add_metric([], sum(cpus))
        yield cpu
    for name, doc, key, combine in (
        (
            "process_resident_memory_bytes",
            "Resident memory of the workers",
            "resident_memory_bytes",
            sum,
        ),
        ("process_open_fds", "Open file descriptors of the workers", "open_fds", sum),
        ("process_max_fds", "The workers' (lowest) limit of open file descriptors", "max_fds", min),
        (
            "process_start_time_seconds",
            "When the first worker started (Unix time)",
            "start_time",
            min,
        ),
    ):
        values = [f[key] for f in figures if key in f]
        if values:
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], combine(values))
            yield gauge


def certificate_metrics(snaps: list[dict[str, Any]]) -> Iterator[Metric]:
    """wslb_certificate_expiry_seconds{certificate,host}: when each certificate served (from a
    file, a Secret or ACME) stops being valid, as Unix time; alert on it minus time()."""
    expiry = GaugeMetricFamily(
        "wslb_certificate_expiry_seconds",
        "Unix time at which a served certificate expires (its notAfter), by certificate and host",
        labels=["certificate", "host"],
    )
    seen: dict[tuple[str, str], float] = {}
    for snap in snaps:
        for cert in snap.get("certificates", []):
            for host in cert["hosts"] or [""]:
                seen[cert["certificate"], host] = float(cert["not_after"])
    for (name, host), not_after in sorted(seen.items()):
        expiry.add_metric([name, host], not_after)
    yield expiry
