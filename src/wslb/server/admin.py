"""The admin listener (``--admin HOST:PORT``): metrics, health, a JSON API and the dashboard.

It is not on the data path, and it must answer for every worker, so it reads what the workers
publish: each writes a snapshot of its state and counters to the shared state directory once a
second (server/stats.py); the admin listener sums them. It runs in a thread of the single worker,
or, with several workers, in a process of its own forked by the master (the master itself keeps
no threads, so that forking workers stays safe).

  GET  /metrics                 Prometheus text format (prometheus_client)
  GET  /healthz                 200 while the process runs
  GET  /readyz                  200 when every worker has reported in the last 3 s and none
                                is draining; 503 otherwise
  GET  /api/state               the merged state (JSON): generation, listeners, routes,
                                backends and endpoints with health, open tunnels, counts
  POST /api/reload              validate the configuration source; 400 with the errors, or
                                202 and the reload goes to every worker (as SIGHUP does)
  POST /api/drain?backend=B&endpoint=HOST:PORT[&undo=1]
                                stop sending new sessions to an endpoint (202)
  GET  /                        the dashboard (HTML, no build step)
  GET  /events                  the dashboard's feed: the state as server-sent events, 1/s

Bound to loopback by default. Bound elsewhere, it refuses to start without a bearer token
(``--admin-token`` or ``WSLB_ADMIN_TOKEN``); with a token, every request must carry
``Authorization: Bearer TOKEN`` (GET requests may give ``?token=TOKEN`` instead, for the
dashboard in a browser, whose event stream cannot send headers).

The probe listener (``--probes HOST:PORT``) is the read-only part for the kubelet and
Prometheus, with no token: ``/healthz``, ``/readyz`` and ``/metrics``, nothing that changes
anything. ``/readyz`` answers 503 from the moment SIGTERM arrives (the ``stopping`` mark in the
state directory, made by whichever process got the signal first), before any draining starts.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from wslb.server.stats import LATENCY_BUCKETS, TUNNEL_BUCKETS

log = logging.getLogger("wslb.admin")

FRESH = 3.0  # seconds: an older snapshot is a worker that is not there
STOPPING = "stopping"  # the mark in the state directory: SIGTERM arrived, readiness is 503
Validate = Callable[[], list[str]]  # the configuration source's errors (empty: valid)


def mark_stopping(directory: str) -> None:
    """Readiness answers 503 from now on (called on SIGTERM, before anything else)."""
    try:
        with open(os.path.join(directory, STOPPING), "w", encoding="utf-8"):
            pass
    except OSError as exc:
        log.warning("cannot mark %s as stopping: %s", directory, exc)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


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


def _bound(httpd: ThreadingHTTPServer | None) -> tuple[str, int] | None:
    if httpd is None:
        return None
    host, port = httpd.server_address[:2]
    return str(host), int(port)


def _probe(
    path: str, ready: Callable[[], tuple[bool, str]], registry: CollectorRegistry | None
) -> tuple[int, bytes, str] | None:
    """/healthz, /readyz and /metrics (without a registry: none), as both listeners answer
    them; None for any other path."""
    if path == "/healthz":
        return 200, b"ok\n", "text/plain"
    if path == "/readyz":
        ok, why = ready()
        return (200 if ok else 503), why.encode() + b"\n", "text/plain"
    if path == "/metrics" and registry is not None:
        return 200, generate_latest(registry), "text/plain; version=0.0.4"
    return None


def _waiting() -> tuple[bool, str]:
    return False, "waiting for the first configuration"


def _reply(
    handler: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str, close: bool = False
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Cache-Control", "no-store")
    if close:
        handler.send_header("Connection", "close")
        handler.close_connection = True
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


class _ProbeHandler(BaseHTTPRequestHandler):
    """The kubelet's and Prometheus' view: health, readiness and metrics; no token."""

    server_admin: AdminServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("probe %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        admin = self.server_admin
        answer = _probe(urlsplit(self.path).path, admin.state.ready, admin.registry)
        _reply(self, *(answer or (404, b"not found\n", "text/plain")))

    do_HEAD = do_GET


class _WaitingHandler(_ProbeHandler):
    def do_GET(self) -> None:
        answer = _probe(urlsplit(self.path).path, _waiting, None)
        # Connection: close, so that the next probe finds the real listener
        _reply(self, *(answer or (404, b"not found\n", "text/plain")), close=True)

    do_HEAD = do_GET


def waiting_probes(address: tuple[str, int]) -> ThreadingHTTPServer:
    """The probe listener before there is anything to serve (the controller's first sync):
    alive, not ready. Closed just before :class:`AdminServer` binds the same address."""
    httpd = ThreadingHTTPServer(address, _WaitingHandler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="wslb-probe-wait", daemon=True).start()
    return httpd


class AdminServer:
    """The admin listener (``address``) and the probe listener (``probes``), either or both,
    over the same snapshots."""

    def __init__(
        self,
        address: tuple[str, int] | None,
        state_dir: str,
        workers: int,
        validate: Validate | None,
        reload_pid: int,
        token: str | None,
        probes: tuple[str, int] | None = None,
    ) -> None:
        self.state = State(state_dir, workers)
        self.state_dir = state_dir
        self.validate = validate
        self.reload_pid = reload_pid
        self.token = token
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(self.state, self._master))
        admin = self

        class Handler(_Handler):
            server_admin = admin

        class Probe(_ProbeHandler):
            server_admin = admin

        self.httpd: ThreadingHTTPServer | None = None
        self.probes: ThreadingHTTPServer | None = None
        if address is not None:
            self.httpd = ThreadingHTTPServer(address, Handler)
            self.httpd.daemon_threads = True
        try:
            if probes is not None:
                self.probes = ThreadingHTTPServer(probes, Probe)
                self.probes.daemon_threads = True
        except OSError:
            self.close()
            raise

    @property
    def address(self) -> tuple[str, int] | None:
        return _bound(self.httpd)

    @property
    def probes_address(self) -> tuple[str, int] | None:
        return _bound(self.probes)

    def close(self) -> None:
        for httpd in (self.httpd, self.probes):
            if httpd is not None:
                httpd.server_close()

    def _master(self) -> dict[str, Any]:
        try:
            with open(os.path.join(self.state_dir, "master.json"), encoding="utf-8") as f:
                data: dict[str, Any] = json.load(f)
                return data
        except (OSError, ValueError):
            return {}

    def start_thread(self) -> None:
        for httpd, what in ((self.httpd, "admin"), (self.probes, "probe")):
            if httpd is not None:
                name = f"wslb-{what}"
                threading.Thread(target=httpd.serve_forever, name=name, daemon=True).start()
                log.info("%s listener on %s:%d", what, *httpd.server_address[:2])

    def serve_forever(self) -> None:
        """In the admin process: every listener in a thread; this one waits for the end."""
        self.start_thread()
        threading.Event().wait()

    def drain(self, backend: str, endpoint: str, undo: bool) -> None:
        """Record the drain where every worker looks for it (drains.json, read each second)."""
        path = os.path.join(self.state_dir, "drains.json")
        try:
            with open(path, encoding="utf-8") as f:
                drains = set(map(tuple, json.load(f)))
        except (OSError, ValueError):
            drains = set()
        if undo:
            drains.discard((backend, endpoint))
        else:
            drains.add((backend, endpoint))
        tmp = f"{path}.{threading.get_ident()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(sorted(drains), f)
        os.replace(tmp, path)


class _Handler(BaseHTTPRequestHandler):
    server_admin: AdminServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("admin %s: " + format, self.client_address[0], *args)

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        _reply(self, status, body, ctype)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data, indent=1).encode())

    def _authorized(self) -> bool:
        token = self.server_admin.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        # the dashboard page and its event stream (EventSource cannot send headers)
        query = parse_qs(urlsplit(self.path).query).get("token", [""])[0]
        if self.command == "GET" and hmac.compare_digest(query.encode(), token.encode()):
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Bearer realm="wslb"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        url = urlsplit(self.path)
        admin = self.server_admin
        probed = _probe(url.path, admin.state.ready, admin.registry)
        if probed is not None:
            _reply(self, *probed)
        elif url.path == "/api/state":
            self._json(200, admin.state.merged())
        elif url.path in ("/", "/dashboard"):
            page = resources.files("wslb.server").joinpath("dashboard.html").read_bytes()
            self._send(200, page, "text/html; charset=utf-8")
        elif url.path == "/events":
            self._events()
        else:
            self._json(404, {"error": "not found"})

    do_HEAD = do_GET

    def _events(self) -> None:
        """Server-sent events: the merged state every second, until the client goes."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.close_connection = True
        try:
            while True:
                data = json.dumps(self.server_admin.state.merged())
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()
                time.sleep(1.0)
        except (BrokenPipeError, ConnectionResetError, OSError):
            return

    def do_POST(self) -> None:
        if not self._authorized():
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 65536))
        url = urlsplit(self.path)
        admin = self.server_admin
        if url.path == "/api/reload":
            if admin.validate is None:
                self._json(409, {"error": "no configuration source to reload from"})
                return
            errors = admin.validate()
            if errors:
                self._json(400, {"status": "refused", "errors": errors})
                return
            os.kill(admin.reload_pid, signal.SIGHUP)
            self._json(202, {"status": "reloading"})
        elif url.path == "/api/drain":
            q = parse_qs(url.query)
            backend, endpoint = q.get("backend", [""])[0], q.get("endpoint", [""])[0]
            known = admin.state.merged().get("backends", {})
            if endpoint not in known.get(backend, {}).get("endpoints", {}):
                self._json(404, {"error": f"no endpoint {endpoint!r} in backend {backend!r}"})
                return
            undo = q.get("undo", ["0"])[0] in ("1", "true")
            admin.drain(backend, endpoint, undo)
            self._json(202, {"status": "undraining" if undo else "draining"})
        else:
            self._json(404, {"error": "not found"})
