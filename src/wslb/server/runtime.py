"""Live state of one worker, built from a :class:`~wslb.config.model.Config`.

``Runtime`` owns the backends (endpoint states, pools, client TLS), the per-listener route tables
and the registry of open connections and tunnels (for draining). Specs are never mutated: the
state objects here point at them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from wslb.balancer.endpoints import POLICIES, EndpointState, available, next_change
from wslb.config.model import BackendSpec, ClientSpec, Config, ListenerSpec, RouteSpec, TimeoutsSpec
from wslb.routing.table import RouteEntry, RouteTable
from wslb.server.clock import Sweeper, interval_for
from wslb.server.output import WriteBatch
from wslb.server.pool import Pool
from wslb.server.tls import client_context, server_context

if TYPE_CHECKING:
    from wslb.server.healthcheck import HealthChecker

log = logging.getLogger("wslb.server")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class BackendState:
    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.endpoints = [EndpointState(e.host, e.port, e.weight) for e in spec.endpoints]
        self._policy = POLICIES[spec.balance]
        self.pooling = spec.keepalive.enabled and spec.proxy_protocol is None
        self.pools: dict[EndpointState, Pool] = {}
        if self.pooling:
            ka = spec.keepalive
            self.pools = {
                ep: Pool(ka.max_idle, ka.idle_timeout, ka.max_requests) for ep in self.endpoints
            }
        self.ssl_context: ssl.SSLContext | None = (
            client_context(spec.tls) if spec.protocol == "https" else None
        )
        self.server_hostname = spec.tls.server_name
        self._available: list[EndpointState] | None = None
        self._available_until = 0.0
        self.retry_after = str(spec.retry_after).encode()

    def pick(self, now: float, exclude: EndpointState | None = None) -> EndpointState | None:
        avail = self._available
        if avail is None or now >= self._available_until:
            avail = self._available = available(self.endpoints, now)
            self._available_until = next_change(self.endpoints, now)
        return self._policy(avail, exclude)

    def health_changed(self) -> None:
        """An endpoint's health or drain state changed: recompute who is available."""
        self._available = None

    def endpoint_failed(self, ep: EndpointState, now: float, why: str) -> None:
        p = self.spec.passive
        if ep.record_failure(now, p.max_fails, p.fail_timeout):
            self.health_changed()
            log.warning(
                "backend %s: endpoint %s ejected for %.0fs after %s",
                self.name,
                ep.address,
                p.fail_timeout,
                why,
            )


class RouteState:
    """A route as one listener serves it: backend, merged timeouts, body limit."""

    __slots__ = ("backend", "max_body_size", "spec", "timeouts")

    def __init__(self, spec: RouteSpec, backend: BackendState, client: ClientSpec) -> None:
        self.spec = spec
        self.backend = backend
        self.timeouts: TimeoutsSpec = spec.timeouts.apply(backend.spec.timeouts)
        self.max_body_size = (
            spec.max_body_size if spec.max_body_size is not None else client.max_body_size
        )


class ListenerState:
    def __init__(
        self, spec: ListenerSpec, config: Config, backends: dict[str, BackendState]
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.client = spec.client
        self.tls = spec.protocol == "https"
        self.scheme = b"https" if self.tls else b"http"
        self.port_bytes = str(spec.port).encode()  # replaced by the bound port at start
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in spec.trusted_proxies
        )
        self.backend = backends[spec.backend] if spec.backend else None
        entries = [
            RouteEntry(r.host, r.path, r.path_type, RouteState(r, backends[r.backend], spec.client))
            for r in config.routes
            if r.listeners is None or spec.name in r.listeners
        ]
        self.routes: RouteTable[RouteState] = RouteTable(entries)
        self.ssl_context: ssl.SSLContext | None = None
        if spec.tls is not None:
            self.ssl_context = server_context(spec.tls.all_certificates(), spec.tls.min_version)

    def is_trusted(self, ip: str) -> bool:
        if not self.trusted:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)


class Closable(Protocol):
    """What the runtime can ask an open connection or tunnel to do while draining."""

    def drain(self) -> None: ...
    def force_close(self, reason: str) -> None: ...
    def busy(self) -> bool: ...


class Runtime:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.backends = {b.name: BackendState(b) for b in config.backends}
        self.listeners = {
            lst.name: ListenerState(lst, config, self.backends) for lst in config.listeners
        }
        self.sweeper = Sweeper(loop, interval_for(_smallest_timeout(config)))
        self.batch = WriteBatch(loop)
        for b in self.backends.values():
            for pool in b.pools.values():
                self.sweeper.add(pool)
        self.connections: set[Closable] = set()
        self.draining = False
        self._ids = itertools.count(1)
        self.health: HealthChecker | None = None
        self.on_idle: Callable[[], None] | None = None

    def next_id(self) -> str:
        return f"c{next(self._ids)}"

    def register(self, conn: Closable) -> None:
        self.connections.add(conn)

    def unregister(self, conn: Closable) -> None:
        self.connections.discard(conn)
        if (
            self.draining
            and self.on_idle is not None
            and not any(c.busy() for c in self.connections)
        ):
            self.on_idle()


def _smallest_timeout(config: Config) -> float:
    values: list[float] = []
    for lst in config.listeners:
        c = lst.client
        values += [c.keepalive_timeout, c.header_timeout, c.body_timeout, c.send_timeout]
    for b in config.backends:
        t = b.timeouts
        values += [t.connect, t.read, t.send, t.tunnel, b.keepalive.idle_timeout]
    for r in config.routes:
        values += [v for v in r.timeouts.model_dump().values() if v is not None]
    positive: Sequence[float] = [v for v in values if v > 0]
    return min(positive, default=10.0)
