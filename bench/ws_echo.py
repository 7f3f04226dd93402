"""WebSocket echo backend for the benchmark: a real RFC 6455 server (handshake, unmasking, close),
kept minimal so the backend costs little next to the proxies being measured.

    python bench/ws_echo.py PORT [PORT ...]

Prints ``listening PORT`` for each port once it is bound (port 0: one the kernel picks).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys

import uvloop
from websockets.speedups import apply_mask  # type: ignore[attr-defined]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Echo(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        t = self.transport
        assert t is not None
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            key = b""
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-key":
                    key = value.strip().encode()
            if not key:
                body = b"ok"
                t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" + body)
                return
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            t.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.open = True
        out = []
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n = int.from_bytes(buf[2:10], "big")
                pos = 10
            if not b1 & 0x80:
                t.close()
                return
            if len(buf) < pos + 4 + n:
                break
            mask = bytes(buf[pos : pos + 4])
            payload = apply_mask(bytes(buf[pos + 4 : pos + 4 + n]), mask)
            del buf[: pos + 4 + n]
            if n < 126:
                header = bytes((b0, n))
            elif n < 65536:
                header = bytes((b0, 126)) + n.to_bytes(2, "big")
            else:
                header = bytes((b0, 127)) + n.to_bytes(8, "big")
            out.append(header)
            out.append(payload)
            if b0 & 0x0F == 0x8:  # close: echo it and finish
                t.writelines(out)
                t.close()
                return
        if out:
            t.writelines(out)


async def main(ports: list[int]) -> None:
    loop = asyncio.get_running_loop()
    for port in ports:
        server = await loop.create_server(Echo, "127.0.0.1", port, backlog=4096, reuse_address=True)
        # the bound port (port 0: the kernel's choice), for whoever waits on this process
        print("listening", server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    uvloop.run(main([int(p) for p in sys.argv[1:]]))
