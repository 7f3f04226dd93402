"""One proxied request: ``Exchange`` carries a request from a downstream (an HTTP/1.1 connection
or an HTTP/2 stream) to one endpoint (an HTTP/1.1 connection or an HTTP/2 stream) and the
response back, through the route's middlewares:

    activate: route (404) -> limits (413) -> WebSocket checks (400/426) -> pick endpoint (503)
    connect:  pooled or multiplexed connection, else a new one (refused: one retry elsewhere,
              then 502; too slow: 504); a dead pooled connection is replaced transparently for
              idempotent requests without a body
    send:     head (hop-by-hop removed, X-Forwarded-* set) and the body, streamed as it arrives
    respond:  1xx relayed; the final head and body handed to the downstream, which frames them
    upgrade:  101 (HTTP/1.1) or 200 to an extended CONNECT (RFC 8441): both sides become a Tunnel

Both sides are duck-typed (:class:`Downstream`, :class:`Upstream`): the exchange never sees bytes
of a wire format, only heads, body pieces and ends. Backpressure: a full upstream write buffer
pauses reading from the client and vice versa.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import TYPE_CHECKING, Protocol

from wslb.balancer.endpoints import EndpointState
from wslb.errors import (
    BadGateway,
    Forbidden,
    GatewayTimeout,
    HTTPError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from wslb.middleware.templates import RequestContext
from wslb.proto.engineio import (
    UNKNOWN_SESSION,
    NotAnOpenPacket,
    query_params,
    replace_sid,
    rewrite_open_packet,
)
from wslb.proto.headers import forward_request_headers, forward_response_headers
from wslb.proto.http1 import REASON_PHRASES, Lines, RequestHead, ResponseHead, field, find_field
from wslb.proto.proxy_protocol import ProxyInfo
from wslb.proto.websocket import accept_value, validate_handshake
from wslb.server import access
from wslb.server.limits import NO_DESCRIPTORS, no_descriptor
from wslb.server.tunnel import Tunnel, proxy_header
from wslb.server.upstream import UpstreamHTTP, open_upstream

if TYPE_CHECKING:
    from wslb.server.pool import Pool
    from wslb.server.runtime import BackendState, Gauge, ListenerState, RouteState, Runtime

log = logging.getLogger("wslb.http")

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
PENDING_BODY_LIMIT = 256 * 1024  # body bytes held while an exchange waits for its upstream

# reasons a downstream stopped reading from its client (a bit mask)
P_UPSTREAM = 1  # the upstream write buffer is full
P_QUEUE = 2  # too many pipelined requests or too much body held
P_UPGRADE = 4  # waiting for the upgrade answer
P_DONE = 8  # the connection is closing or the parser stopped

# exchange states
S_QUEUED, S_CONNECTING, S_SENT, S_RESPONDING, S_DONE, S_TUNNEL = range(6)


class Downstream(Protocol):
    """The client side of an exchange: an HTTP/1.1 connection or an HTTP/2 stream. It frames
    what the exchange sends and reports the request body through ``Exchange.on_body``."""

    cid: str
    loop: asyncio.AbstractEventLoop
    runtime: Runtime
    listener: ListenerState
    client_addr: tuple[str, int]
    client_ip: bytes
    local_addr: tuple[str, int]
    trusted: bool
    held: bytes  # a response head waiting for body bytes (flushed after an upstream read)
    makes_ws_key: bool  # WebSocket requests arrive as extended CONNECT: wslb makes the key

    @property
    def closing(self) -> bool: ...
    @property
    def write_paused(self) -> bool: ...

    def pause(self, reason: int) -> None: ...
    def resume(self, reason: int) -> None: ...
    def start_response(
        self,
        status: int,
        reason: bytes,
        lines: Lines,
        length: int | None,
        no_body: bool,
        close: bool,
    ) -> bool: ...
    def response_data(self, data: bytes) -> None: ...
    def end_response(self, trailers: Lines | None = None) -> None: ...
    def flush_response(self) -> None: ...
    def interim_response(self, status: int, reason: bytes, lines: Lines) -> None: ...
    def switching_protocols(self, reason: bytes, lines: Lines, upgrade: bytes) -> None: ...
    def local_response(
        self, status: int, reason: bytes, lines: Lines, body: bytes, length: int, close: bool
    ) -> None: ...
    def exchange_finished(self, ex: Exchange) -> None: ...
    def abort_response(self) -> None: ...
    def become_tunnel(self, ex: Exchange, tunnel: Tunnel, up: Upstream, tail: bytes) -> None: ...


class Upstream(Protocol):
    """The endpoint side of an exchange: an HTTP/1.1 connection (pooled between exchanges) or
    one stream of a multiplexed HTTP/2 connection. It reports the response to the exchange
    through ``on_response_head/body/end`` and ``on_upstream_upgrade``."""

    endpoint: EndpointState
    pool: Pool | None
    reused: bool
    h2: bool  # an HTTP/2 stream: an upgrade is an extended CONNECT (no Accept to check)

    @property
    def write_paused(self) -> bool: ...
    @property
    def transport(self) -> asyncio.Transport | None: ...  # what a tunnel relays to, once upgraded

    @property
    def response_head(self) -> ResponseHead: ...
    def attach(self, exchange: Exchange) -> None: ...
    def detach(self) -> None: ...
    def close(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def send_head(self, ex: Exchange, lines: Lines) -> None: ...
    def send_body(self, data: bytes) -> None: ...
    def end_body(self, trailers: Lines | None) -> None: ...
    def flush(self) -> None: ...
    def forbid_reuse(self) -> None: ...


# nginx add_header adds to these statuses unless "always" is given
_ADD_HEADER_STATUSES = frozenset({200, 201, 204, 206, 301, 302, 303, 304, 307, 308})


Address = tuple[str, int]


def addresses(
    transport: asyncio.BaseTransport, listener: ListenerState, proxy: ProxyInfo | None
) -> tuple[Address, Address, bool]:
    """A client connection's (client, local) addresses and whether its peer is a trusted
    proxy: the socket's, or what a PROXY header said (the peer is then the proxy)."""
    peer = transport.get_extra_info("peername")
    local = transport.get_extra_info("sockname")
    client: Address = (peer[0], peer[1]) if peer else ("0.0.0.0", 0)
    here: Address = (local[0], local[1]) if local else ("0.0.0.0", 0)
    trusted = listener.is_trusted(client[0])
    if proxy is not None and proxy.source is not None:
        client = proxy.source
        if proxy.destination is not None:
            here = proxy.destination
    return client, here, trusted


