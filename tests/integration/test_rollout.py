"""The acceptance test of rolling updates that keep every session: two wslb replicas (real
`wslb controller` processes against the API stand-in) behind a wslb ``tcp`` listener that
plays the cloud load balancer (PROXY v1 to them, their /readyz as its health check), replaced
one at a time as a Deployment with maxSurge 1 and maxUnavailable 0 replaces its pods, while 30
python-socketio and 30 Node socket.io-client clients (no cookies) chat in one room.

Each replica has a loopback address of its own (its "pod IP"), its probe port the same on all,
so that the front checks each one's /readyz as DigitalOcean's balancer does. The messages carry
the pods' time of broadcast (``ts``); what a client should have got is judged in that time.

Measured, and printed (``pytest -s``): the reconnect gaps, the closes and the new sessions per
0.5 s of each drain, the messages lost, the delivery lag. Asserted: no HTTP 400 (nor any other
error status) anywhere, no connect error, every session upgraded to WebSocket, every client
back within 2 s of its close, no message lost outside the receiver's own reconnect, none got
twice within a session, closes only in the drains and spread over them (no storm), and no
handshake refused by the replicas' admission control (wslb.io/websocket-rate)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import socketio
import yaml

from tests.integration.test_controller import Controller, _statuses, chat_objects
from tests.support.chat import CHAT, chat_cluster
from tests.support.kubeapi import KubeAPI
from tests.support.procs import ROOT, Proc, Wslb, scaled

N = 30  # clients of each kind
PERIOD = 1.5  # seconds between two messages of a client: 40 a second in the room
STAGGER = 0.1  # seconds between two clients' first connects (no handshake burst of ours)
DELAY = 1.5  # --shutdown-delay: accepting after SIGTERM
GRACE = 4.0  # the ConfigMap's worker-shutdown-timeout
SPREAD = 0.8 * GRACE  # the WebSockets' Close 1001 spread over this
RATE = 20  # wslb.io/websocket-rate: new sessions a second per replica (its admission control)
JITTER = 0.15  # seconds: allowed for beyond the stamps' disorder measured (see skew())
LAG = 3.0  # seconds: a closed session got what was stamped until at most this before its close
BACK = 2.0  # every client back within this of its close
WAIT = scaled(20.0)
HOSTS = [f"127.0.0.{10 + i}" for i in range(4)]  # a loopback address per replica (its "pod IP")
LB, CONFIGMAP = "ingress/wslb", "ingress/wslb-config"


# --------------------------------------------------------------------------- the cluster


@pytest.fixture(scope="module")
def chat_pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Proc]]:
    with chat_cluster(tmp_path_factory.mktemp("chat"), 3) as (_redis, pods):
        yield pods


@pytest.fixture
def api() -> Iterator[KubeAPI]:
    with KubeAPI(namespaces=("default", "ingress")) as server:
        yield server


def cluster_objects(pods: list[Proc]) -> list[dict[str, Any]]:
    """The chat app (its Ingress with admission control), the LoadBalancer Service in front of
    wslb (DigitalOcean's, sending PROXY headers) and wslb's ConfigMap (the drain's grace)."""
    objs = chat_objects(pods)
    ingress = next(o for o in objs if o["kind"] == "Ingress")
    ingress["metadata"]["annotations"]["wslb.io/websocket-rate"] = str(RATE)
    ns, name = LB.split("/")
    lb = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": ns,
            "annotations": {
                "service.beta.kubernetes.io/do-loadbalancer-enable-proxy-protocol": "true"
            },
        },
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "wslb"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    ns, name = CONFIGMAP.split("/")
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": {"worker-shutdown-timeout": f"{GRACE:g}s"},
    }
    return [*objs, lb, cm]


