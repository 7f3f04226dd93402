"""A backend as one worker serves it: its endpoint states (health, ejection, counts), the
balancer's pick and the hash ring, idle pooled connections per endpoint, client TLS and HTTP/2
connections; kept across reloads and endpoint changes (``adopt``, ``set_endpoints``)."""

from __future__ import annotations

import logging
import ssl

from wslb.balancer.endpoints import (
    POLICIES,
    EndpointState,
    available,
    next_change,
    pick_fewest_sessions,
)
from wslb.balancer.ring import HashRing
from wslb.config.model import BackendSpec
from wslb.middleware.limits import Gauge
from wslb.server.core.capacity import share
from wslb.server.core.tls import client_context
from wslb.server.upstream.h1 import UpstreamHTTP
from wslb.server.upstream.h2 import H2Connections
from wslb.server.upstream.pool import Pool

log = logging.getLogger("wslb.server")


class BackendState:
    def __init__(self, spec: BackendSpec, secret: bytes = b"", workers: int = 1) -> None:
        self.spec = spec
        self.secret = secret
        self._ring: HashRing | None = None
        self.name = spec.name
        self.endpoints = [EndpointState(e.host, e.port, e.weight) for e in spec.endpoints]
        for ep, e in zip(self.endpoints, spec.endpoints, strict=True):
            ep.terminating = e.draining
        self._policy = POLICIES[spec.balance]
        self.latency_aware = spec.balance == "ewma"
        self.pooling = spec.keepalive.enabled and spec.proxy_protocol is None
        self.pools: dict[EndpointState, Pool[UpstreamHTTP]] = {}
        if self.pooling:
            ka = spec.keepalive
            self.pools = {
                ep: Pool(ka.max_idle, ka.idle_timeout, ka.max_requests) for ep in self.endpoints
            }
        tls = spec.protocol in ("https", "http2")
        # HTTP/1.1 connections (https; and for an http2 backend, health checks and WebSockets
        # when it does not take extended CONNECT)
        self.ssl_context: ssl.SSLContext | None = client_context(spec.tls) if tls else None
        self.h2: H2Connections | None = None
        if spec.http2:
            h2_tls = client_context(spec.tls, ("h2",)) if spec.protocol == "http2" else None
            self.h2 = H2Connections(self, h2_tls)
        self.server_hostname = spec.tls.server_name
        self._available: list[EndpointState] | None = None
        self._available_until = 0.0
        self.retry_after = str(spec.retry_after).encode()
        self.tunnels = Gauge()  # open tunnels and upgrades under way, this worker
        self.last_gone: list[EndpointState] = []  # what the last endpoint change removed
        self.last_terminating: list[EndpointState] = []  # and what it started draining
        self.max_tunnels = share(spec.max_tunnels, workers)  # this worker's share

    def available(self, now: float) -> list[EndpointState]:
        """The endpoints that may get traffic now (cached until something changes)."""
        avail = self._available
        if avail is None or now >= self._available_until:
            avail = self._available = available(self.endpoints, now)
            self._available_until = next_change(self.endpoints, now)
            self._ring = None
        return avail

    def pick(self, now: float, exclude: EndpointState | None = None) -> EndpointState | None:
        return self._policy(self.available(now), exclude)

    def pick_session(
        self, now: float, exclude: EndpointState | None = None
    ) -> EndpointState | None:
        """The endpoint of a new session (Engine.IO handshake, WebSocket): fewest live sessions
        on a round-robin backend (the default); another policy the backend names, else."""
        if self.spec.balance != "round_robin":
            return self.pick(now, exclude)
        return pick_fewest_sessions(self.available(now), now, exclude)

    def pick_hashed(
        self, key: bytes, now: float, exclude: EndpointState | None = None
    ) -> EndpointState | None:
        """Consistent hashing of ``key`` over the available endpoints."""
        avail = self.available(now)
        ring = self._ring
        if ring is None:
            ring = self._ring = HashRing(avail, self.secret)
        ep = ring.get(key)
        if ep is None or ep is exclude:
            return self.pick(now, exclude)
        return ep

    def set_endpoints(
        self, found: list[tuple[str, int, int]], terminating: frozenset[str] = frozenset()
    ) -> bool:
        """Replace the endpoint set (addresses in ``terminating`` take no new sessions);
        endpoints that stay keep their state. True if changed; ``last_gone`` and
        ``last_terminating`` say what left and what started draining."""
        current = {ep.address: ep for ep in self.endpoints}
        before = [(ep.address, ep.weight, ep.terminating) for ep in self.endpoints]
        new: list[EndpointState] = []
        self.last_terminating = []
        for host, port, weight in found:
            probe = EndpointState(host, port, weight)
            ep = current.pop(probe.address, None) or probe
            ep.weight = weight
            ending = ep.address in terminating
            if ending and not ep.terminating:
                self.last_terminating.append(ep)
            ep.terminating = ending
            if ep not in new:
                new.append(ep)
        self.last_gone = []
        if [(ep.address, ep.weight, ep.terminating) for ep in new] == before:
            return False
        ka = self.spec.keepalive
        for ep in new:
            if self.pooling and ep not in self.pools:
                self.pools[ep] = Pool(ka.max_idle, ka.idle_timeout, ka.max_requests)
        self.last_gone = list(current.values())
        for gone in current.values():
            gone.draining = True
            pool = self.pools.pop(gone, None)
            if pool is not None:
                pool.close_all()
        self.endpoints = new
        self.health_changed()
        return True

    def adopt(self, old: BackendState) -> None:
        """Take over the state of the backend this one replaces (a reload): endpoints that
        stay keep their object (health, ejection, open counts, round-robin position) and, when
        the connection settings did not change, their idle connections."""
        current = {ep.address: ep for ep in old.endpoints}
        endpoints = []
        for ep in self.endpoints:
            kept = current.get(ep.address)
            if kept is not None:
                kept.weight = ep.weight
                if ep.terminating and not kept.terminating:
                    self.last_terminating.append(kept)
                kept.terminating = ep.terminating
                ep = kept
            endpoints.append(ep)
        self.endpoints = endpoints
        self.tunnels = old.tunnels  # the same count: tunnels opened before close into it
        same_conns = (
            old.pooling
            and self.pooling
            and old.spec.protocol == self.spec.protocol
            and old.spec.tls == self.spec.tls
            and old.spec.keepalive == self.spec.keepalive
        )
        fresh = {ep.address: pool for ep, pool in self.pools.items()}
        self.pools = {
            ep: (old.pools.get(ep) if same_conns else None) or fresh[ep.address]
            for ep in endpoints
            if ep.address in fresh
        }
        self.health_changed()

    def retire(self, keep: set[EndpointState]) -> list[EndpointState]:
        """This backend is replaced (a reload): its endpoints that are not in ``keep`` take no
        new sessions, and idle connections no one took over are closed. Returns the endpoints
        that left."""
        gone = []
        for ep in self.endpoints:
            if ep not in keep:
                ep.draining = True
                gone.append(ep)
        return gone

    def health_changed(self) -> None:
        """An endpoint's health or drain state changed: recompute who is available."""
        self._available = None
        self._ring = None

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
