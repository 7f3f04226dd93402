"""A small echo backend for the basic example: HTTP requests are answered with what they
carried (as JSON), WebSocket messages are sent back as they came. Built on ``websockets``.

    python examples/basic/echo_backend.py --name one --port 9001
"""

from __future__ import annotations

import argparse
import asyncio
import json
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    def http(connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None  # go on with the WebSocket handshake
        body = json.dumps(
            {
                "backend": args.name,
                "path": request.path,
                "headers": dict(request.headers.raw_items()),
            },
            indent=2,
        ).encode()
        headers = Headers(
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return Response(HTTPStatus.OK, "OK", headers, body)

    async def run() -> None:
        async with serve(echo, "127.0.0.1", args.port, process_request=http):
            await asyncio.Future()

    asyncio.run(run())


if __name__ == "__main__":
    main()