ACME_CHALLENGE_PATH = "/.well-known/acme-challenge/"


class Limited(HTTPError):
    """A rate or connection limit (ingress-nginx answers 503 unless told otherwise)."""

    def __init__(self, status: int, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail, headers=[(b"Retry-After", b"%d" % retry_after)])
        self.status = status
        self.reason = REASON_PHRASES.get(status, b"Unknown").decode()


class Exchange:
    """One request and its response. Attributes start at the class-level defaults below and
    are only set when they change: a plain GET touches a handful of them."""

    state = S_QUEUED
    route: RouteState | None = None
    endpoint: EndpointState | None = None
    failed_endpoint: EndpointState | None = None
    up: Upstream | None = None
    task: asyncio.Task[None] | None = None
    error: HTTPError | None = None
    attempts = 0
    counted = False  # the endpoint's active count includes this exchange
    reused = False  # the upstream connection came from the pool
    retried = False
    req_done = False  # the whole request was received from the client
    req_sent = False  # ... and written upstream
    resp_started = False  # response bytes went to the client
    close_after = False
    activated = False
    is_upgrade = False
    tunnel_slot: Gauge | None = None  # a place under the backend's tunnel cap, held
    interim = False
    up_until_close = False
    up_progress = False
    body_received = 0
    buffered: list[bytes] | tuple[()] = ()  # body held until the upstream is ready
    buffered_size = 0
    deadline = 0.0
    upstream_paused_since = 0.0
    set_cookie: str | None = None  # affinity cookie value to send with the response
    conn_key: str | None = None  # client address holding a connection-limit slot
    preflight = False  # answered as a CORS preflight
    pinned: EndpointState | None = None  # the endpoint an Engine.IO sid names
    eio_version: bytes | None = None  # set on a polling handshake whose open packet we tag
    eio_head: tuple[int, bytes, list[bytes], int | None] | None = None  # held response head
    eio_buf = b""
    sent_at = 0.0
    ws_key: bytes | None = None  # the Sec-WebSocket-Key wslb made for an extended CONNECT
    status = 0  # of the response to the client (access log)
    resp_bytes = 0  # response body bytes to the client

    def __init__(self, down: Downstream, head: RequestHead | None) -> None:
        self.down = down
        self.head = head if head is not None else RequestHead()
        self.born = time.monotonic()

    # ------------------------------------------------------------------ request side
    def activate(self) -> None:
        """This exchange is now first in line on its connection (once: what it takes, such as
        limits and counts, it takes once)."""
        if self.activated:
            return
        self.activated = True
        if self.error is not None:
            self.local_reply(self.error)
            return
        down = self.down
        head = self.head
        if head.method == b"CONNECT":
            self.local_reply(MethodNotAllowed("CONNECT: wslb is not a forward proxy"))
            return
        listener = down.listener
        acme = down.runtime.acme
        if acme is not None and head.path.startswith(ACME_CHALLENGE_PATH):
            # HTTP-01 (RFC 8555 8.3), before access lists and any redirect to HTTPS (what is
            # not a pending token goes on to the routes)
            answer = acme.storage.http01(head.path[len(ACME_CHALLENGE_PATH) :])
            if answer is not None and head.method in (b"GET", b"HEAD"):
                self.local_response(200, [b"Content-Type: text/plain\r\n"], answer)
                return
        if listener.access is not None and not listener.access.permits(down.client_addr[0]):
            self.local_reply(Forbidden(f"{down.client_addr[0]} is not allowed on this listener"))
            return
        if listener.redirect is not None:
            self.redirect(listener.redirect.code, listener.redirect.port)
            return
        route = listener.routes.match(head.host, head.path)
        if route is None:
            self.local_reply(NotFound(f"no route for {head.host}{head.path}"))
            return
        self.route = route
        if route.cors is not None and head.method == b"OPTIONS":
            # Preflights are answered first, as nginx's rewrite phase does for ingress-nginx.
            lines = route.cors.response_lines(head.header(b"origin"))
            if lines:
                self.preflight = True
                lines.append(b"Content-Type: text/plain charset=UTF-8\r\n")
                lines.append(b"Content-Length: 0\r\n")
                self.local_response(204, lines)
                return
        if route.access is not None and not route.access.permits(down.client_addr[0]):
            self.local_reply(Forbidden(f"{down.client_addr[0]} is not allowed on this route"))
            return
        if route.redirect is not None and not listener.tls and not self._forwarded_https(head):
            self.redirect(route.redirect.code, route.redirect.port)
            return
        if route.engineio is not None and b"EIO=" in head.query and not self._engineio(route):
            return
        if (route.rps is not None or route.rpm is not None or route.conn_limit is not None) and (
            not self._within_limits(route)
        ):
            return
        limit = route.max_body_size
        if limit and (
            (head.content_length is not None and head.content_length > limit)
            or self.body_received > limit
        ):
            self.local_reply(PayloadTooLarge(f"body over {limit} bytes"))
            return
        if head.upgrade is not None and head.upgrade.strip().lower() == b"h2c":
            # RFC 9113 3.1 drops the h2c upgrade; a server may ignore any Upgrade (RFC 9110
            # 7.8): answer over HTTP/1.1, as nginx and HAProxy do
            head.upgrade = None
        if head.upgrade is not None:
            try:
                validate_handshake(head)
            except HTTPError as exc:
                self.local_reply(exc)
                return
            self.is_upgrade = True
        if (route.admission is not None or route.backend.max_tunnels is not None) and (
            not self._admitted(route)
        ):
            return
        self.connect()

    def _engineio(self, route: RouteState) -> bool:
        """Engine.IO requests: a tagged sid pins the endpoint (or is an unknown session); a
        polling handshake gets its open packet tagged. False when answered here."""
        assert route.engineio is not None
        head = self.head
        params = query_params(head.query)
        wire = params.get(b"sid")
        if wire is not None:
            now = self.down.loop.time()
            found = route.engineio.resolve(wire, route.backend.available(now))
            if found is None:
                return True  # not one of ours: balanced as any request
            ep, sid = found
            if ep is None:
                self.unknown_session(f"sid {wire[:40]!r} names no available endpoint")
                return False
            self.pinned = ep
            head.target = replace_sid(head.target, wire, sid)
            head.query = head.target.partition(b"?")[2]
        elif head.method == b"GET" and params.get(b"transport") == b"polling":
            self.eio_version = params.get(b"EIO", b"4")
        return True

    def unknown_session(self, why: str) -> None:
        """Answer as Engine.IO does for a sid it does not know: the client re-handshakes."""
        log.info("[%s] 400 %s %s: %s", self.down.cid, self._method(), self._target(), why)
        self.local_response(
            400, [b"Content-Type: application/json\r\n"], UNKNOWN_SESSION, reason=b"Bad Request"
        )

    def _within_limits(self, route: RouteState) -> bool:
        ip = self.down.client_addr[0]
        if route.limit_exempt is not None and route.limit_exempt.permits(ip):
            return True
        now = self.down.loop.time()
        for buckets in (route.rps, route.rpm):
            if buckets is not None and not buckets.take(ip, now):
                self.local_reply(Limited(route.limit_status, f"{ip} over the request rate"))
                return False
        if route.conn_limit is not None:
            if not route.conn_limit.acquire(ip):
                self.local_reply(Limited(route.limit_status, f"{ip} over the connection limit"))
                return False
            self.conn_key = ip
        return True

    def _admitted(self, route: RouteState) -> bool:
        """Admission control for new WebSocket and Engine.IO sessions (not for the upgrade of
        a session that exists already): the route's handshake rates, the backend's cap on
        open tunnels."""
        new_session = (self.is_upgrade and self.pinned is None) or self.eio_version is not None
        if not new_session:
            return True
        adm = route.admission
        if adm is not None:
            ip = self.down.client_addr[0]
            wait = adm.admit(ip, self.down.loop.time())
            if wait:
                if self.down.runtime.stats is not None:
                    self.down.runtime.stats.refusal(route.backend.name, "handshake rate")
                status = route.spec.admission.status  # type: ignore[union-attr]
                self.local_reply(Limited(status, f"{ip}: handshake rate exceeded", wait))
                return False
        backend = route.backend
        cap = backend.max_tunnels
        if cap is not None and self.is_upgrade:
            if backend.tunnels.n >= cap:
                if self.down.runtime.stats is not None:
                    self.down.runtime.stats.refusal(backend.name, "max tunnels")
                why = f"backend {backend.name} has {cap} tunnels open"
                self.local_reply(Limited(503, why, backend.spec.retry_after))
                return False
            backend.tunnels.n += 1
            self.tunnel_slot = backend.tunnels
        return True

    def choose(self, backend: BackendState, now: float) -> EndpointState | None:
        """The endpoint for this request: affinity cookie, hash key, or the balancer."""
        route = self.route
        assert route is not None
        exclude = self.failed_endpoint
        aff = route.affinity
        if aff is not None:
            value = aff.read(self.head)
            if aff.persistent:
                ep = aff.endpoint(value, backend.available(now)) if value else None
                if ep is not None and ep is not exclude:
                    return ep
                ep = backend.pick(now, exclude)
                if ep is not None and (exclude is None or aff.spec.change_on_failure):
                    self.set_cookie = aff.token(ep)  # new session, or its endpoint is gone
                return ep
            if value is None:
                value = aff.new_session()
                self.set_cookie = value
            return backend.pick_hashed(aff.ring_key(value), now, exclude)
        if route.hash_by is not None:
            key = route.hash_by.render(self._context())
            return backend.pick_hashed(key, now, exclude)
        return backend.pick(now, exclude)

    def _context(self) -> RequestContext:
        down = self.down
        return RequestContext(self.head, down.listener.scheme, down.client_ip)

    def connect(self) -> None:
        backend = self.route.backend  # type: ignore[union-attr]
        loop = self.down.loop
        route = self.route
        assert route is not None
        if self.pinned is not None:
            if self.failed_endpoint is self.pinned:
                self.unknown_session(f"its endpoint {self.pinned.address} does not answer")
                return
            ep: EndpointState | None = self.pinned
        elif route.affinity is None and route.hash_by is None:
            ep = backend.pick(loop.time(), exclude=self.failed_endpoint)
        else:
            ep = self.choose(backend, loop.time())
        if ep is None:
            if self.failed_endpoint is not None:
                self.local_reply(BadGateway(f"connect to {self.failed_endpoint.address} failed"))
            else:
                self.local_reply(
                    ServiceUnavailable(
                        f"backend {backend.name}: no healthy endpoint",
                        headers=[(b"Retry-After", backend.retry_after)],
                    )
                )
            return
        self.endpoint = ep
        ep.active += 1
        self.counted = True
        if backend.h2 is not None:
            stream = backend.h2.stream_now(ep, self)
            if stream is not None:
                self.attach(stream)
                return
            self.state = S_CONNECTING
            self.task = loop.create_task(self._connect(ep, h2=True))
            return
        if backend.pooling:
            pooled: Upstream | None = backend.pools[ep].get()  # type: ignore[assignment]
            if pooled is not None:
                pooled.reused = True
                self.attach(pooled)
                return
        self.state = S_CONNECTING
        self.task = loop.create_task(self._connect(ep))

    async def _open_http1(self, ep: EndpointState) -> Upstream:
        """A new HTTP/1.1 connection to ``ep`` (TLS and PROXY header as the backend says)."""
        backend = self.route.backend  # type: ignore[union-attr]
        down = self.down
        header = None
        if backend.spec.proxy_protocol is not None:
            header = proxy_header(backend.spec.proxy_protocol, down.client_addr, down.local_addr)
        pool = backend.pools.get(ep)
        _, up = await open_upstream(
            down.loop, lambda: UpstreamHTTP(ep, pool, down.runtime.batch), backend, ep, header
        )
        return up

    async def _connect(self, ep: EndpointState, h2: bool = False) -> None:
        """Open an upstream for this exchange: a new HTTP/1.1 connection, or a stream on a new
        (or soon ready) HTTP/2 connection, within the connect timeout."""
        timeouts = self.route.timeouts  # type: ignore[union-attr]
        h2_conns = self.route.backend.h2  # type: ignore[union-attr]
        try:
            async with asyncio.timeout(timeouts.connect):
                if h2 and h2_conns is not None:
                    up = await h2_conns.stream(ep, self)
                else:
                    up = await self._open_http1(ep)
        except TimeoutError:
            self._connect_failed(ep, f"connect timed out after {timeouts.connect:g}s", timeout=True)
            return
        except (OSError, ssl.SSLError) as exc:
            if exc.errno in NO_DESCRIPTORS:
                self._no_descriptors(exc)
            else:
                self._connect_failed(ep, f"connect failed: {exc}", timeout=False)
            return
        self.task = None
        if self.state != S_CONNECTING:
            up.close()
            return
        ep.record_success()
        self.attach(up)

    def _no_descriptors(self, exc: OSError) -> None:
        """wslb itself is out of file descriptors: not the endpoint's fault (no ejection)."""
        self.task = None
        no_descriptor(self.down.runtime, exc)
        if self.state == S_CONNECTING:
            self._uncount()
            self.local_reply(Limited(503, "wslb is out of file descriptors"))

    def _connect_failed(self, ep: EndpointState, why: str, *, timeout: bool) -> None:
        self.task = None
        backend = self.route.backend  # type: ignore[union-attr]
        backend.endpoint_failed(ep, self.down.loop.time(), why)
        if self.state != S_CONNECTING:
            return
        self._uncount()
        self.attempts += 1
        log.warning("[%s] upstream %s: %s", self.down.cid, ep.address, why)
        if self.attempts < 2:
            self.failed_endpoint = ep
            self.connect()
            return
        if timeout:
            self.local_reply(GatewayTimeout(f"{ep.address}: {why}"))
        else:
            self.local_reply(BadGateway(f"{ep.address}: {why}"))

    def attach(self, up: Upstream) -> None:
        self.up = up
        self.reused = up.reused
        up.attach(self)
        self.state = S_SENT
        if self.down.write_paused:
            up.pause_reading()
        self.send_request()

    def send_request(self) -> None:
        up = self.up
        assert up is not None and self.route is not None
        down = self.down
        head = self.head
        headers = forward_request_headers(
            head,
            client_ip=down.client_ip,
            proto=down.listener.scheme,
            port=down.listener.port_bytes,
            trusted=down.trusted,
        )
        rules = self.route.request_set
        if rules is not None:
            names = {rule.lname for rule in rules}
            headers = [ln for ln in headers if ln[: ln.find(b":")].lower() not in names]
            ctx = self._context()
            headers += [r.prefix + r.template.render(ctx) + b"\r\n" for r in rules]
        up.send_head(self, headers)
        if self.buffered:
            chunks, self.buffered, self.buffered_size = self.buffered, (), 0
            for chunk in chunks:
                up.send_body(chunk)
            self.down.resume(P_QUEUE)
        if self.req_done:
            self.req_sent = True
            up.end_body(head.trailers)
            self.sent_at = now = down.loop.time()
            self.deadline = now + self.route.timeouts.read

    def _request_sent(self) -> None:
        self.req_sent = True
        self.sent_at = self.down.loop.time()
        self.up.end_body(self.head.trailers)  # type: ignore[union-attr]
        if not self.resp_started:
            self.deadline = self.down.loop.time() + self.route.timeouts.read  # type: ignore[union-attr]

    def on_body(self, data: bytes) -> None:
        self.body_received += len(data)
        state = self.state
        if state == S_DONE:
            return
        route = self.route
        limit = (
            route.max_body_size if route is not None else self.down.listener.client.max_body_size
        )
        if limit and self.body_received > limit:
            self.fail(PayloadTooLarge(f"body over {limit} bytes"))
            return
        if (state == S_SENT or state == S_RESPONDING) and not self.req_sent:
            self.up.send_body(data)  # type: ignore[union-attr]
            return
        if self.buffered:
            self.buffered.append(data)
        else:
            self.buffered = [data]
        self.buffered_size += len(data)
        if self.buffered_size > PENDING_BODY_LIMIT:
            self.down.pause(P_QUEUE)

    def on_body_end(self) -> None:
        self.req_done = True
        if self.state in (S_SENT, S_RESPONDING) and not self.req_sent:
            self._request_sent()

    def fail(self, exc: HTTPError) -> None:
        """The request went wrong on the client side (bad framing, too large)."""
        self.close_after = True
        if self.state == S_QUEUED:
            self.error = exc
            return
        if self.state in (S_DONE, S_TUNNEL):
            return
        self.local_reply(exc)

    # ------------------------------------------------------------------ response side
    def on_response_head(self, rh: ResponseHead) -> None:
        status = rh.status
        if status < 200:
            if status == 101:
                return  # the parser stops after this head; on_upstream_upgrade follows
            self.interim = True
            if not self.resp_started:
                self.down.interim_response(status, rh.reason, forward_response_headers(rh))
            return
        down = self.down
        head = self.head
        self.state = S_RESPONDING
        self.status = status
        ep = self.endpoint
        if ep is not None and self.sent_at and self.route.backend.latency_aware:  # type: ignore[union-attr]
            now = down.loop.time()
            ep.observe_latency(now - self.sent_at, now)
        headers = forward_response_headers(rh)
        no_body = head.method == b"HEAD" or status in (204, 304)
        length = rh.content_length
        if not no_body and length is None:
            self.up_until_close = not rh.chunked
        if not rh.keep_alive and self.up is not None:
            self.up.forbid_reuse()
        if not head.keep_alive or down.closing:
            self.close_after = True
        route = self.route
        if route is not None and (route.response_hooks or self.set_cookie is not None):
            headers = self._response_rules(status, headers)
        self.resp_started = True
        self.deadline = 0.0
        if self.eio_version is not None and status == 200 and not no_body:
            # Hold the head until the open packet is in: its sid gets the endpoint's tag, and a
            # Content-Length changes with it.
            self.eio_head = (status, rh.reason, headers, length)
            return
        if down.start_response(status, rh.reason, headers, length, no_body, self.close_after):
            self.close_after = True
        if head.method == b"HEAD":
            # httptools cannot be told the response to a HEAD has no body: finish here and
            # do not reuse the connection.
            self.finish(reusable=False)

    def on_response_body(self, data: bytes) -> None:
        self.resp_bytes += len(data)
        if self.eio_head is not None:
            self.eio_buf += data
            self._tag_open_packet(complete=False)
            return
        self.down.response_data(data)

    def _tag_open_packet(self, *, complete: bool) -> None:
        """Rewrite the sid of the handshake's open packet, then send the held head and body."""
        assert self.eio_head is not None and self.eio_version is not None
        buf = self.eio_buf
        ep = self.endpoint
        engineio = self.route.engineio if self.route is not None else None
        try:
            if ep is None or engineio is None:
                raise NotAnOpenPacket("no endpoint")
            result = rewrite_open_packet(
                buf, self.eio_version, lambda sid: engineio.wire_sid(ep, sid), complete
            )
        except NotAnOpenPacket as exc:
            log.info("[%s] handshake body passed as it is: %s", self.down.cid, exc)
            result = (buf[:0], 0)
        if result is None:
            return  # the open packet is not complete yet
        replacement, consumed = result
        body = replacement + buf[consumed:]
        status, reason, headers, length = self.eio_head
        self.eio_head = None
        self.eio_buf = b""
        if length is not None:
            length += len(replacement) - consumed
        if self.down.start_response(status, reason, headers, length, False, self.close_after):
            self.close_after = True
        if body:
            self.down.response_data(body)

    def flush_head(self) -> None:
        """The upstream's body ended by closing: what is held goes now."""
        if self.eio_head is not None:  # tag what there is of the open packet
            self._tag_open_packet(complete=True)
        self.down.flush_response()

    def on_response_end(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.state != S_RESPONDING:
            return
        if self.eio_head is not None:
            self._tag_open_packet(complete=True)
        up = self.up
        self.down.end_response(up.response_head.trailers if up is not None else None)
        self.finish(reusable=self.req_sent and not self.up_until_close)

    def on_upstream_upgrade(self, up: Upstream, tail: bytes) -> None:
        """The upstream accepted the upgrade (101, or 200 to an extended CONNECT); ``tail`` are
        bytes it sent after the head."""
        rh = up.response_head
        if not self.is_upgrade:
            self._drop_upstream()
            self.local_reply(BadGateway("upstream answered 101 to a request that did not upgrade"))
            return
        down = self.down
        headers = forward_response_headers(rh)
        if self.ws_key is not None and not up.h2:
            # wslb made the key (the client asked by extended CONNECT): check the answer.
            got = find_field(headers, b"sec-websocket-accept")
            if got is None or got.strip() != accept_value(self.ws_key):
                self._drop_upstream()
                self.local_reply(BadGateway("upstream's Sec-WebSocket-Accept does not match"))
                return
        elif up.h2 and self.ws_key is None:
            # The upstream accepted an extended CONNECT; the client asked by Upgrade and
            # expects the Accept of its own key.
            client_key = self.head.header(b"sec-websocket-key") or b""
            headers.append(field(b"Sec-WebSocket-Accept", accept_value(client_key)))
        if self.route is not None and (self.route.response_hooks or self.set_cookie is not None):
            headers = self._response_rules(101, headers)
        down.switching_protocols(rh.reason, headers, rh.upgrade or b"websocket")
        self.resp_started = True
        self.state = S_TUNNEL
        up.detach()
        self.up = None
        assert self.route is not None and self.endpoint is not None
        tunnel = Tunnel(
            down.runtime,
            down.cid,
            "websocket",
            self.endpoint,
            self.route.timeouts.tunnel,
            self.route.backend.name,
        )
        tunnel.client = down.client_addr[0]
        tunnel.request = f"{self._method()} {self._target()} HTTP/{self.head.version}"
        self.counted = False  # the tunnel owns the endpoint's active count now
        if self.conn_key is not None:  # ... and the client's connection-limit slot
            limiter, key = self.route.conn_limit, self.conn_key
            self.conn_key = None
            tunnel.on_close.append(lambda: limiter.release(key))  # type: ignore[union-attr]
        if self.tunnel_slot is not None:  # ... and its place under the backend's tunnel cap
            tunnel.on_close.append(self.tunnel_slot.release)
            self.tunnel_slot = None
        down.become_tunnel(self, tunnel, up, tail)

    def upstream_write_paused(self) -> None:
        self.upstream_paused_since = self.down.loop.time()
        self.down.pause(P_UPSTREAM)

    def upstream_write_resumed(self) -> None:
        self.upstream_paused_since = 0.0
        self.down.resume(P_UPSTREAM)

    def upstream_eof(self) -> None:
        if self.state == S_RESPONDING and self.up_until_close:
            self.flush_head()
            self.down.end_response()
            self.finish(reusable=False)

    def upstream_failed(self, exc: HTTPError) -> None:
        """The upstream sent something unparseable: one log line, the reply's or the abort's."""
        why = f"upstream {self._ep_name()}: {exc}"
        self._drop_upstream()
        if self.state in (S_SENT, S_CONNECTING):
            self.local_reply(BadGateway(why))
        elif self.state == S_RESPONDING:
            self.abort(f"invalid response body: {why}")
        else:
            log.warning("[%s] %s", self.down.cid, why)

    def upstream_lost(self, exc: Exception | None) -> None:
        self.up = None
        state = self.state
        if state in (S_DONE, S_TUNNEL, S_QUEUED, S_CONNECTING):
            return
        if state == S_RESPONDING:
            self.flush_head()
            if self.up_until_close:
                self.down.end_response()
                self.finish(reusable=False)
            else:
                self.abort(f"upstream {self._ep_name()} closed mid-response")
            return
        # S_SENT: nothing of a response arrived yet
        if (
            self.reused
            and not self.retried
            and self.head.method in IDEMPOTENT
            and not self.head.has_body
        ):
            # A pooled connection the backend had closed: try again, transparently.
            self._uncount()
            self.retried = True
            self.reused = False
            self.state = S_QUEUED
            self.connect()
            return
        how = "closed" if exc is None else f"failed ({exc})"
        self.local_reply(BadGateway(f"upstream {self._ep_name()} {how} before responding"))

    # ------------------------------------------------------------------ timers
    def sweep(self, now: float) -> None:
        state = self.state
        if state == S_SENT and self.deadline and now >= self.deadline:
            self.local_reply(
                GatewayTimeout(
                    f"upstream {self._ep_name()} sent no response within "
                    f"{self.route.timeouts.read:g}s"  # type: ignore[union-attr]
                )
            )
        elif state == S_RESPONDING:
            if self.up_progress:
                self.up_progress = False
                self.deadline = now + self.route.timeouts.read  # type: ignore[union-attr]
            elif self.deadline == 0.0:
                self.deadline = now + self.route.timeouts.read  # type: ignore[union-attr]
            elif now >= self.deadline and not self.down.write_paused:
                self.abort(f"upstream {self._ep_name()} stalled mid-response")
        if (
            self.upstream_paused_since
            and state in (S_SENT, S_RESPONDING)
            and now - self.upstream_paused_since >= self.route.timeouts.send  # type: ignore[union-attr]
        ):
            # 504 if no response has started (nginx: proxy_send_timeout), else a cut
            self.local_reply(
                GatewayTimeout(f"upstream {self._ep_name()} stopped reading the request")
            )

    # ------------------------------------------------------------------ endings
    def _ep_name(self) -> str:
        return self.endpoint.address if self.endpoint is not None else "?"

    def _uncount(self) -> None:
        if self.counted and self.endpoint is not None:
            self.endpoint.active -= 1
        self.counted = False

    def _drop_upstream(self) -> None:
        up = self.up
        if up is not None:
            self.up = None
            up.detach()
            up.close()

    def _cancel_connect(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def local_reply(self, exc: HTTPError) -> None:
        """Answer an error from wslb itself, logged once with the connection id."""
        down = self.down
        if self.resp_started:
            self._cancel_connect()
            self._drop_upstream()
            self._uncount()
            self.abort(str(exc))
            return
        status = exc.status
        if status >= 500:
            log.warning("[%s] %d %s %s: %s", down.cid, status, self._method(), self._target(), exc)
        else:
            log.info("[%s] %d %s %s: %s", down.cid, status, self._method(), self._target(), exc)
        if status in (400, 408, 413, 414, 431, 505):
            self.close_after = True
        body = f"{status} {exc.reason}\n".encode()
        lines = [b"Content-Type: text/plain; charset=utf-8\r\n"]
        lines += [field(n, v) for n, v in exc.headers]
        self.local_response(status, lines, body, reason=exc.reason.encode())

    def _forwarded_https(self, head: RequestHead) -> bool:
        """A trusted proxy (a balancer that terminated TLS) says the client came over HTTPS:
        no redirect, as ingress-nginx with use-forwarded-headers (its $pass_access_scheme)."""
        return self.down.trusted and (head.header(b"x-forwarded-proto") or b"").lower() == b"https"

    def redirect(self, code: int, port: int | None) -> None:
        """Send the client to the same URL over HTTPS."""
        down = self.down
        host = self.head.host or down.local_addr[0]
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if port is not None and port != 443:
            name = f"{name}:{port}"
        location = b"https://" + name.encode("latin-1") + self.head.target
        body = b'<html><body>Redirecting to <a href="%s">%s</a></body></html>\n' % (
            location,
            location,
        )
        self.local_response(
            code,
            [b"Location: " + location + b"\r\n", b"Content-Type: text/html\r\n"],
            body,
        )

    def local_response(
        self, status: int, lines: list[bytes], body: bytes = b"", reason: bytes | None = None
    ) -> None:
        """Answer from wslb itself (errors, redirects, CORS preflights); the route's response
        rules apply as to any response."""
        down = self.down
        self._cancel_connect()
        self._drop_upstream()
        self._uncount()
        if not self.req_done or not self.head.keep_alive or down.closing:
            self.close_after = True
        if self.route is not None:
            lines = self._response_rules(status, lines)
        down.local_response(
            status,
            reason or REASON_PHRASES.get(status, b"Unknown"),
            lines,
            body if self.head.method != b"HEAD" else b"",
            len(body),
            self.close_after,
        )
        self.status = status
        self.resp_bytes = len(body)
        self.resp_started = True
        self.state = S_RESPONDING
        self.finish(reusable=False)

    def _response_rules(self, status: int, lines: list[bytes]) -> list[bytes]:
        """The route's response middlewares: CORS, affinity cookie, header rules."""
        route = self.route
        assert route is not None
        if route.cors is not None and not self.preflight:
            lines += route.cors.response_lines(self.head.header(b"origin"))
        if self.set_cookie is not None and route.affinity is not None:
            lines.append(
                route.affinity.set_cookie(
                    self.set_cookie,
                    tls=self.down.listener.tls,
                    user_agent=self.head.header(b"user-agent"),
                    now=time.time(),
                )
            )
        if route.response_set is not None or route.response_add is not None:
            ctx = self._context()
            if route.response_set is not None:
                names = {rule.lname for rule in route.response_set}
                lines = [ln for ln in lines if ln[: ln.find(b":")].lower() not in names]
                lines += [r.prefix + r.template.render(ctx) + b"\r\n" for r in route.response_set]
            if route.response_add is not None:
                success = status < 400 and status in _ADD_HEADER_STATUSES
                lines += [
                    r.prefix + r.template.render(ctx) + b"\r\n"
                    for r in route.response_add
                    if r.always or success
                ]
        return lines

    def _method(self) -> str:
        return self.head.method.decode("latin-1")

    def _target(self) -> str:
        return self.head.target[:200].decode("latin-1")

    def _release_limits(self) -> None:
        key = self.conn_key
        if key is not None:
            self.conn_key = None
            self.route.conn_limit.release(key)  # type: ignore[union-attr]

    def _ended_badly(self, outcome: str) -> None:
        runtime = self.down.runtime
        if runtime.stats is not None:
            runtime.stats.request(self, True)
        if runtime.access_log:
            access.request(self, outcome)

    def _release_tunnel_slot(self) -> None:
        if self.tunnel_slot is not None:
            self.tunnel_slot.release()
            self.tunnel_slot = None

    def finish(self, *, reusable: bool) -> None:
        if self.state == S_DONE:
            return
        self.state = S_DONE
        self._uncount()
        self._release_limits()
        self._release_tunnel_slot()
        up = self.up
        if up is not None:
            self.up = None
            up.detach()
            pool = up.pool
            if (
                reusable
                and pool is not None
                and not self.down.runtime.draining
                and pool.put(up, self.down.loop.time())  # type: ignore[arg-type]
            ):
                if self.down.write_paused:
                    up.resume_reading()  # paused for this client; idle, it must read
            else:
                up.close()
        if self.upstream_paused_since:
            self.upstream_paused_since = 0.0
            self.down.resume(P_UPSTREAM)
        if not self.req_done:
            self.close_after = True
        runtime = self.down.runtime
        if runtime.stats is not None:
            runtime.stats.request(self, False)
        if runtime.access_log:
            access.request(self)
        self.down.exchange_finished(self)

    def abort(self, why: str) -> None:
        """Give up mid-flight: close both connections (a response may be truncated)."""
        log.warning("[%s] aborted %s %s: %s", self.down.cid, self._method(), self._target(), why)
        self._cancel_connect()
        self._drop_upstream()
        self._uncount()
        self._release_limits()
        self._release_tunnel_slot()
        if self.state != S_DONE:
            self._ended_badly(f"aborted: {why}")
        self.state = S_DONE
        self.down.abort_response()

    def client_gone(self) -> None:
        """The client went away (connection closed, stream reset): drop everything."""
        self._cancel_connect()
        self._drop_upstream()
        self._uncount()
        self._release_limits()
        self._release_tunnel_slot()
        if self.state not in (S_DONE, S_TUNNEL):
            self._ended_badly("client gone")
        self.state = S_DONE
