"""A real HTTP + WebSocket backend for the tests: an ASGI app served by uvicorn.

Run: ``python -m tests.support.backend --name a --ready-file F [--tls-cert C --tls-key K]``.
It binds 127.0.0.1 on a free port and writes ``{"port": N, "pid": P}`` to the ready file.

Routes:
  any path                 JSON echo: server name, method, path, query, headers, body size+sha256
  /bytes/N[?chunked=1]     N bytes (streamed in 64 KiB pieces; Content-Length unless chunked)
  /status/N                an empty response with that status
  /slow?delay=S            waits S seconds before the response head (any path with delay=S too)
  /trailers               a chunked body followed by trailers (x-checksum, grpc-status)
  /page                    an HTML page whose script opens a WebSocket to /ws on its own
                           origin, exchanges 20 messages and puts the result in window.result
  /ws-accepted             {"times": [...]}: when each WebSocket was accepted (monotonic)
  /ws                      WebSocket echo; a text "close:CODE" closes with CODE;
                           "whoami" answers the server name; "bytes:N" answers N bytes;
                           "version" answers the HTTP version the handshake came in

``--server hypercorn`` serves the same app with Hypercorn instead: HTTP/1.1 and HTTP/2 (ALPN
h2 with TLS, prior knowledge in clear) and WebSockets over HTTP/2 streams (RFC 8441).
``--server hypercorn-no8441`` is Hypercorn without RFC 8441: its SETTINGS do not advertise
``SETTINGS_ENABLE_CONNECT_PROTOCOL``, as most HTTP/2 servers (nginx, for one) do not, so a
WebSocket can only reach it as an HTTP/1.1 Upgrade.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import time
from typing import Any

import uvicorn
import uvloop

NAME = os.environ.get("BACKEND_NAME", "backend")
ACCEPTED: list[float] = []  # when each WebSocket was accepted


async def _json(send: Any, data: Any) -> None:
    body = json.dumps(data).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


PAGE = b"""<!doctype html><title>ws</title><body><script>
window.result = null;
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
const got = [];
ws.onopen = () => { for (let i = 0; i < 20; i++) ws.send("message " + i); };
ws.onmessage = (e) => {
  got.push(e.data);
  if (got.length === 20) { ws.send("whoami"); }
  else if (got.length === 21) { window.result = { echoes: got.slice(0, 20), server: got[20] }; }
};
ws.onerror = () => { window.result = { error: true }; };
</script></body>
"""


async def _read_body(receive: Any) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunk = msg.get("body", b"")
        h.update(chunk)
        size += len(chunk)
        if not msg.get("more_body"):
            break
    return size, h.hexdigest()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
        return
    path: str = scope["path"]
    query = scope.get("query_string", b"").decode()
    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    if path.startswith("/bytes/"):
        n = int(path.split("/")[2])
        chunked = params.get("chunked") == "1"
        headers = [(b"content-type", b"application/octet-stream"), (b"x-server", NAME.encode())]
        if not chunked:
            headers.append((b"content-length", str(n).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        block = bytes(range(256)) * 256  # 64 KiB, a recognisable pattern
        sent = 0
        while sent < n:
            piece = block[: min(len(block), n - sent)]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": sent < n})
        if n == 0:
            await send({"type": "http.response.body", "body": b""})
        return
    if path == "/page":
        await _read_body(receive)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/html; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": PAGE})
        return
    if path == "/trailers":
        await _read_body(receive)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"x-server", NAME.encode())],
                "trailers": True,
            }
        )
        await send({"type": "http.response.body", "body": b"part1;", "more_body": True})
        await send({"type": "http.response.body", "body": b"part2", "more_body": False})
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"x-checksum", b"abc123"), (b"grpc-status", b"0")],
                "more_trailers": False,
            }
        )
        return
    if path.startswith("/status/"):
        status = int(path.split("/")[2])
        await _read_body(receive)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"x-server", NAME.encode())],
            }
        )
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/ws-accepted":  # when this backend accepted each WebSocket (monotonic clock)
        await _json(send, {"times": ACCEPTED})
        return
    if path == "/slow" or "delay" in params:
        await asyncio.sleep(float(params.get("delay", "1")))
    size, digest = await _read_body(receive)
    body = json.dumps(
        {
            "server": NAME,
            "method": scope["method"],
            "path": path,
            "query": query,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_size": size,
            "body_sha256": digest,
            "http_version": scope.get("http_version"),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-server", NAME.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    if scope["path"] == "/ws-refuse":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept", "headers": [(b"x-server", NAME.encode())]})
    ACCEPTED.append(time.monotonic())
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            return
        text = msg.get("text")
        data = msg.get("bytes")
        if text is not None:
            if text.startswith("close:"):
                await send({"type": "websocket.close", "code": int(text[6:])})
                return
            if text == "whoami":
                await send({"type": "websocket.send", "text": NAME})
                continue
            if text == "version":
                await send({"type": "websocket.send", "text": str(scope.get("http_version"))})
                continue
            if text.startswith("bytes:"):
                await send({"type": "websocket.send", "bytes": b"x" * int(text[6:])})
                continue
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": data})


def main() -> None:
    global NAME
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument(
        "--server", choices=("uvicorn", "hypercorn", "hypercorn-no8441"), default="uvicorn"
    )
    args = ap.parse_args()
    NAME = args.name
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    if args.server.startswith("hypercorn"):
        _hypercorn(sock, args)
        return
    config = uvicorn.Config(
        app,
        log_level="warning",
        ws_max_size=64 * 1024 * 1024,
        ws_ping_interval=None,
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
                return
            await asyncio.sleep(0.01)
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"port": sock.getsockname()[1], "pid": os.getpid()}, fh)
        os.replace(tmp, args.ready_file)
        await task

    uvloop.run(run())


def _write_ready(path: str, port: int) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"port": port, "pid": os.getpid()}, fh)
    os.replace(tmp, path)


def _hypercorn(sock: socket.socket, args: argparse.Namespace) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    if args.server == "hypercorn-no8441":
        import h2.settings
        from hypercorn.protocol.h2 import H2Protocol

        init = H2Protocol.__init__

        def without_extended_connect(self: Any, *a: Any, **kw: Any) -> None:
            init(self, *a, **kw)
            del self.connection.local_settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL]

        H2Protocol.__init__ = without_extended_connect  # type: ignore[method-assign]

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.loglevel = "WARNING"
    config.websocket_max_message_size = 64 * 1024 * 1024
    config.keep_alive_timeout = 30
    if args.tls_cert:
        config.certfile = args.tls_cert
        config.keyfile = args.tls_key
    port = sock.getsockname()[1]

    async def run() -> None:
        task = asyncio.create_task(serve(app, config))  # type: ignore[arg-type]
        deadline = asyncio.get_running_loop().time() + 20
        while True:  # ready once it accepts connections
            if task.done():
                task.result()
                return
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.02)
                continue
            w.close()
            break
        _write_ready(args.ready_file, port)
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