def probe_port() -> int:
    """A port free on every replica's address (they all probe on the same one, as pods do)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((HOSTS[0], 0))
            port = int(first.getsockname()[1])
            others = [socket.socket() for _ in HOSTS[1:]]
            try:
                for s, host in zip(others, HOSTS[1:], strict=True):
                    s.bind((host, port))
                return port
            except OSError:
                continue
            finally:
                for s in others:
                    s.close()
    raise RuntimeError("no port free on all of " + ", ".join(HOSTS))


@dataclass
class Replica:
    name: str
    proc: Controller
    host: str
    probes: str

    def endpoint(self) -> str:
        return f"{self.host}:{self.proc.port('http')}"


@pytest.fixture
def replicas(api: KubeAPI, tmp_path: Path) -> Iterator[Callable[[int], Replica]]:
    started: list[Replica] = []
    port = probe_port()

    def start(i: int) -> Replica:
        host = HOSTS[i]
        extra = [
            *("--port-map", "80=0", "--bind-address", host, "--probes", f"{host}:{port}"),
            *("--shutdown-delay", str(DELAY), "--configmap", CONFIGMAP, "--workers", "1"),
            *("--publish-service", LB, "--balancer-in-front"),
        ]
        name = f"wslb-{i}"
        r = Replica(name, Controller(api, tmp_path, extra, name), host, f"http://{host}:{port}")
        started.append(r)
        return r

    yield start
    for r in started:
        r.proc.signal(signal.SIGTERM)  # all at once: their shutdown delays run together
    for r in started:
        r.proc.stop()


def front_config(port: int, eps: list[Replica]) -> dict[str, Any]:
    """The cloud load balancer: a tcp listener, PROXY v1 to the replicas, their readiness
    (the probe port of each one's address) as its health check."""
    probes = int(eps[0].probes.rpartition(":")[2])
    return {
        "listeners": [
            {"name": "lb", "address": "127.0.0.1", "port": port, "protocol": "tcp", "backend": "r"}
        ],
        "backends": [
            {
                "name": "r",
                "protocol": "tcp",
                "proxy_protocol": "v1",
                "endpoints": [r.endpoint() for r in eps],
                "health": {
                    "type": "http",
                    "path": "/readyz",
                    "port": probes,
                    "interval": 0.25,
                    "timeout": 1.0,
                    "unhealthy_threshold": 1,
                    "healthy_threshold": 1,
                },
            }
        ],
    }


class Front:
    def __init__(self, proc: Wslb, port: int) -> None:
        self.proc, self.port = proc, port

    async def set(self, eps: list[Replica]) -> None:
        """Rewrite the config with these endpoints, SIGHUP, wait until it applied them (a
        change of endpoints alone: no new generation, the backend's endpoints swapped)."""
        tmp = self.proc.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(front_config(self.port, eps)))
        os.replace(tmp, self.proc.config_path)
        self.proc.signal(signal.SIGHUP)
        text = "worker 0: backend r endpoints now " + ", ".join(r.endpoint() for r in eps) + "\n"
        await asyncio.to_thread(self.proc.wait_output, text, WAIT)


