"""The request steps (see :mod:`wslb.middleware.chain`), one class per idea, in the order a
request meets them (``wslb.server.state.route`` compiles which ones a listener and a route have):

    listener:  AcmeChallenge -> Allow -> RedirectHTTPS        (before routing)
    route:     CorsPreflight -> Allow -> RedirectHTTPS -> EngineIORouting -> RateLimits
    session:   HandshakeAdmission -> TunnelCap                (new WebSocket/Engine.IO sessions)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from wslb.config.model import AdmissionSpec, LimitsSpec
from wslb.errors import Forbidden
from wslb.middleware.access import AccessList
from wslb.middleware.admission import Admission
from wslb.middleware.chain import Balancer, Counting, Limited, Reply, Request
from wslb.middleware.cors import Cors
from wslb.middleware.engineio import EngineIOAffinity
from wslb.middleware.limits import Counter, Gauge, TokenBuckets
from wslb.proto.engineio import UNKNOWN_SESSION, query_params, replace_sid

ACME_CHALLENGE_PATH = "/.well-known/acme-challenge/"


class AcmeChallenge:
    """HTTP-01 (RFC 8555 8.3): the key authorization of a pending token, before access lists
    and any redirect to HTTPS; what is not a pending token goes on to the routes."""

    __slots__ = ("answer",)

    def __init__(self, answer: Callable[[str], bytes | None]) -> None:
        self.answer = answer

    def on_request(self, request: Request) -> Reply | None:
        head = request.head
        if not head.path.startswith(ACME_CHALLENGE_PATH):
            return None
        body = self.answer(head.path[len(ACME_CHALLENGE_PATH) :])
        if body is None or head.method not in (b"GET", b"HEAD"):
            return None
        return Reply(200, [b"Content-Type: text/plain\r\n"], body)


class Allow:
    """A source-address access list (a listener's or a route's ``allow``/``deny``): 403."""

    __slots__ = ("access", "where")

    def __init__(self, access: AccessList, where: str) -> None:
        self.access = access
        self.where = where

    def on_request(self, request: Request) -> Reply | None:
        ip = request.client
        if self.access.permits(ip):
            return None
        return Reply.error(Forbidden(f"{ip} is not allowed on this {self.where}"))


class RedirectHTTPS:
    """The same URL over HTTPS. A route's redirect spares requests whose trusted proxy (a
    balancer that terminated TLS) says ``X-Forwarded-Proto: https``, as ingress-nginx does with
    use-forwarded-headers (its ``$pass_access_scheme``)."""

    __slots__ = ("code", "port", "spare_forwarded")

    def __init__(self, code: int, port: int | None, *, spare_forwarded: bool) -> None:
        self.code = code
        self.port = port
        self.spare_forwarded = spare_forwarded

    def on_request(self, request: Request) -> Reply | None:
        head = request.head
        if (
            self.spare_forwarded
            and request.trusted
            and (head.header(b"x-forwarded-proto") or b"").lower() == b"https"
        ):
            return None
        host = head.host or request.local_host
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.port is not None and self.port != 443:
            name = f"{name}:{self.port}"
        location = b"https://" + name.encode("latin-1") + head.target
        body = b'<html><body>Redirecting to <a href="%s">%s</a></body></html>\n' % (
            location,
            location,
        )
        lines = [b"Location: " + location + b"\r\n", b"Content-Type: text/html\r\n"]
        return Reply(self.code, lines, body)


class CorsPreflight:
    """A CORS preflight from an allowed origin is answered here, first among the route's steps,
    as nginx's rewrite phase does for ingress-nginx."""

    __slots__ = ("cors",)

    def __init__(self, cors: Cors) -> None:
        self.cors = cors

    def on_request(self, request: Request) -> Reply | None:
        head = request.head
        if head.method != b"OPTIONS":
            return None
        lines = self.cors.response_lines(head.header(b"origin"))
        if not lines:
            return None
        request.preflight = True
        lines.append(b"Content-Type: text/plain charset=UTF-8\r\n")
        lines.append(b"Content-Length: 0\r\n")
        return Reply(204, lines)


