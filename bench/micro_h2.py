"""Per-request CPU of HTTP/2, without sockets: the codec alone, and wslb's HTTP/2 proxy path.

- ``codec``: a server-side connection of the library alone (``ngh2``, on libnghttp2, which wslb
  runs, and the pure-Python ``h2`` it ran before, for comparison) receives the HEADERS frame of a
  GET as h2load sends it and sends a response HEADERS frame and a DATA frame back, N times, in
  batches of 50 streams (h2load -m 50). The floor under wslb's HTTP/2 cost.
- ``wslb``: the same request frames fed to wslb's ``H2Downstream`` on a stand-in transport,
  proxied to an HTTP/1.1 endpoint on a pooled stand-in connection (as bench/micro_http.py does
  for HTTP/1.1): parsing, routing, balancing, header mapping, both codecs. The two are
  comparable: wslb's HTTP/2 path minus micro_http's is what HTTP/2 costs over HTTP/1.1.

`bench/run.py` measures the whole of it, system calls included, against nginx and HAProxy.

    python bench/micro_h2.py [N]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import ngh2
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.support

from tests.support.transports import FakeTransport

from wslb.config.model import Config
from wslb.server.downstream.h2 import H2Downstream
from wslb.server.state.runtime import Runtime
from wslb.server.upstream.h1 import UpstreamHTTP

REQUEST = [
    (b":method", b"GET"),
    (b":path", b"/api/items?id=42"),
    (b":scheme", b"http"),
    (b":authority", b"app.example.com"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
]
RESPONSE = [
    (b":status", b"200"),
    (b"server", b"nginx"),
    (b"date", b"Thu, 26 Nov 2026 10:00:00 GMT"),
    (b"content-type", b"text/plain"),
    (b"content-length", b"2"),
]
UPSTREAM_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 26 Nov 2026 10:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
)
BATCH = 50  # streams a client has open before it reads responses (h2load -m)


def requests(n: int) -> tuple[bytes, list[bytes]]:
    """The client's preface and the bytes of ``n`` requests, one HEADERS frame each (an
    independent client: ``h2``)."""
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    client.initiate_connection()
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 30})
    client.increment_flow_control_window(1 << 30)
    preface = client.data_to_send()
    frames = []
    for _ in range(n):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, REQUEST, end_stream=True)
        frames.append(client.data_to_send())
        # forget the stream, as if its response had arrived (keeps the client side O(1))
        del client.streams[sid]
    return preface, frames


def codec_ngh2(preface: bytes, frames: list[bytes]) -> float:
    server = ngh2.Connection(ngh2.Role.SERVER)
    server.initiate_connection({ngh2.Setting.MAX_CONCURRENT_STREAMS: 1000})
    server.receive_data(preface)
    server.data_to_send()
    server.events()
    start = time.process_time()
    for i in range(0, len(frames), BATCH):
        for frame in frames[i : i + BATCH]:
            server.receive_data(frame)
            for ev in server.events():
                if type(ev) is ngh2.RequestReceived:
                    server.send_response(ev.stream_id, RESPONSE)
                    server.send_data(ev.stream_id, b"ok", end_stream=True)
        server.data_to_send()
        server.events()
    return time.process_time() - start


def codec_h2(preface: bytes, frames: list[bytes]) -> float:
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    server.initiate_connection()
    server.receive_data(preface)
    server.data_to_send()
    start = time.process_time()
    for i in range(0, len(frames), BATCH):
        for frame in frames[i : i + BATCH]:
            for ev in server.receive_data(frame):
                if type(ev) is h2.events.RequestReceived:
                    server.send_headers(ev.stream_id, RESPONSE)
                    server.send_data(ev.stream_id, b"ok", end_stream=True)
        server.data_to_send()
    return time.process_time() - start


async def proxied(preface: bytes, frames: list[bytes]) -> float:
    """wslb's HTTP/2 -> HTTP/1.1 path: one request at a time (its response ends the stream
    before the next comes), as micro_http."""
    loop = asyncio.get_running_loop()
    config = Config.model_validate(
        {
            "listeners": [{"name": "web", "port": 80, "protocol": "http", "http2": True}],
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
    for ep in backend.endpoints:
        up = UpstreamHTTP(ep, backend.pools[ep], rt.batch)
        up.connection_made(FakeTransport(keep=False))
        backend.pools[ep].put(up, 0.0)
    session = H2Downstream(rt, rt.listeners["web"])
    dt = FakeTransport(keep=False)
    session.connection_made(dt)
    session.data_received(preface)
    rt.batch.run()
    start = time.process_time()
    for frame in frames:
        session.data_received(frame)
        stream = next(iter(session.streams.values()))
        ex = stream.exchange  # type: ignore[attr-defined]
        ex.up.data_received(UPSTREAM_RESPONSE)
        rt.batch.run()  # what the event loop does at the end of an iteration
    took = time.process_time() - start
    assert not session.streams, "a stream did not end"
    return took


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    preface, frames = requests(n)
    rows = [
        (f"codec ngh2 {ngh2.__version__}", codec_ngh2(preface, frames)),
        (f"codec h2 {h2.__version__}", codec_h2(preface, frames)),
        ("wslb HTTP/2 -> HTTP/1.1 (ngh2)", uvloop.run(proxied(preface, frames))),
    ]
    for name, took in rows:
        print(f"{name}: {took / n * 1e6:.1f} us CPU per request ({n} requests)")


if __name__ == "__main__":
    main()
