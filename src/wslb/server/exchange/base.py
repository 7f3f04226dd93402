"""The exchange's ground floor: what it holds, what steps see of it, and how it ends.

:class:`Downstream` is the client side of an exchange (an HTTP/1.1 connection, an HTTP/2
stream). :class:`ExchangeBase` carries the state of one request (its fields start at the class
defaults and are set only when they change), the :class:`~wslb.middleware.chain.Request` the
steps see, its holds, and the endings: a local answer, a finished response, an abort, the
client gone. Every ending releases the holds once (see ``core/holds.py``). The request side
(:mod:`.request`) and the response side (:mod:`.exchange`) build on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from wslb.balancer.endpoints import EndpointState
from wslb.errors import (
    HTTPError,
)
from wslb.middleware.chain import Reply
from wslb.middleware.engineio import OpenPacketTagger
from wslb.middleware.templates import RequestContext
from wslb.proto.http1 import REASON_PHRASES, Lines, RequestHead
from wslb.server.core.holds import Holds
from wslb.server.exchange.contract import (
    P_UPSTREAM,
    S_DONE,
    S_QUEUED,
    S_RESPONDING,
    S_TUNNEL,
)
from wslb.server.observe import access_log
from wslb.server.state.listener import ListenerState
from wslb.server.state.route import RouteState
from wslb.server.state.runtime import Runtime
from wslb.server.tunnel.relay import Tunnel
from wslb.server.upstream.base import Upstream

log = logging.getLogger("wslb.http")


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
    def exchange_finished(self, ex: ExchangeBase) -> None: ...
    def abort_response(self) -> None: ...
    def become_tunnel(
        self, ex: ExchangeBase, tunnel: Tunnel, up: Upstream, tail: bytes
    ) -> None: ...


class ExchangeBase:
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
    opened_session = False  # counted as a new session on its endpoint (balancer/endpoints.py)
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
            access_log.request(self)
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

    def _leave_endpoint(self) -> None:
        """The request goes elsewhere (a retry): its endpoint's count is given back now."""
        if self.holds is not None and self.endpoint is not None:
            self.holds.give_back(self.endpoint.leave)

    def connect(self) -> None:
        """Pick an endpoint and send the request there (the request side's, in
        :mod:`.exchange`; the response side calls it for a transparent retry)."""
        raise NotImplementedError

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
            access_log.request(self, outcome)

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
