"""What the access log and the counters read of a request and of a tunnel when it ends. They
are protocols: ``observe`` knows the shape of what it records, not the classes (the exchange
and the tunnel live in higher layers)."""

from __future__ import annotations

from typing import Protocol

from wslb.balancer.endpoints import EndpointState
from wslb.config.model import RouteSpec
from wslb.proto.http1 import RequestHead


class Named(Protocol):
    @property
    def name(self) -> str: ...


class RouteRecord(Protocol):
    @property
    def spec(self) -> RouteSpec: ...
    @property
    def backend(self) -> Named: ...


class ClientRecord(Protocol):
    @property
    def cid(self) -> str: ...
    @property
    def client_addr(self) -> tuple[str, int]: ...


class RequestRecord(Protocol):
    """A request that ended (``wslb.server.exchange.Exchange``)."""

    @property
    def head(self) -> RequestHead: ...
    @property
    def down(self) -> ClientRecord: ...
    @property
    def route(self) -> RouteRecord | None: ...
    @property
    def endpoint(self) -> EndpointState | None: ...
    @property
    def status(self) -> int: ...
    @property
    def body_received(self) -> int: ...
    @property
    def resp_bytes(self) -> int: ...
    @property
    def born(self) -> float: ...
    @property
    def is_upgrade(self) -> bool: ...


class TunnelRecord(Protocol):
    """A tunnel, opened or closed (``wslb.server.tunnel.relay.Tunnel``)."""

    @property
    def cid(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def endpoint(self) -> EndpointState: ...
    @property
    def client(self) -> str: ...
    @property
    def request(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def started(self) -> float: ...