async def _until(pred: Callable[[], bool], what: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _ready(r: Replica) -> None:
    """Started and ready (its /readyz 200), without blocking the clients' event loop."""
    await asyncio.to_thread(r.proc.wait_ready, WAIT)
    async with httpx.AsyncClient(base_url=r.probes, timeout=5) as probe:
        loop = asyncio.get_running_loop()
        end = loop.time() + WAIT
        while True:
            with suppress(httpx.TransportError):
                if (await probe.get("/readyz")).status_code == 200:
                    return
            assert loop.time() < end, f"{r.name} not ready:\n{r.proc.output()}"
            await asyncio.sleep(0.05)


async def _terminate(r: Replica) -> tuple[float, float, str]:
    """SIGTERM, as the kubelet sends it; wait (bounded) until the replica exited, scraping
    its /metrics on the way. Returns the SIGTERM's time, the exit's and the last scrape."""
    sent = time.time()
    r.proc.signal(signal.SIGTERM)
    metrics = ""
    loop = asyncio.get_running_loop()
    end = loop.time() + scaled(DELAY + GRACE + 15)
    async with httpx.AsyncClient(base_url=r.probes, timeout=2) as probe:
        while r.proc.proc.poll() is None:
            assert loop.time() < end, f"{r.name} still running:\n{r.proc.output()}"
            with suppress(httpx.HTTPError):
                metrics = (await probe.get("/metrics")).text
            await asyncio.sleep(0.2)
    assert r.proc.proc.returncode == 0, r.proc.output()
    return sent, time.time(), metrics


# --------------------------------------------------------------------------- the clients


@dataclass
class Record:
    """What one client saw; times are wall-clock seconds (the pods' ``ts`` are too)."""

    name: str
    pod: str | None = None
    joined: bool = False
    ended: bool = False  # joined at the end
    connects: list[float] = field(default_factory=list)
    joins: list[float] = field(default_factory=list)
    disconnects: list[tuple[float, str]] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    sent: list[tuple[str, float]] = field(default_factory=list)
    received: dict[str, float] = field(default_factory=dict)  # id -> when
    dups: list[tuple[str, float, str]] = field(default_factory=list)  # again: id, when, transport
    upgrades: int = 0  # sessions that went over to WebSocket
    statuses: Counter[int] = field(default_factory=Counter)  # HTTP statuses (python clients)


class PyClients:
    """N python-socketio clients (default transports: polling, then the upgrade), each with an
    aiohttp session that keeps no cookies, saying a message every PERIOD while joined."""

    def __init__(self, url: str, n: int) -> None:
        self.url, self.n = url, n
        self.records = [Record(f"py-{i}") for i in range(n)]
        self.ts: dict[str, float] = {}
        self.clients: list[socketio.AsyncClient] = []
        self.sessions: list[aiohttp.ClientSession] = []
        self.pending: dict[str, float] = {}  # said, not acked yet: id -> when
        self.saying = True
        self.tasks: list[asyncio.Task[None]] = []

    def _client(self, rec: Record) -> socketio.AsyncClient:
        trace = aiohttp.TraceConfig()

        async def on_response(_s: Any, _ctx: Any, params: Any) -> None:
            rec.statuses[params.response.status] += 1
            rec.upgrades = rec.statuses[101]

        trace.on_request_end.append(on_response)
        session = aiohttp.ClientSession(trace_configs=[trace], cookie_jar=aiohttp.DummyCookieJar())
        self.sessions.append(session)
        sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=0.2,
            reconnection_delay_max=1,
            http_session=session,
        )

        async def connect() -> None:
            rec.connects.append(time.time())
            rec.joined = False
            try:
                ack = await sio.call("join", {"room": "rollout", "name": rec.name}, timeout=5)
            except socketio.exceptions.SocketIOError as exc:
                rec.errors.append(f"join: {exc!r}")
                return
            rec.pod, rec.joined = ack["pod"], True
            rec.joins.append(time.time())

        async def disconnect(*reason: Any) -> None:
            rec.joined = False
            rec.disconnects.append((time.time(), str(reason[0]) if reason else ""))

        async def connect_error(data: Any) -> None:
            rec.errors.append(data)

        async def message(m: dict[str, Any]) -> None:
            mid = m.get("id")
            if not isinstance(mid, str):
                return
            if mid in rec.received:
                rec.dups.append((mid, time.time(), str(sio.eio.current_transport)))
            else:
                rec.received[mid] = time.time()
            self.ts[mid] = float(m["ts"])

        for handler in (connect, disconnect, connect_error, message):
            sio.on(handler.__name__, handler)
        return sio

    async def _say(self, sio: socketio.AsyncClient, rec: Record) -> None:
        await asyncio.sleep(random.random() * PERIOD)
        k = 0
        while self.saying:
            if sio.connected and rec.joined:
                mid = f"{rec.name}-{k}"
                k += 1

                def acked(*_: Any, mid: str = mid) -> None:
                    self.pending.pop(mid, None)
                    rec.sent.append((mid, time.time()))

                self.pending[mid] = time.monotonic()
                try:
                    await sio.emit(
                        "message", {"room": "rollout", "text": "tick", "id": mid}, callback=acked
                    )
                except socketio.exceptions.SocketIOError:
                    self.pending.pop(mid, None)
            await asyncio.sleep(PERIOD)

    async def start(self) -> None:
        for rec in self.records:
            sio = self._client(rec)
            self.clients.append(sio)
            await sio.connect(self.url, wait_timeout=scaled(10))
            self.tasks.append(asyncio.create_task(self._say(sio, rec)))
            await asyncio.sleep(STAGGER)
        await _until(lambda: all(r.joined for r in self.records), "python clients joined", WAIT)

    async def stop_saying(self) -> None:
        """Stop; wait until what was said is acked (a said message without an ack in 5 s:
        its sender's connection closed under it)."""
        self.saying = False
        await asyncio.gather(*self.tasks)
        await _until(
            lambda: all(time.monotonic() - t > 5 for t in self.pending.values()),
            "the python clients' acks",
            scaled(10),
        )

    async def close(self) -> None:
        self.saying = False
        for t in self.tasks:
            t.cancel()
        for sio in self.clients:
            with suppress(Exception):
                await sio.disconnect()
        for s in self.sessions:
            await s.close()


