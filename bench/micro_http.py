"""Per-request CPU of wslb's HTTP/1.1 proxy path, without sockets.

A client connection and a pooled upstream connection get stand-in transports that only record
writes; one request and its response are fed through, many times. This isolates the Python
cost of the data path (parsing, routing, balancing, header rewriting, serialisation) from the
system calls, which `bench/run.py` measures against nginx and HAProxy.

    python bench/micro_http.py [N]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.support

from tests.support.transports import FakeTransport

from wslb.config.model import Config
from wslb.server.downstream.h1 import DownstreamHTTP
from wslb.server.state.runtime import Runtime
from wslb.server.upstream.h1 import UpstreamHTTP

REQUEST = (
    b"GET /api/items?id=42 HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: wrk\r\n"
    b"Accept: */*\r\nAccept-Encoding: gzip\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 26 Nov 2026 10:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
)


async def main(n: int) -> None:
    loop = asyncio.get_running_loop()
    config = Config.model_validate(
        {
            "listeners": [{"name": "web", "port": 80, "protocol": "http"}],
            "backends": [
                {
                    "name": "app",
                    "endpoints": ["10.0.0.1:80", "10.0.0.2:80"],
                    "keepalive": {"enabled": True, "max_requests": 10**9},
                },
            ],
            "routes": [{"host": "app.example.com", "backend": "app"}],
        }
    )
    rt = Runtime(config, loop)
    backend = rt.backends["app"]
    ups = {}
    for ep in backend.endpoints:
        up = UpstreamHTTP(ep, backend.pools[ep], rt.batch)
        up.connection_made(FakeTransport(keep=False))
        backend.pools[ep].put(up, 0.0)
        ups[ep] = up
    down = DownstreamHTTP(rt, rt.listeners["web"])
    dt = FakeTransport(keep=False)
    down.connection_made(dt)
    t0 = time.perf_counter()
    for _ in range(n):
        down.data_received(REQUEST)
        ex = down.queue[0]
        up = ex.up
        assert up is not None
        up.data_received(RESPONSE)
        rt.batch.run()  # what the event loop does at the end of an iteration
    elapsed = time.perf_counter() - t0
    print(
        f"{n} requests: {elapsed / n * 1e6:.2f} us each (Python data path, no syscalls); "
        f"{dt.writes / n:.1f} client writes per request"
    )


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
