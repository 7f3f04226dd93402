"""``tcp`` forwarding rules: each client connection gets an endpoint (one retry elsewhere when a
connect fails), the PROXY header if the backend asks for one, then a :class:`Tunnel`. The
connection's place under the limits and the endpoint's count are holds the tunnel takes over."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import cast

from wslb.balancer.endpoints import EndpointState
from wslb.proto import proxy_protocol
from wslb.proto.proxy_protocol import ProxyInfo
from wslb.server.core.capacity import NO_DESCRIPTORS
from wslb.server.core.holds import Holds
from wslb.server.state.backend import BackendState
from wslb.server.state.listener import ListenerState
from wslb.server.state.runtime import Runtime
from wslb.server.tunnel.relay import Tunnel
from wslb.server.upstream.h1 import PendingUpstream, open_upstream

log = logging.getLogger("wslb.tunnel")


class TCPDownstream(asyncio.Protocol):
    """A ``tcp`` forwarding rule: connect to an endpoint, then relay bytes both ways."""

    def __init__(self, runtime: Runtime, listener: ListenerState, proxy: ProxyInfo | None = None):
        self.runtime = runtime
        self.listener = listener
        self.proxy = proxy
        self.cid = runtime.next_id()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.buffer: list[bytes] = []
        self.lost = False
        self.holds = Holds()  # the connection's place, the endpoint's count: the tunnel's later

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        client = self.proxy.source if self.proxy is not None else None
        peer = client or transport.get_extra_info("peername") or ("0.0.0.0", 0)
        slot = self.runtime.admit(self.listener, peer[0])
        if slot is None:
            transport.close()
            return
        self.holds.append(slot.release)
        transport.pause_reading()
        self.task = self.runtime.loop.create_task(self._connect())

    def data_received(self, data: bytes) -> None:  # only before the tunnel starts
        self.buffer.append(data)

    def eof_received(self) -> bool:
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.holds.release_all()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _connect(self) -> None:
        assert self.transport is not None and self.listener.backend is not None
        backend: BackendState = self.listener.backend
        transport = self.transport
        peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
        local = transport.get_extra_info("sockname") or ("0.0.0.0", 0)
        client = (peer[0], peer[1])
        if self.proxy is not None and self.proxy.source is not None:
            client = self.proxy.source
        header = proxy_protocol.header_for(
            backend.spec.proxy_protocol, client, (local[0], local[1])
        )
        loop = self.runtime.loop
        failed: EndpointState | None = None
        for _attempt in range(2):
            ep = backend.pick(loop.time(), exclude=failed)
            if ep is None:
                log.warning("[%s] tcp %s: no healthy endpoint", self.cid, backend.name)
                break
            ep.enter()
            self.holds.append(ep.leave)
            try:
                async with asyncio.timeout(backend.spec.timeouts.connect):
                    up_transport, pending = await open_upstream(
                        loop, PendingUpstream, backend, ep, header
                    )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                self.holds.give_back(ep.leave)
                if exc.errno in NO_DESCRIPTORS:  # wslb's own shortage, not the endpoint's
                    self.runtime.no_descriptor(exc)
                    break
                backend.endpoint_failed(ep, loop.time(), f"connect failed: {exc!r}")
                log.warning("[%s] tcp connect to %s failed: %r", self.cid, ep.address, exc)
                failed = ep
                continue
            ep.record_success()
            if self.lost:  # connection_lost gave back what was held
                up_transport.close()
                return
            tunnel = Tunnel(
                self.runtime, self.cid, "tcp", ep, backend.spec.timeouts.tunnel, backend.name
            )
            tunnel.client = client[0]
            self.holds.move_to(tunnel.holds)  # the connection's place, the endpoint's count
            tunnel.start(
                transport,
                up_transport,
                up_write_paused=False,
                down_write_paused=False,
                client_bytes=b"".join(self.buffer),
                upstream_bytes=b"".join(pending.buffer),
            )
            if pending.eof and tunnel.up is not None:
                tunnel.up.eof_received()
            return
        transport.close()
