"""One proxied request: ``Exchange`` carries a request from a downstream (an HTTP/1.1 connection
or an HTTP/2 stream) to one endpoint (an HTTP/1.1 connection or an HTTP/2 stream) and the
response back, through the route's middlewares:

    activate: listener steps -> route (404) -> route steps -> body limit (413) -> WebSocket
              checks (400/426) -> session steps -> pick endpoint (503); a step may answer
              (its Reply), see wslb.middleware.chain
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
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from wslb.balancer.endpoints import EndpointState
from wslb.errors import (
    BadGateway,
    GatewayTimeout,
    HTTPError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from wslb.middleware.chain import Limited, Reply
from wslb.middleware.engineio import OpenPacketTagger
from wslb.middleware.steps import unknown_session
from wslb.middleware.templates import RequestContext
from wslb.proto.headers import forward_request_headers, forward_response_headers
from wslb.proto.http1 import REASON_PHRASES, Lines, RequestHead, ResponseHead, field, find_field
from wslb.proto.proxy_protocol import ProxyInfo
from wslb.proto.websocket import accept_value, validate_handshake
from wslb.server import access
from wslb.server.holds import Holds
from wslb.server.limits import NO_DESCRIPTORS, no_descriptor
from wslb.server.tunnel import Tunnel, proxy_header
from wslb.server.upstream import UpstreamHTTP, open_upstream

if TYPE_CHECKING:
    from wslb.server.runtime import ListenerState, RouteState, Runtime

log = logging.getLogger("wslb.http")

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
PENDING_BODY_LIMIT = 256 * 1024  # body bytes held while an exchange waits for its upstream

# reasons a downstream stopped reading from its client (a bit mask)
P_UPSTREAM = 1  # the upstream write buffer is full
P_QUEUE = 2  # too many pipelined requests or too much body held
P_UPGRADE = 4  # waiting for the upgrade answer
P_DONE = 8  # the connection is closing or the parser stopped

# The exchange's states, in the order it goes through them (the one field that says where
# it is; comparisons such as ``state >= S_RESPONDING`` read "a response has started"):
S_QUEUED = 0  # behind another request on its connection
S_ROUTING = 1  # first in line: its steps run, an endpoint is picked
S_CONNECTING = 2  # waiting for a connection to the endpoint
S_SENT = 3  # the head (and what there is of the body) went upstream; no response yet
S_RESPONDING = 4  # a response head went to the client (from the endpoint, or a local answer)
S_TUNNEL = 5  # upgraded: the tunnel owns both connections and the holds
S_DONE = 6  # ended; nothing more happens


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
    reused: bool
    h2: bool  # an HTTP/2 stream: an upgrade is an extended CONNECT (no Accept to check)

    @property
    def write_paused(self) -> bool: ...
    @property
    def transport(self) -> asyncio.Transport | None: ...  # what a tunnel relays to, once upgraded

    @property
    def response_head(self) -> ResponseHead: ...
    def park(self, now: float) -> bool: ...  # back to the pool for the next exchange
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


class Exchange:
    """One request and its response. Attributes start at the class-level defaults below and
    are only set when they change: a plain GET touches a handful of them. It is the
    :class:`~wslb.middleware.chain.Request` the steps see."""

    state = S_QUEUED
    route: RouteState | None = None
    endpoint: EndpointState | None = None
    failed_endpoint: EndpointState | None = None
    up: Upstream | None = None
    task: asyncio.Task[None] | None = None
    error: HTTPError | None = None
    holds: Holds | None = None  # what this exchange must give back when it ends
    attempts = 0
    reused = False  # the upstream connection came from the pool
    retried = False
    req_done = False  # the whole request was received from the client
    req_sent = False  # ... and written upstream
    close_after = False
    is_upgrade = False
    interim = False
    up_until_close = False
    up_progress = False
    body_received = 0
    buffered: list[bytes] | tuple[()] = ()  # body held until the upstream is ready
    buffered_size = 0
    deadline = 0.0
    upstream_paused_since = 0.0
    set_cookie: str | None = None  # affinity cookie value to send with the response
    preflight = False  # answered as a CORS preflight
    pinned: EndpointState | None = None  # the endpoint an Engine.IO sid names
    eio_version: bytes | None = None  # set on a polling handshake whose open packet we tag
    tagger: OpenPacketTagger | None = None  # ... rewriting its body
    held_head: tuple[int, bytes, list[bytes], int | None] | None = None  # ... until it is in
    sent_at = 0.0
    ws_key: bytes | None = None  # the Sec-WebSocket-Key wslb made for an extended CONNECT
    status = 0  # of the response to the client (access log)
    resp_bytes = 0  # response body bytes to the client

    def __init__(self, down: Downstream, head: RequestHead | None) -> None:
        self.down = down
        self.head = head if head is not None else RequestHead()
        self.born = time.monotonic()

    # ------------------------------------------------------------------ what steps see
    @property
    def client(self) -> str:
        return self.down.client_addr[0]

    @property
    def trusted(self) -> bool:
        return self.down.trusted

    @property
    def tls(self) -> bool:
        return self.down.listener.tls

    @property
    def local_host(self) -> str:
        return self.down.local_addr[0]

    @property
    def now(self) -> float:
        return self.down.loop.time()

    def context(self) -> RequestContext:
        down = self.down
        return RequestContext(self.head, down.listener.scheme, down.client_ip)

    def hold(self, release: Callable[[], None]) -> None:
        holds = self.holds
        if holds is None:
            holds = self.holds = Holds()
        holds.append(release)

    def refused(self, backend: str, limit: str) -> None:
        stats = self.down.runtime.stats
        if stats is not None:
            stats.refusal(backend, limit)

    # ------------------------------------------------------------------ request side
    def activate(self) -> None:
        """This exchange is now first in line on its connection: the steps run (once: what
        they take, such as limits and counts, they take once), then an endpoint is picked."""
        if self.state != S_QUEUED:
            return
        self.state = S_ROUTING
        if self.error is not None:
            self.local_reply(self.error)
            return
        head = self.head
        if head.method == b"CONNECT":
            self.local_reply(MethodNotAllowed("CONNECT: wslb is not a forward proxy"))
            return
        listener = self.down.listener
        for step in listener.steps:
            reply = step.on_request(self)
            if reply is not None:
                self.answer(reply)
                return
        route = listener.routes.match(head.host, head.path)
        if route is None:
            self.local_reply(NotFound(f"no route for {head.host}{head.path}"))
            return
        self.route = route
        for step in route.steps:
            reply = step.on_request(self)
            if reply is not None:
                self.answer(reply)
                return
        limit = route.max_body_size
        if limit and (
            (head.content_length is not None and head.content_length > limit)
            or self.body_received > limit
        ):
            self.local_reply(PayloadTooLarge(f"body over {limit} bytes"))
            return
        if head.upgrade is not None:
            if head.upgrade.strip().lower() == b"h2c":
                # RFC 9113 3.1 drops the h2c upgrade; a server may ignore any Upgrade (RFC
                # 9110 7.8): answer over HTTP/1.1, as nginx and HAProxy do
                head.upgrade = None
            else:
                try:
                    validate_handshake(head)
                except HTTPError as exc:
                    self.local_reply(exc)
                    return
                self.is_upgrade = True
        if route.session_steps and (
            (self.is_upgrade and self.pinned is None) or self.eio_version is not None
        ):
            # a new WebSocket or Engine.IO session (not the upgrade of one that exists)
            for step in route.session_steps:
                reply = step.on_request(self)
                if reply is not None:
                    self.answer(reply)
                    return
        self.connect()

    def connect(self) -> None:
        """Pick the endpoint (the pinned one, the route's chooser's, or the balancer's) and
        send the request over a pooled or multiplexed connection, else open one."""
        route = self.route
        assert route is not None
        backend = route.backend
        loop = self.down.loop
        failed = self.failed_endpoint
        pinned = self.pinned
        if pinned is not None:
            if failed is pinned:
                self.answer(unknown_session(f"its endpoint {pinned.address} does not answer"))
                return
            ep: EndpointState | None = pinned
        elif route.chooser is None:
            ep = backend.pick(loop.time(), failed)
        else:
            ep = route.chooser.choose(self, backend, loop.time(), failed)
        if ep is None:
            if failed is not None:
                self.local_reply(BadGateway(f"connect to {failed.address} failed"))
            else:
                self.local_reply(
                    ServiceUnavailable(
                        f"backend {backend.name}: no healthy endpoint",
                        headers=[(b"Retry-After", backend.retry_after)],
                    )
                )
            return
        self.endpoint = ep
        ep.enter()
        self.hold(ep.leave)
        if backend.h2 is not None:
            stream = backend.h2.stream_now(ep, self)
            if stream is not None:
                self.attach(stream)
                return
            self.state = S_CONNECTING
            self.task = loop.create_task(self._connect(route, ep, h2=True))
            return
        if backend.pooling:
            pooled = backend.pools[ep].get()
            if pooled is not None:
                pooled.reused = True
                self.attach(pooled)
                return
        self.state = S_CONNECTING
        self.task = loop.create_task(self._connect(route, ep))

    async def _open_http1(self, route: RouteState, ep: EndpointState) -> Upstream:
        """A new HTTP/1.1 connection to ``ep`` (TLS and PROXY header as the backend says)."""
        backend = route.backend
        down = self.down
        header = proxy_header(backend.spec.proxy_protocol, down.client_addr, down.local_addr)
        pool = backend.pools.get(ep)
        _, up = await open_upstream(
            down.loop, lambda: UpstreamHTTP(ep, pool, down.runtime.batch), backend, ep, header
        )
        return up

    async def _connect(self, route: RouteState, ep: EndpointState, h2: bool = False) -> None:
        """Open an upstream for this exchange: a new HTTP/1.1 connection, or a stream on a new
        (or soon ready) HTTP/2 connection, within the connect timeout."""
        timeouts = route.timeouts
        h2_conns = route.backend.h2
        try:
            async with asyncio.timeout(timeouts.connect):
                if h2 and h2_conns is not None:
                    up = await h2_conns.stream(ep, self)
                else:
                    up = await self._open_http1(route, ep)
        except TimeoutError:
            why = f"connect timed out after {timeouts.connect:g}s"
            self._connect_failed(route, ep, why, timeout=True)
            return
        except (OSError, ssl.SSLError) as exc:
            if exc.errno in NO_DESCRIPTORS:
                self._no_descriptors(exc)
            else:
                self._connect_failed(route, ep, f"connect failed: {exc}", timeout=False)
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
            self.local_reply(Limited(503, "wslb is out of file descriptors"))

    def _connect_failed(
        self, route: RouteState, ep: EndpointState, why: str, *, timeout: bool
    ) -> None:
        self.task = None
        route.backend.endpoint_failed(ep, self.down.loop.time(), why)
        if self.state != S_CONNECTING:
            return
        self.attempts += 1
        log.warning("[%s] upstream %s: %s", self.down.cid, ep.address, why)
        if self.attempts < 2:
            self._leave_endpoint()
            self.failed_endpoint = ep
            self.connect()
        elif timeout:
            self.local_reply(GatewayTimeout(f"{ep.address}: {why}"))
        else:
            self.local_reply(BadGateway(f"{ep.address}: {why}"))

    def _leave_endpoint(self) -> None:
        """The request goes elsewhere (a retry): its endpoint's count is given back now."""
        if self.holds is not None and self.endpoint is not None:
            self.holds.give_back(self.endpoint.leave)

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
        route = self.route
        assert up is not None and route is not None
        down = self.down
        head = self.head
        headers = forward_request_headers(
            head,
            client_ip=down.client_ip,
            proto=down.listener.scheme,
            port=down.listener.port_bytes,
            trusted=down.trusted,
        )
        if route.request_headers is not None:
            headers = route.request_headers.apply(self, headers)
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
            self.deadline = now + route.timeouts.read

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
        up = self.up
        if (state == S_SENT or state == S_RESPONDING) and not self.req_sent and up is not None:
            up.send_body(data)
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
        up = self.up
        if self.state in (S_SENT, S_RESPONDING) and not self.req_sent and up is not None:
            self.req_sent = True
            self.sent_at = now = self.down.loop.time()
            up.end_body(self.head.trailers)
            if self.state == S_SENT and self.route is not None:
                self.deadline = now + self.route.timeouts.read

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
            if self.state < S_RESPONDING:
                self.down.interim_response(status, rh.reason, forward_response_headers(rh))
            return
        down = self.down
        head = self.head
        route = self.route
        assert route is not None
        self.state = S_RESPONDING
        self.status = status
        ep = self.endpoint
        if ep is not None and self.sent_at and route.backend.latency_aware:
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
        for step in route.response_steps:
            headers = step.on_response(self, status, headers)
        self.deadline = 0.0
        if (
            self.eio_version is not None
            and status == 200
            and not no_body
            and route.engineio is not None
            and ep is not None
        ):
            # Hold the head until the open packet is in: its sid gets the endpoint's tag, and a
            # Content-Length changes with it.
            self.tagger = OpenPacketTagger(route.engineio, ep, self.eio_version)
            self.held_head = (status, rh.reason, headers, length)
            return
        if down.start_response(status, rh.reason, headers, length, no_body, self.close_after):
            self.close_after = True
        if head.method == b"HEAD":
            # httptools cannot be told the response to a HEAD has no body: finish here and
            # do not reuse the connection.
            self.finish(reusable=False)

    def on_response_body(self, data: bytes) -> None:
        self.resp_bytes += len(data)
        tagger = self.tagger
        if tagger is not None:
            body = tagger.feed(data)
            if body is not None:
                self._send_held_head(tagger, body)
            return
        self.down.response_data(data)

    def _send_held_head(self, tagger: OpenPacketTagger, body: bytes) -> None:
        """The open packet is tagged: the held head goes, then the body so far."""
        assert self.held_head is not None
        if tagger.error is not None:
            log.info("[%s] handshake body passed as it is: %s", self.down.cid, tagger.error)
        status, reason, headers, length = self.held_head
        self.tagger = self.held_head = None
        if length is not None:
            length += tagger.delta
        if self.down.start_response(status, reason, headers, length, False, self.close_after):
            self.close_after = True
        if body:
            self.down.response_data(body)

    def flush_head(self) -> None:
        """The upstream's body ended by closing: what is held goes now."""
        if self.tagger is not None:  # tag what there is of the open packet
            self._send_held_head(self.tagger, self.tagger.finish())
        self.down.flush_response()

    def on_response_end(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.state != S_RESPONDING:
            return
        if self.tagger is not None:
            self._send_held_head(self.tagger, self.tagger.finish())
        up = self.up
        self.down.end_response(up.response_head.trailers if up is not None else None)
        self.finish(reusable=self.req_sent and not self.up_until_close)

    def on_upstream_upgrade(self, up: Upstream, tail: bytes) -> None:
        """The upstream accepted the upgrade (101, or 200 to an extended CONNECT); ``tail`` are
        bytes it sent after the head. The exchange's holds move to the tunnel."""
        rh = up.response_head
        if not self.is_upgrade:
            self._drop_upstream()
            self.local_reply(BadGateway("upstream answered 101 to a request that did not upgrade"))
            return
        down = self.down
        route = self.route
        ep = self.endpoint
        assert route is not None and ep is not None
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
        for step in route.response_steps:
            headers = step.on_response(self, 101, headers)
        down.switching_protocols(rh.reason, headers, rh.upgrade or b"websocket")
        self.state = S_TUNNEL
        up.detach()
        self.up = None
        tunnel = Tunnel(
            down.runtime, down.cid, "websocket", ep, route.timeouts.tunnel, route.backend.name
        )
        tunnel.client = down.client_addr[0]
        tunnel.request = f"{self._method()} {self._target()} HTTP/{self.head.version}"
        if self.holds is not None:  # the endpoint's count, the limit slots: the tunnel's now
            self.holds.move_to(tunnel.holds)
            self.holds = None
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
        if state != S_SENT and state != S_RESPONDING:
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
            self._leave_endpoint()
            self.retried = True
            self.reused = False
            self.state = S_ROUTING
            self.connect()
            return
        how = "closed" if exc is None else f"failed ({exc})"
        self.local_reply(BadGateway(f"upstream {self._ep_name()} {how} before responding"))

    # ------------------------------------------------------------------ timers
    def sweep(self, now: float) -> None:
        state = self.state
        if state != S_SENT and state != S_RESPONDING:
            return
        route = self.route
        assert route is not None
        read = route.timeouts.read
        if state == S_SENT:
            if self.deadline and now >= self.deadline:
                why = f"upstream {self._ep_name()} sent no response within {read:g}s"
                self.local_reply(GatewayTimeout(why))
        elif self.up_progress:
            self.up_progress = False
            self.deadline = now + read
        elif self.deadline == 0.0:
            self.deadline = now + read
        elif now >= self.deadline and not self.down.write_paused:
            self.abort(f"upstream {self._ep_name()} stalled mid-response")
        if (
            self.upstream_paused_since
            and now - self.upstream_paused_since >= route.timeouts.send
            and self.state in (S_SENT, S_RESPONDING)
        ):
            # 504 if no response has started (nginx: proxy_send_timeout), else a cut
            self.local_reply(
                GatewayTimeout(f"upstream {self._ep_name()} stopped reading the request")
            )

    # ------------------------------------------------------------------ endings
    def local_reply(self, exc: HTTPError) -> None:
        """Answer an error from wslb itself, logged once with the connection id."""
        self.answer(Reply.error(exc))

    def answer(self, reply: Reply) -> None:
        """Answer from wslb itself (a step's reply, an error): an error is logged once; once
        a response has started, only an abort can tell the client."""
        state = self.state
        if state == S_DONE:
            return
        why = reply.why
        if why is not None:
            if state >= S_RESPONDING:
                self.abort(why)
                return
            status = reply.status
            say = log.warning if status >= 500 else log.info
            say("[%s] %d %s %s: %s", self.down.cid, status, self._method(), self._target(), why)
            if reply.close:
                self.close_after = True
        self.local_response(reply.status, reply.lines, reply.body, reply.reason)

    def local_response(
        self, status: int, lines: list[bytes], body: bytes = b"", reason: bytes | None = None
    ) -> None:
        """Send a local answer; the route's response steps apply as to any response."""
        down = self.down
        self._cancel_connect()
        self._drop_upstream()
        if not self.req_done or not self.head.keep_alive or down.closing:
            self.close_after = True
        route = self.route
        if route is not None:
            for step in route.response_steps:
                lines = step.on_response(self, status, lines)
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
        self.state = S_RESPONDING
        self.finish(reusable=False)

    def finish(self, *, reusable: bool) -> None:
        """The response is complete: the upstream goes back to its pool (or is closed)."""
        if self.state == S_DONE:
            return
        self.state = S_DONE
        up = self.up
        if up is not None:
            self.up = None
            up.detach()
            if reusable and not self.down.runtime.draining and up.park(self.down.loop.time()):
                if self.down.write_paused:
                    up.resume_reading()  # paused for this client; idle, it must read
            else:
                up.close()
        self._release()
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
        self._release()
        if self.state != S_DONE:
            self._ended_badly(f"aborted: {why}")
        self.state = S_DONE
        self.down.abort_response()

    def client_gone(self) -> None:
        """The client went away (connection closed, stream reset): drop everything."""
        self._cancel_connect()
        self._drop_upstream()
        self._release()
        if self.state != S_DONE and self.state != S_TUNNEL:
            self._ended_badly("client gone")
        self.state = S_DONE

    def _release(self) -> None:
        """Every ending comes here: what the exchange holds is given back, once."""
        holds = self.holds
        if holds is not None:
            self.holds = None
            holds.release_all()

    def _ended_badly(self, outcome: str) -> None:
        runtime = self.down.runtime
        if runtime.stats is not None:
            runtime.stats.request(self, True)
        if runtime.access_log:
            access.request(self, outcome)

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

    def _ep_name(self) -> str:
        return self.endpoint.address if self.endpoint is not None else "?"

    def _method(self) -> str:
        return self.head.method.decode("latin-1")

    def _target(self) -> str:
        return self.head.target[:200].decode("latin-1")
