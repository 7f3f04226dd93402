"""The reference Socket.IO chat: one pod of it. Several pods share a Redis pub/sub channel
(``socketio.AsyncRedisManager``), so a message said on one pod reaches clients on all pods.

    REDIS_URL=redis://127.0.0.1:6379/0 POD_NAME=pod-1 python examples/chat/app.py --port 9001

Events (client -> server): ``join`` {room, name} -> ack {pod, sid};
``message`` {room, text} -> broadcast ``message`` {room, name, text, pod, ts, id};
``whoami`` -> ack {pod}. Server -> clients: ``presence`` {room, people: [{name, pod}]}.
HTTP: ``/`` the page, ``/static/socket.io.min.js`` the official client, ``/stats`` this pod's
numbers (JSON), ``/healthz``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import socketio
import uvicorn

HERE = Path(__file__).resolve().parent
POD = os.environ.get("POD_NAME", socket.gethostname())
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL = os.environ.get("CHAT_CHANNEL", "wslb-chat")

manager = socketio.AsyncRedisManager(REDIS_URL, channel=CHANNEL)
sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=manager,
    cors_allowed_origins="*",
    ping_interval=25,
    ping_timeout=20,
)
store = aioredis.from_url(REDIS_URL, decode_responses=True)
stats = {"messages": 0, "sessions": 0, "started": time.time()}
rooms_of: dict[str, str] = {}  # sid -> room


def _presence_key(room: str) -> str:
    return f"{CHANNEL}:presence:{room}"


async def _broadcast_presence(room: str) -> None:
    people = await store.hgetall(_presence_key(room))
    await sio.emit(
        "presence",
        {"room": room, "people": sorted((json.loads(v) for v in people.values()), key=str)},
        room=room,
    )


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    stats["sessions"] += 1


@sio.event
async def disconnect(sid: str, *args: Any) -> None:
    stats["sessions"] -= 1
    room = rooms_of.pop(sid, None)
    if room is not None:
        try:
            await store.hdel(_presence_key(room), sid)
            await _broadcast_presence(room)
        except (OSError, aioredis.RedisError):
            pass  # Redis is away: presence catches up on the next join


@sio.event
async def join(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    room = str(data.get("room", "lobby"))[:64]
    name = str(data.get("name", sid))[:64]
    await sio.enter_room(sid, room)
    rooms_of[sid] = room
    await store.hset(_presence_key(room), sid, json.dumps({"name": name, "pod": POD}))
    await _broadcast_presence(room)
    return {"pod": POD, "sid": sid}


@sio.event
async def message(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    room = rooms_of.get(sid) or str(data.get("room", "lobby"))
    stats["messages"] += 1
    payload = {
        "room": room,
        "name": str(data.get("name", ""))[:64],
        "text": str(data.get("text", ""))[:2000],
        "id": data.get("id"),
        "pod": POD,
        "ts": time.time(),
    }
    await sio.emit("message", payload, room=room)
    return {"ok": True, "pod": POD}


@sio.event
async def whoami(sid: str, data: Any = None) -> dict[str, Any]:
    return {"pod": POD, "sid": sid}


async def http_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The non-Socket.IO part: stats and health."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/stats":
        body = json.dumps({"pod": POD, **stats}).encode()
        ctype = b"application/json"
    elif scope["path"] == "/healthz":
        body, ctype = b"ok", b"text/plain"
    else:
        body, ctype = b"not found", b"text/plain"
    status = 404 if body == b"not found" else 200
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


CLIENT_JS = HERE / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
app = socketio.ASGIApp(
    sio,
    other_asgi_app=http_app,
    static_files={
        "/": str(HERE / "static" / "index.html"),
        "/static/socket.io.min.js": str(CLIENT_JS),
    },
)


def _write_ready(path: str, port: int) -> None:
    tmp = path + ".tmp"
    Path(tmp).write_text(json.dumps({"port": port, "pid": os.getpid(), "pod": POD}))
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ready-file", help="write {port, pid} here once serving")
    args = ap.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", loop="uvloop", ws="websockets-sansio", timeout_keep_alive=75
        )
    )

    async def run() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
                return
            await asyncio.sleep(0.01)
        if args.ready_file:
            _write_ready(args.ready_file, sock.getsockname()[1])
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
