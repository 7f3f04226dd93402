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
from wslb.middleware.chain import Limited
from wslb.middleware.steps import unknown_session
from wslb.proto import proxy_protocol
from wslb.proto.headers import forward_request_headers
from wslb.proto.websocket import validate_handshake
from wslb.server.core.capacity import NO_DESCRIPTORS
from wslb.server.core.holds import Holds
from wslb.server.exchange.contract import (
    P_QUEUE,
    PENDING_BODY_LIMIT,
    S_CONNECTING,
    S_DONE,
    S_QUEUED,
    S_RESPONDING,
    S_ROUTING,
    S_SENT,
    S_TUNNEL,
)
from wslb.server.exchange.response import ResponseSide
from wslb.server.state.route import RouteState
from wslb.server.upstream.base import Upstream
from wslb.server.upstream.h1 import UpstreamHTTP, open_upstream

log = logging.getLogger("wslb.http")


class Exchange(ResponseSide):
    """One proxied request: the request side (steps, endpoint, connection, what is sent), on
    the response side (:mod:`.response`) and the ground floor (:mod:`.base`)."""

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
            now = loop.time()
            if self.eio_version is not None or self.is_upgrade:
                # a new session: an Engine.IO handshake, or a WebSocket that no sid pins; it
                # counts there from now on (its upgrade's tunnel takes over the count)
                ep = backend.pick_session(now, failed)
                if ep is not None:
                    ep.session_opened(now)
                    self.opened_session = True
            else:
                ep = backend.pick(now, failed)
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
        ep.active += 1  # EndpointState.enter, inlined: this runs for every request
        holds = self.holds
        if holds is None:
            self.holds = Holds((ep.leave,))
        else:
            holds.append(ep.leave)
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
        header = proxy_protocol.header_for(
            backend.spec.proxy_protocol, down.client_addr, down.local_addr
        )
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
        self.down.runtime.no_descriptor(exc)
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
