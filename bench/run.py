"""`make bench`: wslb, nginx and HAProxy side by side, in one run, on this machine.

Each proxy in turn is pinned to core 0 and the load generators and backends to core 1. The same
backends serve all three: nginx answering `200 ok` for HTTP (two servers) and a minimal RFC 6455
echo server for WebSockets (two servers). Every proxy keeps upstream connections alive, logs
nothing per request, runs one worker (one thread), balances round robin, and passes Host and
sets X-Forwarded-For/-Proto/-Port as wslb does (nginx as ingress-nginx configures it).

Measured, for each proxy:
  * HTTP/1.1 keep-alive: wrk, 50 connections: requests/s, p99, proxy CPU per request
  * HTTP/2 (h2c, prior knowledge): h2load, 10 connections x 5 concurrent streams, to the same
    HTTP/1.1 backends over kept-alive connections: requests/s, mean latency, CPU per request
  * WebSocket echo, 50 connections, 64 B and 4 KiB: msgs/s, p50, p99, proxy CPU per message
  * idle WebSockets: proxy RSS growth per connection with 5,000 open (a proxy just started,
    warmed with 50)
and the paths a browser on an https:// origin takes (HTTP/2 by ALPN; measured in clear, h2c):
  * HTTP/2 to an HTTP/2 endpoint: h2load as above, to nginx serving h2c behind the proxy
  * Socket.IO long-polling: wrk (HTTP/1.1) and h2load (HTTP/2) polling two Engine.IO sessions
    in turn, one per endpoint (`GET /socket.io/?EIO=4&transport=polling&sid=...`, each sid from
    a handshake made through the proxy, so that wslb resolves its tag on every request) from a
    backend answering as Engine.IO does: requests/s, CPU per request
  * WebSocket echo over RFC 8441 streams (extended CONNECT), 64 B, 50 streams on 5 h2c
    connections, to the same RFC 6455 echo backend over HTTP/1.1
  * idle RFC 8441 WebSockets: RSS growth per stream with 5,000 open, 100 per connection
A proxy that cannot do one of these (nginx has no HTTP/2 upstream and no RFC 8441) shows n/a.
and what a reconnect storm costs (new connections, not the relay):
  * WebSocket handshakes: 50 clients in a loop (connect, upgrade, 101, Close, close):
    handshakes/s, p99, proxy CPU per handshake
  * HTTP with one request per connection: wrk -c20 -H "Connection: close"
CPU is the proxy processes' utime + stime from /proc/PID/stat over the measured window; a
"message" is one echo round trip (the proxy relays it twice). Ratios are against nginx measured in
the same run: absolute numbers on a shared machine are noise, ratios much less so.

    python bench/run.py [--seconds 10] [--rounds 3] [--idle 5000] [--only wslb,nginx,haproxy]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def pin(core: str | None) -> list[str]:
    return ["taskset", "-c", core] if core is not None and shutil.which("taskset") else []


def ensure_tools() -> None:
    missing = [
        pkg
        for pkg, exe in (
            ("nginx", "nginx"),
            ("haproxy", "haproxy"),
            ("wrk", "wrk"),
            ("nghttp2-client", "h2load"),
        )
        if shutil.which(exe) is None and not Path(f"/usr/sbin/{exe}").exists()
    ]
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print(f"installing {' '.join(missing)} from the OS packages...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    res = subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-q", *missing], env=env, capture_output=True
    )
    if res.returncode != 0:
        subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, check=True, capture_output=True)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-q", *missing], env=env, check=True)


def exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def tree(pid: int) -> list[int]:
    """pid and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total


