"""What nginx, HAProxy and wslb do with the adversarial requests of
tests/integration/test_adversarial.py, each proxying to the same byte-recording backend with
default settings. Prints a Markdown table: the statuses the client got, and how many requests
the backend's bytes parse as (an llhttp parser; -1: bytes it rejects).

    python bench/compare_framing.py > /tmp/framing.md

nginx and haproxy come from the OS packages (bench/run.py installs them).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from tests.integration.test_adversarial import CASES, _count_requests, _exchange  # noqa: E402
from tests.support.raw import RecordingBackend  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(kind: str, port: int, backend: int, work: Path) -> subprocess.Popen[bytes]:
    if kind == "nginx":
        conf = work / "nginx.conf"
        conf.write_text(
            f"worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx-error.log warn;\n"
            "events { worker_connections 1024; }\n"
            f"http {{ access_log off; upstream b {{ server 127.0.0.1:{backend}; }}\n"
            f"  server {{ listen 127.0.0.1:{port};\n"
            "    location / { proxy_pass http://b; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; } } }\n'
        )
        args = ["nginx", "-p", str(work), "-c", str(conf), "-g", "daemon off;"]
    elif kind == "haproxy":
        conf = work / "haproxy.cfg"
        conf.write_text(
            "defaults\n  mode http\n  timeout connect 5s\n  timeout client 5s\n"
            f"  timeout server 5s\nfrontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n"
            f"backend be\n  server s1 127.0.0.1:{backend}\n"
        )
        args = ["haproxy", "-f", str(conf)]
    else:
        conf = work / "wslb.yaml"
        conf.write_text(
            yaml.safe_dump(
                {
                    "listeners": [
                        {"name": "web", "address": "127.0.0.1", "port": port, "protocol": "http"}
                    ],
                    "backends": [
                        {
                            "name": "b",
                            "endpoints": [f"127.0.0.1:{backend}"],
                            "health": {"enabled": False},
                        }
                    ],
                    "routes": [{"backend": "b"}],
                }
            )
        )
        args = [sys.executable, "-m", "wslb", "serve", "-c", str(conf), "--log-level", "error"]
    proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise RuntimeError(f"{kind} did not start")


async def run(kind: str) -> dict[str, str]:
    out = {}
    with tempfile.TemporaryDirectory(prefix="wslb-framing-") as tmp:
        async with RecordingBackend() as backend:
            port = free_port()
            proc = start(kind, port, backend.port, Path(tmp))
            try:
                for case in CASES:
                    before = len(backend.connections)
                    statuses = await _exchange(port, case.data, len(case.statuses))
                    await asyncio.sleep(0.02)
                    counts = [_count_requests(bytes(c.data)) for c in backend.connections[before:]]
                    requests = -1 if -1 in counts else sum(counts)
                    shown = ",".join(map(str, statuses)) or "none"
                    out[case.name] = f"{shown} / {requests}"
            finally:
                proc.terminate()
                proc.wait()
    return out


async def main() -> None:
    os.environ.setdefault("PYTHONPATH", str(ROOT / "src"))
    kinds = ["wslb", "nginx", "haproxy"]
    results = {k: await run(k) for k in kinds}
    print("| case | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for case in CASES:
        print(f"| {case.name} | " + " | ".join(results[k][case.name] for k in kinds) + " |")


if __name__ == "__main__":
    asyncio.run(main())
