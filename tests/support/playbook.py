"""Byte scripts for the proxy path, mitmproxy's "Playbook" style, with no socket.

A :class:`Playbook` is one worker (a real ``Runtime`` from a real configuration) with one client
connection (the real HTTP/1.1 downstream protocol on a :class:`FakeTransport`) and endpoints
that are fake transports too: connecting to one hands the real upstream protocol a fake
transport, or is refused, or never completes, as the test says. A script is a list of steps::

    play.run([
        (">>", "client", b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n"),   # the client sends
        ("<<", "upstream", b"GET / HTTP/1.1\\r\\nHost: a\\r\\n..."),     # what the endpoint gets
        (">>", "upstream", b"HTTP/1.1 200 OK\\r\\n..."),                # the endpoint answers
        ("<<", "client", b"HTTP/1.1 200 OK\\r\\n..."),                  # what the client gets
    ])

``"upstream"`` is the last connection opened (``"upstream 0"`` the first). Each ``<<`` compares
exactly what was written since the last look.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from tests.support.transports import FakeTransport
from wslb.balancer.endpoints import EndpointState
from wslb.config.model import Config
from wslb.server.downstream.h1 import DownstreamHTTP
from wslb.server.exchange import exchange as exchange_module
from wslb.server.state.runtime import Runtime
from wslb.server.upstream.h1 import UpstreamHTTP

Step = tuple[str, str, bytes]


class Endpoint:
    """One connection wslb opened to an endpoint."""

    def __init__(self, ep: EndpointState, transport: FakeTransport, protocol: Any) -> None:
        self.ep = ep
        self.transport = transport
        self.protocol = protocol


class Playbook:
    def __init__(
        self, config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, listener: str = "web"
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.runtime = Runtime(Config.model_validate(config), self.loop)
        self.refuse: set[str] = set()  # endpoint addresses whose connects are refused
        self.hang: set[str] = set()  # ... and whose connects never complete
        self.opened: list[Endpoint] = []
        monkeypatch.setattr(exchange_module, "open_upstream", self._open)
        self.client = FakeTransport()
        self.down = DownstreamHTTP(self.runtime, self.runtime.listeners[listener])
        self.client.set_protocol(self.down)
        self.down.connection_made(self.client)

    async def _open(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Any,
        backend: Any,
        ep: EndpointState,
        header: bytes | None,
    ) -> tuple[FakeTransport, Any]:
        if ep.address in self.refuse:
            raise ConnectionRefusedError(111, "Connection refused")
        if ep.address in self.hang:
            await asyncio.Event().wait()  # the connect timeout ends it
        protocol = factory()
        transport = FakeTransport(peer=(ep.host, ep.port), local=("127.0.0.1", 40000))
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        self.opened.append(Endpoint(ep, transport, protocol))
        return transport, protocol

    # ---- moves
    def endpoint(self, who: str) -> Endpoint:
        _, _, index = who.partition(" ")
        return self.opened[int(index) if index else -1]

    async def settle(self) -> None:
        """Let what the moves started run (connects, close callbacks): bounded yields."""
        for _ in range(10):
            await asyncio.sleep(0)
        self.runtime.batch.run()

    async def send(self, who: str, data: bytes) -> None:
        """``who`` sends: the protocol its transport has now gets the bytes (after an upgrade,
        a tunnel's relay)."""
        transport = self.client if who == "client" else self.endpoint(who).transport
        protocol = transport.get_protocol()
        assert isinstance(protocol, asyncio.Protocol)
        protocol.data_received(data)
        await self.settle()

    async def received(self, who: str) -> bytes:
        await self.settle()
        if who == "client":
            return self.client.take()
        return self.endpoint(who).transport.take()

    async def close(self, who: str) -> None:
        """``who`` closes its connection (the transport reports it to wslb's protocol)."""
        transport = self.client if who == "client" else self.endpoint(who).transport
        transport.close()
        await self.settle()

    async def run(self, script: Sequence[Step]) -> None:
        for n, (op, who, data) in enumerate(script):
            if op == ">>":
                await self.send(who, data)
            elif op == "<<":
                got = await self.received(who)
                assert got == data, f"step {n}: {who} got {got!r}, expected {data!r}"
            else:
                raise ValueError(op)


def http_config(**route: Any) -> dict[str, Any]:
    """One plain listener, one backend of two endpoints (keep-alive on), one route."""
    backend = route.pop("backend", {})
    return {
        "listeners": [{"name": "web", "port": 80, "protocol": "http"}],
        "backends": [
            {
                "name": "app",
                "endpoints": ["10.0.0.1:80", "10.0.0.2:80"],
                "keepalive": {"enabled": True},
                **backend,
            }
        ],
        "routes": [{"backend": "app", **route}],
    }


__all__ = ["Endpoint", "FakeTransport", "Playbook", "UpstreamHTTP", "http_config"]