@dataclass
class Result:
    name: str
    http_rps: float = 0.0
    http_p99_ms: float = 0.0
    http_cpu_us: float = 0.0
    h2_rps: float = 0.0
    h2_mean_ms: float = 0.0
    h2_cpu_us: float = 0.0
    ws: dict[int, dict[str, float]] = field(default_factory=dict)
    idle_rss_per_ws: float = 0.0
    idle_open: int = 0
    h2c_rps: float = 0.0  # HTTP/2 to an h2c endpoint
    h2c_mean_ms: float = 0.0
    h2c_cpu_us: float = 0.0
    poll1_rps: float = 0.0  # Socket.IO long-polling over HTTP/1.1
    poll1_cpu_us: float = 0.0
    poll2_rps: float = 0.0  # ... over HTTP/2
    poll2_cpu_us: float = 0.0
    ws8441: dict[str, float] = field(default_factory=dict)  # RFC 8441 64 B echo
    idle_rss_per_stream: float = 0.0
    idle_streams: int = 0
    hs_per_s: float = 0.0  # WebSocket handshakes, a client connection each
    hs_p99_us: float = 0.0
    hs_cpu_us: float = 0.0
    close_rps: float = 0.0  # HTTP, one request per client connection
    close_cpu_us: float = 0.0
    notes: list[str] = field(default_factory=list)


