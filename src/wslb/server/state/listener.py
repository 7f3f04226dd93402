"""A listener as one worker serves it: its route table of :class:`RouteState` objects, its
steps before routing, trusted proxies, connection counts (kept across reloads) and TLS context
(kept while its certificates and settings do not change)."""

from __future__ import annotations

import ipaddress
import os
import ssl

from wslb.acme.manager import AcmeManager
from wslb.config.certs import CertificatePair
from wslb.config.model import Config, ListenerSpec
from wslb.routing.table import RouteEntry, RouteTable
from wslb.server.core.capacity import ConnectionCount, ProcessCount, share
from wslb.server.core.ocsp import Stapler
from wslb.server.core.tls import server_context
from wslb.server.state.backend import BackendState
from wslb.server.state.route import RouteState, listener_steps

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ListenerState:
    def __init__(
        self,
        spec: ListenerSpec,
        config: Config,
        backends: dict[str, BackendState],
        secret: bytes = b"",
        previous: ListenerState | None = None,
        process: ProcessCount | None = None,
        acme: AcmeManager | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.client = spec.client
        workers = config.server.workers
        self.max_connections = share(spec.client.max_connections, workers)
        self.max_connections_per_ip = share(spec.client.max_connections_per_ip, workers)
        # Open connections are counted across reloads.
        self.conns: ConnectionCount = (
            previous.conns
            if previous is not None
            else ConnectionCount(process or ProcessCount(1 << 30))
        )
        self.tls = spec.protocol == "https"
        self.scheme = b"https" if self.tls else b"http"
        self.http2 = spec.serves_http2
        self.h2c = self.http2 and not self.tls  # plain listener: HTTP/2 with prior knowledge
        self.port_bytes = str(spec.port).encode()  # replaced by the bound port at start
        self.trusted: tuple[Network, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in spec.trusted_proxies
        )
        self.backend = backends[spec.backend] if spec.backend else None
        self.route_states = [
            RouteState(r, backends[r.backend], spec.client, secret, config.server.workers, self.tls)
            for r in config.routes
            if r.listeners is None or spec.name in r.listeners
        ]
        self.routes: RouteTable[RouteState] = RouteTable(
            RouteEntry(r.spec.host, r.spec.path, r.spec.path_type, r) for r in self.route_states
        )
        self.steps = listener_steps(spec, acme)
        self.ssl_context: ssl.SSLContext | None = None
        self.staplers: list[Stapler] = []  # OCSP, one per certificate that allows it
        self.certificates: list[CertificatePair] = []  # what it serves (for their expiry)
        self.tls_files = _stamps(spec)  # a certificate file replaced in place is a change too
        if previous is not None:
            olds = {(r.spec, r.backend.name): r for r in previous.route_states}
            for route in self.route_states:
                was = olds.get((route.spec, route.backend.name))
                if was is not None:
                    route.adopt(was)
            if (
                previous.spec.tls == spec.tls
                and previous.http2 == self.http2
                and previous.tls_files == self.tls_files
            ):
                self.ssl_context = previous.ssl_context
                self.staplers = previous.staplers
                self.certificates = previous.certificates
        if spec.tls is not None and self.ssl_context is None:
            alpn = ("h2", "http/1.1") if self.http2 else ("http/1.1",)
            self.ssl_context = server_context(
                spec.tls.all_certificates(),
                spec.tls.min_version,
                alpn,
                self.staplers,
                acme if spec.tls.acme else None,
                self.certificates,
            )

    def is_trusted(self, ip: str) -> bool:
        if not self.trusted:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted)


def _stamps(spec: ListenerSpec) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime, size) of the certificate and key files a listener reads."""
    out = []
    for cert in spec.tls.all_certificates() if spec.tls is not None else ():
        for path in (cert.certificate, cert.key):
            if path is not None:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                out.append((path, st.st_mtime_ns, st.st_size))
    return tuple(out)
