"""The admin listener (``--admin HOST:PORT``): metrics, health, a JSON API and the dashboard.

It is not on the data path, and it must answer for every worker, so it reads what the workers
publish: each writes a snapshot of its state and counters to the shared state directory once a
second (server/observe/stats.py); the admin listener sums them. It runs in a thread of the
single worker, or, with several workers, in a process of its own forked by the master (the
master itself keeps no threads, so that forking workers stays safe).

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
                                (one thread writes to every viewer: a viewer holds a socket,
                                not a thread; HEAD answers the headers alone)

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
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, generate_latest

from wslb.server.observe.metrics import Collector, State

log = logging.getLogger("wslb.admin")
Validate = Callable[[], list[str]]  # the configuration source's errors (empty: valid)

FEED_INTERVAL = 1.0  # seconds between two events of the dashboard's feed
FEED_BACKLOG = 1 << 20  # bytes a viewer may leave unread before it is dropped


class _Server(ThreadingHTTPServer):
    """http.server, daemon threads, and sockets a handler handed on (a feed's viewers) left
    open when their handler returns."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.handed_on: set[socket.socket] = set()

    def shutdown_request(self, request: Any) -> None:
        if request in self.handed_on:  # (its handler's thread: no other thread sees it)
            self.handed_on.discard(request)
            return
        super().shutdown_request(request)


class Feed:
    """The dashboards' event stream: one thread computes the merged state once a second and
    writes it to every viewer's socket (non-blocking; a viewer that leaves over FEED_BACKLOG
    unread is dropped), and notices viewers that went away. It starts with the first viewer."""

    def __init__(self, payload: Callable[[], bytes]) -> None:
        self.payload = payload
        self.lock = threading.Lock()
        self.viewers: dict[socket.socket, bytearray] = {}  # what each has not taken yet
        self.added: list[socket.socket] = []
        self.thread: threading.Thread | None = None
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)

    def add(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        with self.lock:
            self.added.append(sock)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="wslb-feed", daemon=True)
                self.thread.start()
        self.wake_w.send(b"\0")

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.wake_r, selectors.EVENT_READ)
        socks: dict[int, socket.socket] = {}  # by descriptor, for what the selector reports
        next_at = time.monotonic()
        while True:
            with self.lock:
                added, self.added = self.added, []
            for sock in added:  # a new viewer gets the state at once, then every second
                self.viewers[sock] = bytearray()
                socks[sock.fileno()] = sock
                sel.register(sock, selectors.EVENT_READ)
            now = time.monotonic()
            due = now >= next_at
            if due:
                next_at = now + FEED_INTERVAL
            if (due and self.viewers) or added:
                try:
                    event = self.payload()
                except Exception:  # a bad snapshot must not end the feed of every viewer
                    log.exception("admin: the dashboard's feed could not read the state")
                    event = b""
                for sock in list(self.viewers) if due else added:
                    self._send(sel, sock, event)
            wait = max(0.0, next_at - time.monotonic()) if self.viewers else None
            for key, _ in sel.select(wait):
                if key.fd == self.wake_r.fileno():
                    try:
                        self.wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                    continue
                sock = socks[key.fd]
                try:
                    gone = sock.recv(4096) == b""  # a viewer sends nothing: EOF (or noise)
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    self._drop(sel, sock)
                    socks.pop(key.fd, None)

    def _send(self, sel: selectors.BaseSelector, sock: socket.socket, event: bytes) -> None:
        pending = self.viewers.get(sock)
        if pending is None:
            return
        pending += event
        try:
            sent = sock.send(pending)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._drop(sel, sock)
            return
        del pending[:sent]
        if len(pending) > FEED_BACKLOG:
            log.info("admin: a dashboard viewer stopped reading; dropped")
            self._drop(sel, sock)

    def _drop(self, sel: selectors.BaseSelector, sock: socket.socket) -> None:
        self.viewers.pop(sock, None)
        try:
            sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


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
        self.feed = Feed(lambda: b"data: %s\n\n" % json.dumps(self.state.merged()).encode())
        admin = self

        class Handler(_Handler):
            server_admin = admin

        class Probe(_ProbeHandler):
            server_admin = admin

        self.httpd: ThreadingHTTPServer | None = None
        self.probes: ThreadingHTTPServer | None = None
        if address is not None:
            self.httpd = _Server(address, Handler)
        try:
            if probes is not None:
                self.probes = _Server(probes, Probe)
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
            page = resources.files("wslb.server.observe").joinpath("dashboard.html").read_bytes()
            self._send(200, page, "text/html; charset=utf-8")
        elif url.path == "/events":
            self._events()
        else:
            self._json(404, {"error": "not found"})

    do_HEAD = do_GET

    def _events(self) -> None:
        """Server-sent events: the headers here, then the socket goes to the feed, which
        writes the merged state every second until the client goes; this thread ends now."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command == "HEAD":
            return
        self.wfile.flush()
        server = self.server
        assert isinstance(server, _Server)
        server.handed_on.add(self.connection)
        self.server_admin.feed.add(self.connection)

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