class Proxy:
    name = ""
    h2_upstream = True  # can proxy to an HTTP/2 endpoint
    rfc8441 = True  # accepts WebSockets over HTTP/2 streams

    def __init__(
        self, work: Path, port: int, http_eps: list[int], ws_eps: list[int], h2c_eps: list[int]
    ) -> None:
        self.work = work
        self.port = port
        self.h2_port = free_port()
        self.http_eps = http_eps
        self.ws_eps = ws_eps
        self.h2c_eps = h2c_eps
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    core: str | None = None

    def start(self, core: str | None) -> None:
        self.core = core
        log = open(self.work / f"{self.name}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([*pin(core), *self.command()], stdout=log, stderr=log)
        wait_port(self.port)
        wait_port(self.h2_port)

    def pids(self) -> list[int]:
        assert self.proc is not None
        return tree(self.proc.pid)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM if self.name != "nginx" else signal.SIGQUIT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Nginx(Proxy):
    name = "nginx"
    h2_upstream = False  # proxy_http_version 2 does not exist (grpc_pass only)
    rfc8441 = False  # no extended CONNECT on its HTTP/2 side

    def command(self) -> list[str]:
        web = "".join(f"server 127.0.0.1:{p};" for p in self.http_eps)
        ws = "".join(f"server 127.0.0.1:{p};" for p in self.ws_eps)
        location = (  # the same for HTTP/1.1 and HTTP/2 clients
            "    location / {\n"
            "      proxy_pass http://web;\n"
            "      proxy_http_version 1.1;\n"
            '      proxy_set_header Connection "";\n'
            "      proxy_set_header Host $host;\n"
            "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            "      proxy_set_header X-Forwarded-Proto $scheme;\n"
            "      proxy_set_header X-Forwarded-Port $server_port;\n"
            "    }\n"
        )
        conf = self.work / "nginx-proxy.conf"
        conf.write_text(f"""
worker_processes 1;
worker_rlimit_nofile 65536;
pid {self.work}/nginx-proxy.pid;
error_log {self.work}/nginx-proxy-error.log warn;
events {{ worker_connections 30000; }}
http {{
  access_log off;
  upstream web {{ {web} keepalive 32; }}
  upstream ws {{ {ws} }}
  server {{
    listen 127.0.0.1:{self.port} backlog=4096;
    location /ws {{
      proxy_pass http://ws;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Port $server_port;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }}
{location}  }}
  server {{
    listen 127.0.0.1:{self.h2_port} http2 backlog=4096;
    keepalive_requests 1000000;
{location}  }}
}}
""")
        return [exe("nginx"), "-p", str(self.work), "-c", str(conf), "-g", "daemon off;"]


class HAProxy(Proxy):
    name = "haproxy"

    def command(self) -> list[str]:
        web = "\n".join(f"  server w{i} 127.0.0.1:{p}" for i, p in enumerate(self.http_eps))
        ws = "\n".join(f"  server s{i} 127.0.0.1:{p}" for i, p in enumerate(self.ws_eps))
        web2 = "\n".join(
            f"  server h{i} 127.0.0.1:{p} proto h2" for i, p in enumerate(self.h2c_eps)
        )
        conf = self.work / "haproxy.cfg"
        conf.write_text(f"""
global
  nbthread 1
  maxconn {max(1000, (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 100) // 2)}
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 3600s
  option http-keep-alive
  option forwardfor
frontend fe
  bind 127.0.0.1:{self.port}
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Port %[dst_port]
  use_backend ws if {{ path_beg /ws }}
  default_backend web
frontend h2
  bind 127.0.0.1:{self.h2_port} proto h2
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Port %[dst_port]
  use_backend ws if {{ path_beg /ws }}
  use_backend web2 if {{ path_beg /h2 }}
  default_backend web
backend web
  balance roundrobin
  http-reuse always
{web}
backend web2
  balance roundrobin
  http-reuse always
{web2}
backend ws
  balance roundrobin
{ws}
""")
        return [exe("haproxy"), "-f", str(conf)]


class Wslb(Proxy):
    name = "wslb"

    def command(self) -> list[str]:
        import yaml

        conf = self.work / "wslb.yaml"
        conf.write_text(
            yaml.safe_dump(
                {
                    "server": {"access_log": False},  # as nginx and HAProxy here
                    "listeners": [
                        {
                            "name": "web",
                            "address": "127.0.0.1",
                            "port": self.port,
                            "protocol": "http",
                        },
                        {
                            "name": "h2",
                            "address": "127.0.0.1",
                            "port": self.h2_port,
                            "protocol": "http",
                            "http2": True,
                        },
                    ],
                    "backends": [
                        {
                            "name": "web",
                            "endpoints": [f"127.0.0.1:{p}" for p in self.http_eps],
                            "keepalive": {"enabled": True},
                            "health": {"enabled": False},
                        },
                        {
                            "name": "ws",
                            "endpoints": [f"127.0.0.1:{p}" for p in self.ws_eps],
                            "health": {"enabled": False},
                        },
                        {
                            "name": "web2",
                            "protocol": "h2c",
                            "endpoints": [f"127.0.0.1:{p}" for p in self.h2c_eps],
                            "keepalive": {"enabled": True},
                            "health": {"enabled": False},
                        },
                    ],
                    "routes": [
                        {"path": "/ws", "backend": "ws"},
                        {"path": "/h2", "backend": "web2"},
                        {"path": "/", "backend": "web"},
                    ],
                }
            )
        )
        return [sys.executable, "-m", "wslb", "serve", "-c", str(conf), "--log-level", "warning"]


def run_wrk(
    port: int,
    seconds: float,
    core: str | None,
    paths: tuple[str, ...] = ("/",),
    connections: int = 50,
    headers: tuple[str, ...] = (),
) -> tuple[int, float, float]:
    """wrk -c50; several ``paths`` are requested in turn (a Lua script of prepared requests)."""
    script: list[str] = []
    if len(paths) > 1:
        lua = Path(tempfile.mkstemp(suffix=".lua")[1])
        listed = ", ".join(json.dumps(p) for p in paths)
        lua.write_text(
            f"local paths = {{{listed}}}\nlocal reqs, i = {{}}, 0\n"
            "function init(args) for k, p in ipairs(paths) do reqs[k] = wrk.format(nil, p) end "
            "end\nfunction request() i = i % #reqs + 1 return reqs[i] end\n"
        )
        script = ["-s", str(lua)]
    out = subprocess.run(
        [
            *pin(core),
            exe("wrk"),
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            *(arg for h in headers for arg in ("-H", h)),
            *script,
            f"http://127.0.0.1:{port}{paths[0]}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert m is not None
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors", out)
    if errors:
        print(f"  wrk reported errors:\n{out}", flush=True)
    return requests, rps, p99


def run_h2load(
    port: int, seconds: float, core: str | None, paths: tuple[str, ...] = ("/",)
) -> tuple[int, float, float]:
    """h2load -c10 -m5; several ``paths`` are requested in turn."""
    out = subprocess.run(
        [
            *pin(core),
            exe("h2load"),
            "-c10",
            "-m5",
            "-t1",
            f"-D{max(1, round(seconds))}",
            *(f"http://127.0.0.1:{port}{path}" for path in paths),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    assert m is not None, out
    if int(m.group(2)):
        print(f"  h2load reported failures:\n{out}", flush=True)
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    t = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    assert t is not None, out
    mean = float(t.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[t.group(2)]
    return int(m.group(1)), rps, mean


def measure(
    pids: list[int], load: Callable[[float], tuple[int, float, float]], seconds: float
) -> tuple[float, float, float]:
    """(requests/s, latency, proxy CPU us per request) of ``load`` run for ``seconds``, after
    2 s of the same as a warm-up (the proxy's connections to the endpoints open)."""
    load(2)
    cpu0 = cpu_seconds(pids)
    requests, rate, latency = load(seconds)
    return rate, latency, (cpu_seconds(pids) - cpu0) / max(requests, 1) * 1e6


def run_ws(
    proxy: Proxy,
    size: int,
    seconds: float,
    core: str | None,
    h2: bool = False,
    handshakes: bool = False,
) -> dict[str, float]:
    """50 WebSockets echoing ``size`` B; ``h2``: as RFC 8441 streams, 10 per h2c connection;
    ``handshakes``: 50 clients opening and closing WebSockets in a loop instead."""
    p = subprocess.Popen(
        [
            *pin(core),
            sys.executable,
            str(HERE / "ws_load.py"),
            "--port",
            str(proxy.h2_port if h2 else proxy.port),
            "--size",
            str(size),
            "--seconds",
            str(seconds),
            "--connections",
            "50",
            *(["--h2", "10"] if h2 else []),
            *(["--handshakes", "50"] if handshakes else []),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    pids = proxy.pids()
    cpu0 = cpu1 = 0.0
    result: dict[str, float] = {}
    for line in p.stdout:
        line = line.strip()
        if line == "start":
            cpu0 = cpu_seconds(pids)
        elif line == "stop":
            cpu1 = cpu_seconds(pids)
        elif line.startswith("{"):
            result = json.loads(line)
    p.wait()
    result["cpu_us"] = (cpu1 - cpu0) / result["messages"] * 1e6 if result.get("messages") else 0.0
    return result


def hold_idle(proxy: Proxy, n: int, core: str | None, h2: bool) -> tuple[float, int]:
    """RSS growth while ``n`` WebSockets are open and idle, per WebSocket, and how many."""
    before = rss_bytes(proxy.pids())
    p = subprocess.Popen(
        [
            *pin(core),
            sys.executable,
            str(HERE / "ws_load.py"),
            "--port",
            str(proxy.h2_port if h2 else proxy.port),
            "--idle",
            str(n),
            *(["--h2", "100"] if h2 else []),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdin is not None
    line = p.stdout.readline()
    opened = json.loads(line)["ready"] if line.startswith("{") else 0
    time.sleep(1.0)  # let the proxy settle (allocator, lazily grown buffers)
    after = rss_bytes(proxy.pids())
    p.stdin.close()
    p.wait(60)
    return (after - before) / max(opened, 1), opened


def run_idle(proxy: Proxy, n: int, core: str | None, h2: bool = False) -> tuple[float, int]:
    """RSS growth per idle WebSocket on a proxy just started (``h2``: RFC 8441 streams, 100
    per h2c connection): after the load tests a proxy's allocator has free memory to reuse, and
    how much depends on what ran before; a fresh process, warmed with 50 WebSockets of the same
    kind, measures every proxy and both kinds alike."""
    proxy.start(core=proxy.core)
    try:
        hold_idle(proxy, 50, core, h2)
        return hold_idle(proxy, n, core, h2)
    finally:
        proxy.stop()


ENGINEIO_OPEN = (  # what an Engine.IO v4 server answers a polling handshake (one session)
    '0{"sid":"bench-session-0001","upgrades":["websocket"],"pingInterval":25000,'
    '"pingTimeout":20000,"maxPayload":1000000}'
)


def polling_paths(port: int, sessions: int) -> tuple[str, ...]:
    """Polling requests of ``sessions`` sessions opened through the proxy one after the other
    (so that round robin puts one on each endpoint, as many sessions spread in a deployment),
    each with its sid as the proxy rewrote it (wslb tags it) and checked to be answered 200
    with the noop packet."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    paths = []
    try:
        for _ in range(sessions):
            conn.request("GET", "/socket.io/?EIO=4&transport=polling", headers={"Host": "bench"})
            body = conn.getresponse().read().decode()
            sid = json.loads(body[1:])["sid"]
            paths.append(f"/socket.io/?EIO=4&transport=polling&sid={sid}")
        for path in paths:
            conn.request("GET", path, headers={"Host": "bench"})
            r = conn.getresponse()
            answer = r.read()
            if r.status != 200 or answer != b"6":
                raise RuntimeError(f"polling through :{port}: {r.status} {answer[:100]!r}")
        return tuple(paths)
    finally:
        conn.close()


def bench(names: list[str], seconds: float, idle: int, rounds: int = 1) -> list[Result]:
    ensure_tools()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cores = os.sched_getaffinity(0)
    proxy_core, load_core = ("0", "1") if len(cores) >= 2 else (None, None)
    work = Path(tempfile.mkdtemp(prefix="wslb-bench-"))
    http_eps = [free_port(), free_port()]
    ws_eps = [free_port(), free_port()]
    h2c_eps = [free_port(), free_port()]
    (work / "logs").mkdir()
    backend_conf = work / "nginx-backend.conf"
    servers = "".join(
        f"server {{ listen 127.0.0.1:{p} backlog=4096; keepalive_requests 1000000; "
        f"location / {{ return 200 'ok'; }} "
        # Engine.IO: a handshake (no sid) gets the open packet, a poll the noop packet
        f"location /socket.io/ {{ if ($arg_sid = '') {{ return 200 '{ENGINEIO_OPEN}'; }} "
        f"return 200 '6'; }} }}\n"
        for p in http_eps
    ) + "".join(
        f"server {{ listen 127.0.0.1:{p} http2 backlog=4096; keepalive_requests 1000000; "
        f"location / {{ return 200 'ok'; }} }}\n"
        for p in h2c_eps
    )
    backend_conf.write_text(
        f"worker_processes 1;\nworker_rlimit_nofile 65536;\npid {work}/nginx-backend.pid;\n"
        f"error_log {work}/nginx-backend-error.log warn;\n"
        f"events {{ worker_connections 30000; }}\nhttp {{ access_log off;\n{servers}}}\n"
    )
    started: list[subprocess.Popen[bytes]] = []
    results: list[Result] = []
    try:
        started.append(
            subprocess.Popen(
                [
                    *pin(load_core),
                    exe("nginx"),
                    "-p",
                    str(work),
                    "-c",
                    str(backend_conf),
                    "-g",
                    "daemon off;",
                ]
            )
        )
        started.append(
            subprocess.Popen(
                [*pin(load_core), sys.executable, str(HERE / "ws_echo.py"), *map(str, ws_eps)]
            )
        )
        for port in http_eps + ws_eps + h2c_eps:
            wait_port(port)
        classes = {"nginx": Nginx, "haproxy": HAProxy, "wslb": Wslb}
        # Proxies take turns round after round, so that a slow spell of this shared machine
        # hits all of them; the table reports each metric's median over the rounds.
        for rnd, name in [(r, n) for r in range(rounds) for n in names]:
            proxy = classes[name](work, free_port(), http_eps, ws_eps, h2c_eps)
            res = Result(name)
            print(f"== {name} (round {rnd + 1}/{rounds})", flush=True)
            if rnd > 0:
                idle = 0  # memory per idle WebSocket is measured once: it does not vary
            proxy.start(proxy_core)
            try:
                pids = proxy.pids()
                res.http_rps, res.http_p99_ms, res.http_cpu_us = measure(
                    pids, partial(run_wrk, proxy.port, core=load_core), seconds
                )
                print(
                    f"  http: {res.http_rps:.0f} req/s, p99 {res.http_p99_ms:.2f} ms, "
                    f"{res.http_cpu_us:.1f} us CPU/request",
                    flush=True,
                )
                res.h2_rps, res.h2_mean_ms, res.h2_cpu_us = measure(
                    pids, partial(run_h2load, proxy.h2_port, core=load_core), seconds
                )
                print(
                    f"  http/2: {res.h2_rps:.0f} req/s, mean {res.h2_mean_ms:.2f} ms, "
                    f"{res.h2_cpu_us:.1f} us CPU/request",
                    flush=True,
                )
                for size in (64, 4096):
                    r = run_ws(proxy, size, seconds, load_core)
                    res.ws[size] = r
                    print(
                        f"  ws {size} B: {r['msgs_per_s']:.0f} msg/s, p50 {r['p50_us']:.0f} us, "
                        f"p99 {r['p99_us']:.0f} us, {r['cpu_us']:.1f} us CPU/msg",
                        flush=True,
                    )
                browser_paths(proxy, res, seconds, load_core)
                churn(proxy, res, seconds, load_core)
            finally:
                proxy.stop()
            if idle:
                res.idle_rss_per_ws, res.idle_open = run_idle(proxy, idle, load_core)
                print(
                    f"  idle: {res.idle_open} open, {res.idle_rss_per_ws / 1024:.1f} KiB "
                    "RSS per WebSocket",
                    flush=True,
                )
                if proxy.rfc8441:
                    res.idle_rss_per_stream, res.idle_streams = run_idle(
                        proxy, idle, load_core, h2=True
                    )
                    print(
                        f"  idle RFC 8441: {res.idle_streams} open, "
                        f"{res.idle_rss_per_stream / 1024:.1f} KiB RSS per stream",
                        flush=True,
                    )
            results.append(res)
    finally:
        for p in started:
            p.send_signal(signal.SIGTERM)
        for p in started:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    return merge(results)


def browser_paths(proxy: Proxy, res: Result, seconds: float, core: str | None) -> None:
    """The rows of HTTP/2 to an h2c endpoint, Socket.IO long-polling, RFC 8441 WebSockets."""
    pids = proxy.pids()
    if proxy.h2_upstream:
        res.h2c_rps, res.h2c_mean_ms, res.h2c_cpu_us = measure(
            pids, partial(run_h2load, proxy.h2_port, core=core, paths=("/h2/",)), seconds
        )
        print(
            f"  http/2 to h2c: {res.h2c_rps:.0f} req/s, mean {res.h2c_mean_ms:.2f} ms, "
            f"{res.h2c_cpu_us:.1f} us CPU/request",
            flush=True,
        )
    paths = polling_paths(proxy.port, len(proxy.http_eps))
    res.poll1_rps, _, res.poll1_cpu_us = measure(
        pids, partial(run_wrk, proxy.port, core=core, paths=paths), seconds
    )
    res.poll2_rps, _, res.poll2_cpu_us = measure(
        pids, partial(run_h2load, proxy.h2_port, core=core, paths=paths), seconds
    )
    print(
        f"  polling: HTTP/1.1 {res.poll1_rps:.0f} req/s {res.poll1_cpu_us:.1f} us CPU/request, "
        f"HTTP/2 {res.poll2_rps:.0f} req/s {res.poll2_cpu_us:.1f} us CPU/request",
        flush=True,
    )
    if not proxy.rfc8441:
        return
    r = res.ws8441 = run_ws(proxy, 64, seconds, core, h2=True)
    print(
        f"  RFC 8441 ws 64 B: {r['msgs_per_s']:.0f} msg/s, p50 {r['p50_us']:.0f} us, "
        f"p99 {r['p99_us']:.0f} us, {r['cpu_us']:.1f} us CPU/msg",
        flush=True,
    )


def churn(proxy: Proxy, res: Result, seconds: float, core: str | None) -> None:
    """The rows of a reconnect storm: WebSocket handshakes, one request per connection."""
    r = run_ws(proxy, 0, seconds, core, handshakes=True)
    res.hs_per_s, res.hs_p99_us, res.hs_cpu_us = r["per_s"], r["p99_us"], r["cpu_us"]
    if r.get("failed"):
        print(f"  {r['failed']} handshakes failed", flush=True)
    res.close_rps, _, res.close_cpu_us = measure(
        proxy.pids(),
        partial(run_wrk, proxy.port, core=core, connections=20, headers=("Connection: close",)),
        seconds,
    )
    print(
        f"  ws handshakes: {res.hs_per_s:.0f}/s, p99 {res.hs_p99_us:.0f} us, "
        f"{res.hs_cpu_us:.1f} us CPU each; one request per connection: "
        f"{res.close_rps:.0f} req/s, {res.close_cpu_us:.1f} us CPU each",
        flush=True,
    )


BROWSER_SCALARS = (
    "h2c_rps",
    "h2c_mean_ms",
    "h2c_cpu_us",
    "poll1_rps",
    "poll1_cpu_us",
    "poll2_rps",
    "poll2_cpu_us",
    "hs_per_s",
    "hs_p99_us",
    "hs_cpu_us",
    "close_rps",
    "close_cpu_us",
)


def merge(results: list[Result]) -> list[Result]:
    """One Result per proxy, each metric the median of its rounds."""
    out = []
    for name in dict.fromkeys(r.name for r in results):
        runs = [r for r in results if r.name == name]
        m = Result(name)
        m.http_rps = statistics.median(r.http_rps for r in runs)
        m.http_p99_ms = statistics.median(r.http_p99_ms for r in runs)
        m.http_cpu_us = statistics.median(r.http_cpu_us for r in runs)
        m.h2_rps = statistics.median(r.h2_rps for r in runs)
        m.h2_mean_ms = statistics.median(r.h2_mean_ms for r in runs)
        m.h2_cpu_us = statistics.median(r.h2_cpu_us for r in runs)
        for key in BROWSER_SCALARS:
            setattr(m, key, statistics.median(getattr(r, key) for r in runs))
        if runs[0].ws8441:
            m.ws8441 = {k: statistics.median(r.ws8441[k] for r in runs) for k in runs[0].ws8441}
        for size in runs[0].ws:
            m.ws[size] = {
                key: statistics.median(r.ws[size][key] for r in runs) for key in runs[0].ws[size]
            }
        idle = [r for r in runs if r.idle_open]
        if idle:
            m.idle_rss_per_ws, m.idle_open = idle[0].idle_rss_per_ws, idle[0].idle_open
            m.idle_rss_per_stream = idle[0].idle_rss_per_stream
            m.idle_streams = idle[0].idle_streams
        m.notes.append(f"median of {len(runs)} round(s)")
        out.append(m)
    return out


def table(results: list[Result]) -> str:
    base = next((r for r in results if r.name == "nginx"), None)

    def ratio(value: float, ref: float) -> str:
        return f"{value / ref:.2f}x" if ref else "-"

    rows = [
        "| proxy | HTTP req/s | HTTP p99 ms | HTTP CPU us/req | HTTP/2 req/s | HTTP/2 mean ms | "
        "HTTP/2 CPU us/req | WS 64B msg/s | p50/p99 us | WS 64B CPU us/msg | WS 4KiB msg/s | "
        "p50/p99 us | WS 4KiB CPU us/msg | idle KiB/WS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def ws_cells(w: dict[str, float]) -> str:
        return (
            f"{w.get('msgs_per_s', 0):.0f} | {w.get('p50_us', 0):.0f}/{w.get('p99_us', 0):.0f} | "
            f"{w.get('cpu_us', 0):.1f}"
        )

    for r in results:
        rows.append(
            f"| {r.name} | {r.http_rps:.0f} | {r.http_p99_ms:.2f} | {r.http_cpu_us:.1f} | "
            f"{r.h2_rps:.0f} | {r.h2_mean_ms:.2f} | {r.h2_cpu_us:.1f} | "
            f"{ws_cells(r.ws.get(64, {}))} | {ws_cells(r.ws.get(4096, {}))} | "
            f"{r.idle_rss_per_ws / 1024:.1f} |"
        )
    if base is not None:
        rows += [
            "",
            "Ratios to nginx (CPU: lower is better; throughput: higher is better):",
            "",
            "| proxy | HTTP CPU/req | HTTP/2 CPU/req | WS 64B CPU/msg | WS 4KiB CPU/msg | "
            "idle RSS/WS | HTTP req/s | HTTP/2 req/s | WS 64B msg/s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results:
            rows.append(
                f"| {r.name} | {ratio(r.http_cpu_us, base.http_cpu_us)} | "
                f"{ratio(r.h2_cpu_us, base.h2_cpu_us)} | "
                f"{ratio(r.ws[64]['cpu_us'], base.ws[64]['cpu_us'])} | "
                f"{ratio(r.ws[4096]['cpu_us'], base.ws[4096]['cpu_us'])} | "
                f"{ratio(r.idle_rss_per_ws, base.idle_rss_per_ws)} | "
                f"{ratio(r.http_rps, base.http_rps)} | {ratio(r.h2_rps, base.h2_rps)} | "
                f"{ratio(r.ws[64]['msgs_per_s'], base.ws[64]['msgs_per_s'])} |"
            )
    return "\n".join([*rows, "", *browser_table(results), "", *churn_table(results)])


def churn_table(results: list[Result]) -> list[str]:
    """What a reconnect storm costs: new WebSockets and new connections, against nginx."""
    base = next((r for r in results if r.name == "nginx"), None)

    def ratio(value: float, ref: float) -> str:
        return f"{value / ref:.2f}x" if value and ref else "n/a"

    rows = [
        "Reconnect storms (a new client connection each):",
        "",
        "| proxy | WS handshakes/s | p99 us | CPU us/handshake | vs nginx | 1 req/conn req/s | "
        "CPU us/req | vs nginx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r.name} | {r.hs_per_s:.0f} | {r.hs_p99_us:.0f} | {r.hs_cpu_us:.1f} | "
            f"{ratio(r.hs_cpu_us, base.hs_cpu_us if base else 0)} | {r.close_rps:.0f} | "
            f"{r.close_cpu_us:.1f} | {ratio(r.close_cpu_us, base.close_cpu_us if base else 0)} |"
        )
    return rows


def browser_table(results: list[Result]) -> list[str]:
    """The paths a browser on an https:// origin takes, and issue 16's ratios for wslb."""

    def num(value: float, fmt: str = ".0f") -> str:
        return format(value, fmt) if value else "n/a"

    rows = [
        "Browser paths (HTTP/2 by ALPN; measured as h2c):",
        "",
        "| proxy | HTTP/2→h2c req/s | mean ms | CPU us/req | polling HTTP/1.1 req/s | "
        "CPU us/req | polling HTTP/2 req/s | CPU us/req | RFC 8441 WS 64B msg/s | p50/p99 us | "
        "CPU us/msg | idle KiB/stream |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        w = r.ws8441
        rows.append(
            f"| {r.name} | {num(r.h2c_rps)} | {num(r.h2c_mean_ms, '.2f')} | "
            f"{num(r.h2c_cpu_us, '.1f')} | {num(r.poll1_rps)} | {num(r.poll1_cpu_us, '.1f')} | "
            f"{num(r.poll2_rps)} | {num(r.poll2_cpu_us, '.1f')} | {num(w.get('msgs_per_s', 0))} | "
            + (f"{w['p50_us']:.0f}/{w['p99_us']:.0f}" if w else "n/a")
            + f" | {num(w.get('cpu_us', 0), '.1f')} | {num(r.idle_rss_per_stream / 1024, '.1f')} |"
        )
    wslb = next((r for r in results if r.name == "wslb"), None)
    nginx = next((r for r in results if r.name == "nginx"), None)
    if wslb is None:
        return rows

    def ratio(value: float, ref: float) -> str:
        return f"{value / ref:.2f}x" if value and ref else "n/a"

    w = wslb.ws8441
    rows += [
        "",
        "wslb against issue 16's targets:",
        "",
        "| ratio | measured | target |",
        "|---|---|---|",
        f"| HTTP/2 CPU/req, wslb / nginx | "
        f"{ratio(wslb.h2_cpu_us, nginx.h2_cpu_us if nginx else 0)} | ≤ 1.2x |",
        f"| RFC 8441 WS 64B CPU/msg, / wslb HTTP/1.1 WS | "
        f"{ratio(w.get('cpu_us', 0), wslb.ws.get(64, {}).get('cpu_us', 0))} | ≤ 1.3x |",
        f"| RFC 8441 WS 64B msg/s, / wslb HTTP/1.1 WS | "
        f"{ratio(w.get('msgs_per_s', 0), wslb.ws.get(64, {}).get('msgs_per_s', 0))} | ≥ 0.8x |",
        f"| polling CPU/req, HTTP/2 / HTTP/1.1 | {ratio(wslb.poll2_cpu_us, wslb.poll1_cpu_us)} "
        "| ≤ 1.0x |",
        f"| idle RSS, RFC 8441 stream / HTTP/1.1 WS | "
        f"{ratio(wslb.idle_rss_per_stream, wslb.idle_rss_per_ws)} | ≤ 2x |",
    ]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--only", default="nginx,haproxy,wslb")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    results = bench(args.only.split(","), args.seconds, args.idle, args.rounds)
    text = table(results)
    print("\n" + text)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"{stamp}.md").write_text(text + "\n")
    (out / f"{stamp}.json").write_text(json.dumps([r.__dict__ for r in results], indent=1))
    print(f"\nwritten to bench/results/{stamp}.md")


if __name__ == "__main__":
    main()
