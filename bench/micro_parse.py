"""Per-request CPU of wslb's HTTP/1.1 request parser alone (httptools plus wslb's checks),
fed one typical keep-alive request per read, medians of 7 runs.

    python bench/micro_parse.py [N]

Run it at two commits (``git stash`` / ``git checkout``) to see what a parser change costs.
"""

from __future__ import annotations

import statistics
import sys
import time

from wslb.proto.http1 import RequestHead, RequestParser

REQUEST = (
    b"GET /socket.io/?EIO=4&transport=polling&t=abc HTTP/1.1\r\nHost: chat.example.com\r\n"
    b"User-Agent: bench\r\nAccept: */*\r\nCookie: route=abc\r\n\r\n"
)


class Sink:
    def on_request_head(self, head: RequestHead) -> None:
        pass

    def on_request_body(self, data: bytes) -> None:
        pass

    def on_request_end(self) -> None:
        pass


def run(n: int) -> float:
    parser = RequestParser(Sink())
    start = time.perf_counter()
    for _ in range(n):
        parser.feed(REQUEST)
    return (time.perf_counter() - start) / n * 1e6


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    runs = [run(n) for _ in range(7)]
    print(f"{statistics.median(runs):.2f} us per request (median of 7 x {n}; min {min(runs):.2f})")