class NodeClients:
    """tests/node/rollout_clients.js: N Node socket.io-client clients, driven from stdin."""

    def __init__(self, url: str, n: int) -> None:
        node = shutil.which("node")
        if node is None or not (CHAT / "node_modules" / "socket.io-client").exists():
            pytest.skip("node or the socket.io-client npm package is missing (make venv)")
        script = ROOT / "tests" / "node" / "rollout_clients.js"
        self.proc = subprocess.Popen(
            [node, str(script), url, str(n), str(int(PERIOD * 1000)), str(int(STAGGER * 1000))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(scaled(timeout)):
            line = await asyncio.to_thread(self.proc.stdout.readline)
        assert line, "the Node clients exited"
        return json.loads(line)  # type: ignore[no-any-return]

    async def ask(self, command: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return await self.read(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def node_records(dump: dict[str, Any]) -> list[Record]:
    return [
        Record(
            c["name"],
            pod=c["pod"],
            ended=c["joined"],
            connects=c["connects"],
            joins=c["joins"],
            disconnects=[(t, why) for t, why in c["disconnects"]],
            errors=c["errors"],
            sent=[(mid, t) for mid, t in c["sent"]],
            received=c["received"],
            dups=[(mid, t, how) for mid, t, how in c["dups"]],
            upgrades=c["upgrades"],
        )
        for c in dump["clients"]
    ]


# --------------------------------------------------------------------------- the figures


def reconnect_gaps(rec: Record) -> list[float]:
    """Each close to the next connect (infinite if it never came back)."""
    return [
        min((c for c in rec.connects if c > d), default=math.inf) - d for d, _ in rec.disconnects
    ]


def skew(rec: Record, ts: dict[str, float]) -> float:
    """How far out of the stamps' order ``rec`` got its messages: the most a message was
    stamped before one it got earlier. The stamp precedes the publication on the pods' channel
    (a busy pod publishes late), and a pod's emits to a client overlap a little: so a session
    that ends can miss a message stamped about this long (the one missed is the latest of all:
    JITTER more) before the last one it got."""
    most, worst = -math.inf, 0.0
    for mid, _ in sorted(rec.received.items(), key=lambda kv: kv[1]):
        t = ts.get(mid)
        if t is not None:
            worst = max(worst, most - t)
            most = max(most, t)
    return worst


def lost_messages(
    rec: Record, ts: dict[str, float], jitter: float
) -> tuple[list[tuple[str, float]], int, int, list[float]]:
    """The messages said while ``rec`` was in the room that it did not get: said after its
    first join, outside its own reconnects. A reconnect runs, in the room's time (the pods'
    stamps), from the last message the closed session got (less ``jitter``, the stamps'
    disorder) to the join after it. Returns those lost, how many were due, how many it
    missed inside its own reconnects, and per close how long before it that last message was
    stamped (the delivery's lag then)."""
    windows, lags = [], []
    for d, _ in rec.disconnects:
        last = max((ts[m] for m, t in rec.received.items() if t < d and m in ts), default=d)
        lags.append(d - last)
        windows.append((last - jitter, min((j for j in rec.joins if j > d), default=math.inf)))
    first = rec.joins[0]
    lost, due, in_window = [], 0, 0
    for mid, t in ts.items():
        if t <= first:
            continue
        if any(a < t < b for a, b in windows):
            in_window += mid not in rec.received
            continue
        due += 1
        if mid not in rec.received:
            lost.append((mid, t))
    return lost, due, in_window, lags


def duplicates(rec: Record) -> tuple[list[tuple[str, float, str]], int]:
    """The messages ``rec`` got twice within one session (a fault), and how many it got again
    across one of its reconnects: the first copy from the pod of the closed session, the
    second from the pod of the new one, which relayed the message from the pods' channel
    only after the client had joined there (a subscriber lagging under the reconnects' presence
    broadcasts): the chat's at-least-once around a reconnect, not the load balancer's doing."""
    within, across = [], 0
    for mid, t, how in rec.dups:
        if any(rec.received[mid] < d < t for d, _ in rec.disconnects):
            across += 1
        else:
            within.append((mid, t, how))
    return within, across


def most_in(times: list[float], width: float) -> int:
    """The most of ``times`` in any window of ``width`` seconds."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] < t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def refused(metrics: str) -> float:
    return sum(
        float(v)
        for v in re.findall(r"^wslb_admission_refused_total\{[^}]*\} (\S+)$", metrics, re.M)
    )


# --------------------------------------------------------------------------- the test


async def test_rolling_update_keeps_every_session(
    api: KubeAPI,
    replicas: Callable[[int], Replica],
    wslb: Callable[..., Wslb],
    chat_pods: list[Proc],
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    api.apply_many(cluster_objects(chat_pods))
    old = [replicas(0), replicas(1)]
    await asyncio.gather(*(_ready(r) for r in old))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    front = Front(wslb(front_config(port, old), extra=["--workers", "1"]), port)
    url = f"http://127.0.0.1:{port}"

    py = PyClients(url, N)
    node = NodeClients(url, N)
    drains: list[tuple[Replica, float, float, str]] = []
    scraped: dict[str, str] = {}
    try:
        await py.start()
        ready = await node.read(60)
        assert ready["ready"], ready
        serving = list(old)
        # maxSurge 1, maxUnavailable 0: a new replica, ready, in the balancer; then an old one
        # terminated (the balancer's health check takes it out on its /readyz 503), gone, out
        for i, gone in ((2, old[0]), (3, old[1])):
            new = replicas(i)
            await _ready(new)
            serving.append(new)
            await front.set(serving)
            sent, exited, metrics = await _terminate(gone)
            drains.append((gone, sent, exited, metrics))
            serving.remove(gone)
            await front.set(serving)
        await asyncio.sleep(1.0)  # traffic after the last drain, measured like the rest
        stopped_at = time.time()
        await py.stop_saying()
        assert (await node.ask("stop", 20))["stopped"]
        # the barrier: said after every acked message, so whoever got it got all before it
        # (one Redis channel, in order, to every pod; one connection, in order, to a client)
        fin = "fin"
        await _until(lambda: all(r.joined for r in py.records), "python clients joined", WAIT)
        await py.clients[0].emit("message", {"room": "rollout", "text": "fin", "id": fin})
        await _until(lambda: all(fin in r.received for r in py.records), "the barrier", WAIT)
        finished = time.time()
        for rec in py.records:  # as they end, before they are closed
            rec.ended = rec.joined
        dump = await node.ask(f"dump {fin}", 30)
        assert dump["fin"], "the barrier did not reach every Node client"
        for r in serving:
            async with httpx.AsyncClient(base_url=r.probes, timeout=5) as probe:
                scraped[r.name] = (await probe.get("/metrics")).text
    finally:
        node.stop()
        await py.close()

    records = [*py.records, *node_records(dump)]
    for rec in py.records:  # not their closing by us
        rec.disconnects = [(d, why) for d, why in rec.disconnects if d < finished]
    ts = {**dump["ts"], **py.ts}
    for rec in records:  # acked but got by no one: said at most at its ack
        for mid, acked in rec.sent:
            ts.setdefault(mid, acked)
    ts.pop(fin)
    # everything seen, for a look after a failure
    (tmp_path / "rollout.json").write_text(
        json.dumps(
            {
                "drains": [(g.name, sent, exited) for g, sent, exited, _ in drains],
                "stopped": stopped_at,
                "ts": ts,
                "clients": [vars(r) for r in records],
            }
        )
    )
    took = time.monotonic() - began

    # the figures first (printed even when an assertion below fails)
    everyone = [*old, *serving]
    gaps = [g for rec in records for g in reconnect_gaps(rec)]
    worst = max(gaps, default=0.0)
    closes = sorted(d for rec in records for d, _ in rec.disconnects)
    arrivals = sorted(t for r in everyone for t in _handshakes(r.proc))  # new sessions, at wslb
    per_drain = []  # closes, most in 0.5 s (at the clients; handshakes at wslb), bound, span
    for _gone, sent, exited, _ in drains:
        mine = [d for d in closes if sent <= d <= exited]
        arrived = [t for t in arrivals if sent <= t <= exited]
        bound = 2 * math.ceil(len(mine) * 0.5 / SPREAD) + 4
        span = round(max(mine) - min(mine), 2) if mine else 0.0
        per_drain.append((len(mine), most_in(mine, 0.5), most_in(arrived, 0.5), bound, span))
    disorder = max(skew(rec, ts) for rec in records) + JITTER
    lost_total, due_total, in_windows, lags = 0, 0, 0, []
    losses = []
    for rec in records:
        lost, due, in_window, lag = lost_messages(rec, ts, disorder)
        lost_total += len(lost)
        due_total += due
        in_windows += in_window
        lags += lag
        if lost:
            losses.append((rec.name, lost[:5], rec.disconnects, rec.joins))
    twice = {rec.name: duplicates(rec) for rec in records}
    again = sum(n for _, n in twice.values())
    latency = sorted(t - ts[m] for rec in records for m, t in rec.received.items() if m in ts)
    per_second = {r.name: most_in(_handshakes(r.proc), 1.0) for r in everyone}
    scraped.update((gone.name, metrics) for gone, _, _, metrics in drains)
    refusals = {name: refused(text) for name, text in scraped.items()}
    print(
        f"\nrollout: {len(records)} clients, {len(ts)} messages, {len(gaps)} reconnects, the "
        f"worst back after {worst:.2f}s; per drain (closes, most in 0.5s at the clients, "
        f"handshakes at wslb, bound, span s) {per_drain}; lost {lost_total} of {due_total} "
        f"deliveries due, {in_windows} missed in own reconnects (stamps' disorder "
        f"{disorder:.2f}s), {again} got again across own reconnects; delivery lag p50 {_q(latency, 0.5):.3f}s p99 {_q(latency, 0.99):.3f}s "
        f"max {_q(latency, 1):.3f}s, at a close {max(lags, default=0):.2f}s; handshakes per "
        f"replica in 1s at most {per_second}, refused {refusals}; took {took:.1f}s"
    )

    # every client ends connected, each of its sessions joined and upgraded to WebSocket, with
    # no error and no message twice in a session
    for rec in records:
        assert rec.ended, f"{rec.name} not connected at the end"
        assert rec.errors == [], (rec.name, rec.errors)
        assert len(rec.joins) == len(rec.connects) == rec.upgrades, rec
        assert twice[rec.name][0] == [], (rec.name, rec.dups, rec.disconnects, rec.joins)

    # no HTTP 400 (nor any other error status) anywhere: the python clients' responses, the
    # replicas' access logs
    for rec in records:
        assert not any(s >= 400 for s in rec.statuses), (rec.name, rec.statuses)
    for r in everyone:
        statuses = _statuses(r.proc)
        assert not any(s >= 400 for s in statuses), (r.name, statuses)

    # the closes: only in the drains, from DELAY after the SIGTERM (accepting and serving until
    # then), every WebSocket of the replica, spread over SPREAD: no storm
    outside = [d for d in closes if not any(s <= d <= e for _, s, e, _ in drains)]
    assert outside == [], f"closes outside the drains: {outside}"
    for (gone, sent, _, _), (count, peak, came, bound, _) in zip(drains, per_drain, strict=True):
        after = [d for d in closes if d >= sent]
        assert count and min(after) >= sent + DELAY, (gone.name, count, min(after) - sent)
        tunnels = re.findall(r"closing (\d+) WebSocket\(s\) with 1001", gone.proc.output())
        assert tunnels and int(tunnels[-1]) == count, (gone.name, tunnels, count)
        assert peak <= bound and came <= bound, (gone.name, peak, came, bound)

    # every client back within BACK of each close
    assert worst <= scaled(BACK), sorted(gaps)[-5:]

    # no message lost outside each receiver's own reconnect; the closed sessions got what
    # was said until shortly before their close
    assert lost_total == 0, losses[:3]
    assert max(lags, default=0) <= scaled(LAG), sorted(lags)[-5:]

    # the replicas' admission control saw no storm: nothing refused
    assert set(refusals) == {r.name for r in everyone}, refusals
    assert all(v == 0 for v in refusals.values()), refusals
    assert max(per_second.values()) <= RATE, per_second


def _q(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


_ACCESS = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO wslb.access .*\"GET /socket\.io/\?(\S*) HTTP",
    re.M,
)


def _handshakes(proc: Proc) -> list[float]:
    """When the replica answered Engine.IO handshakes (polling GETs with no sid): new sessions."""
    out = []
    for stamp, query in _ACCESS.findall(proc.output()):
        if "transport=polling" in query and "sid=" not in query:
            t = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
            out.append(t.timestamp())
    return out
