"""The floor under wslb's HTTP/2 cost: the ``h2`` library alone, without sockets or wslb.

A server-side ``H2Connection`` configured as wslb configures its own (``h2_config``) receives
the HEADERS frame of a GET as h2load sends it, and sends a response HEADERS frame and a DATA
frame back, N times. No proxying, no I/O: whatever wslb adds comes on
top of this. `bench/run.py` measures the whole of it against nginx and HAProxy.

    python bench/micro_h2.py [N]
"""

from __future__ import annotations

import sys
import time

import h2.config
import h2.connection
import h2.events

from wslb.server.core.h2session import h2_config

REQUEST = [
    (":method", "GET"),
    (":path", "/"),
    (":scheme", "http"),
    (":authority", "127.0.0.1:8080"),
    ("user-agent", "h2load nghttp2/1.52.0"),
]
RESPONSE = [
    (b":status", b"200"),
    (b"server", b"nginx"),
    (b"date", b"Thu, 26 Nov 2026 10:00:00 GMT"),
    (b"content-type", b"text/plain"),
    (b"content-length", b"2"),
]
BATCH = 50  # streams a client has open before it reads responses (h2load -m)


def requests(n: int) -> tuple[bytes, list[bytes]]:
    """The client's preface and the bytes of ``n`` requests, one HEADERS frame each."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    preface = client.data_to_send()
    frames = []
    for _ in range(n):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, REQUEST, end_stream=True)
        frames.append(client.data_to_send())
        # forget the stream, as if its response had arrived (keeps the client side O(1))
        del client.streams[sid]
    return preface, frames


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    preface, frames = requests(n)
    server = h2.connection.H2Connection(h2_config(client_side=False))
    server.initiate_connection()
    server.receive_data(preface)
    server.data_to_send()
    start = time.process_time()
    for i in range(0, n, BATCH):
        for frame in frames[i : i + BATCH]:
            for ev in server.receive_data(frame):
                if type(ev) is h2.events.RequestReceived:
                    server.send_headers(ev.stream_id, RESPONSE)
                    server.send_data(ev.stream_id, b"ok", end_stream=True)
        server.data_to_send()
    took = time.process_time() - start
    print(f"h2 {h2.__version__}: {took / n * 1e6:.1f} us CPU per request ({n} requests)")


if __name__ == "__main__":
    main()
