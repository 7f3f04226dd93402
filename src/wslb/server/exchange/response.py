"""The response side of an exchange: the endpoint's head (through the response steps) and
body to the client, the Engine.IO open packet tagged on its way, trailers, the upgrade that
hands both connections to a tunnel, what the upstream connection reports (EOF, garbage, a
close), and the read and send timeouts."""

from __future__ import annotations

import logging

from wslb.errors import (
    BadGateway,
    GatewayTimeout,
    HTTPError,
)
from wslb.middleware.engineio import OpenPacketTagger
from wslb.proto.headers import forward_response_headers
from wslb.proto.http1 import ResponseHead, field, find_field
from wslb.proto.websocket import accept_value
from wslb.server.exchange.base import ExchangeBase
from wslb.server.exchange.contract import (
    IDEMPOTENT,
    P_UPSTREAM,
    S_CONNECTING,
    S_RESPONDING,
    S_ROUTING,
    S_SENT,
    S_TUNNEL,
)
from wslb.server.tunnel.relay import Tunnel
from wslb.server.upstream.base import Upstream
from wslb.server.upstream.h1 import UpstreamHTTP

log = logging.getLogger("wslb.http")


class ResponseSide(ExchangeBase):
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
        if self.pinned is not None or self.opened_session:
            ep.session_upgraded()  # the session's tunnel counts it from now on
        down.become_tunnel(self, tunnel, up, tail)
        if isinstance(up, UpstreamHTTP):  # its connection is the relay's (or closed) now
            up.release()

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