class EngineIORouting:
    """Engine.IO requests: a tagged sid pins its endpoint (the endpoint gets its own sid back),
    or is an unknown session (400, as Engine.IO answers: the client re-handshakes); a polling
    handshake is marked for its open packet to be tagged (:class:`OpenPacketTagger`)."""

    __slots__ = ("affinity", "backend")

    def __init__(self, affinity: EngineIOAffinity, backend: Balancer) -> None:
        self.affinity = affinity
        self.backend = backend

    def on_request(self, request: Request) -> Reply | None:
        head = request.head
        if b"EIO=" not in head.query:
            return None
        params = query_params(head.query)
        wire = params.get(b"sid")
        if wire is not None:
            found = self.affinity.resolve(wire, self.backend.available(request.now))
            if found is None:
                return None  # not one of ours: balanced as any request
            ep, sid = found
            if ep is None:
                return unknown_session(f"sid {wire[:40]!r} names no available endpoint")
            request.pinned = ep
            head.target = replace_sid(head.target, wire, sid)
            head.query = head.target.partition(b"?")[2]
        elif head.method == b"GET" and params.get(b"transport") == b"polling":
            request.eio_version = params.get(b"EIO", b"4")
        return None


def unknown_session(why: str) -> Reply:
    """What Engine.IO answers for a sid it does not know (the connection stays open)."""
    lines = [b"Content-Type: application/json\r\n"]
    return Reply(400, lines, UNKNOWN_SESSION, reason=b"Bad Request", why=why)


class RateLimits(Counting):
    """Per client address, as ingress-nginx's limit-rps / limit-rpm / limit-connections; the
    connection count is held until the request (or the tunnel it became) ends."""

    __slots__ = ("connections", "exempt", "rpm", "rps", "spec")

    def __init__(self, spec: LimitsSpec) -> None:
        self.spec = spec
        self.exempt = AccessList(spec.exempt, ()) if spec.exempt else None
        burst = spec.burst_multiplier
        self.rps = TokenBuckets(spec.rps, spec.rps * burst) if spec.rps else None
        self.rpm = TokenBuckets(spec.rpm / 60, spec.rpm * burst) if spec.rpm else None
        self.connections = Counter(spec.connections) if spec.connections else None

    def on_request(self, request: Request) -> Reply | None:
        ip = request.client
        if self.exempt is not None and self.exempt.permits(ip):
            return None
        now = request.now
        status = self.spec.status
        for buckets in (self.rps, self.rpm):
            if buckets is not None and not buckets.take(ip, now):
                return Reply.error(Limited(status, f"{ip} over the request rate"))
        conns = self.connections
        if conns is not None:
            if not conns.acquire(ip):
                return Reply.error(Limited(status, f"{ip} over the connection limit"))
            request.hold(partial(conns.release, ip))
        return None

    def sweep(self, now: float) -> None:
        for buckets in (self.rps, self.rpm):
            if buckets is not None:
                buckets.sweep(now)

    def adopt(self, old: object) -> None:
        """Keep the counts of the step this one replaces (a reload), if the limits are equal."""
        if isinstance(old, RateLimits) and old.spec == self.spec:
            self.rps, self.rpm, self.connections = old.rps, old.rpm, old.connections


class HandshakeAdmission(Counting):
    """New WebSocket and Engine.IO sessions let through at the route's handshake rates (see
    :mod:`wslb.middleware.admission`); the others get 503/429 with a spreading Retry-After."""

    __slots__ = ("admission", "backend", "spec")

    def __init__(self, spec: AdmissionSpec, admission: Admission, backend: str) -> None:
        self.spec = spec
        self.admission = admission
        self.backend = backend

    def on_request(self, request: Request) -> Reply | None:
        ip = request.client
        wait = self.admission.admit(ip, request.now)
        if not wait:
            return None
        request.refused(self.backend, "handshake rate")
        return Reply.error(Limited(self.spec.status, f"{ip}: handshake rate exceeded", wait))

    def sweep(self, now: float) -> None:
        self.admission.sweep(now)

    def adopt(self, old: object) -> None:
        if isinstance(old, HandshakeAdmission) and old.spec == self.spec:
            self.admission = old.admission


class TunnelCap:
    """A backend's cap on open tunnels (this worker's share): a new WebSocket over it is
    refused with 503; one under it holds a place until its tunnel closes."""

    __slots__ = ("backend", "cap", "retry_after", "tunnels")

    def __init__(self, tunnels: Gauge, cap: int, backend: str, retry_after: int) -> None:
        self.tunnels = tunnels
        self.cap = cap
        self.backend = backend
        self.retry_after = retry_after

    def on_request(self, request: Request) -> Reply | None:
        if not request.is_upgrade:
            return None
        tunnels = self.tunnels
        if tunnels.n >= self.cap:
            request.refused(self.backend, "max tunnels")
            why = f"backend {self.backend} has {self.cap} tunnels open"
            return Reply.error(Limited(503, why, self.retry_after))
        tunnels.n += 1
        request.hold(tunnels.release)
        return None
