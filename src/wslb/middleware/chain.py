"""The step chain: what a request goes through between its head and its endpoint.

A step is a small object built once per listener or per route, from configuration, that looks
at one request and either lets it go on (``None``) or answers it itself (a :class:`Reply`, a
local answer as data), as Envoy's filters do (``decodeHeaders`` returns Continue, or the filter
sends a local reply) and Traefik's middlewares built once per router. A response step rewrites
the header lines of a response (one from the endpoint, or a local answer) on its way out.

Steps see the request through :class:`Request`, the few things of a proxied request they read
or set; a step that takes a resource (a connection-limit slot, a place under a tunnel cap)
registers its release with :meth:`Request.hold`, and every ending of the request gives it back.
The order of the steps lives in one place, ``wslb.server.state.route`` (``route_steps`` and
``listener_steps``, quoted in docs/architecture.md); a route with nothing configured walks an
empty tuple.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from wslb.balancer.endpoints import EndpointState
from wslb.errors import HTTPError
from wslb.middleware.templates import RequestContext
from wslb.proto.http1 import REASON_PHRASES, RequestHead, field

#: statuses after which wslb closes the client connection (the request may be unread)
CLOSING_STATUSES = frozenset({400, 408, 413, 414, 431, 505})


class Limited(HTTPError):
    """A rate or connection limit (ingress-nginx answers 503 unless told otherwise)."""

    def __init__(self, status: int, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail, headers=[(b"Retry-After", b"%d" % retry_after)])
        self.status = status
        self.reason = REASON_PHRASES.get(status, b"Unknown").decode()


class Reply:
    """A local answer: status, header lines, body. ``why`` (for the log line) is set on errors;
    ``close`` closes the client connection after it."""

    __slots__ = ("body", "close", "lines", "reason", "status", "why")

    def __init__(
        self,
        status: int,
        lines: list[bytes],
        body: bytes = b"",
        *,
        reason: bytes | None = None,
        why: str | None = None,
        close: bool = False,
    ) -> None:
        self.status = status
        self.lines = lines
        self.body = body
        self.reason = reason
        self.why = why
        self.close = close

    @classmethod
    def error(cls, exc: HTTPError) -> Reply:
        """The answer to an error of wslb's own: a short text body, the error's headers."""
        lines = [b"Content-Type: text/plain; charset=utf-8\r\n"]
        lines += [field(n, v) for n, v in exc.headers]
        return cls(
            exc.status,
            lines,
            f"{exc.status} {exc.reason}\n".encode(),
            reason=exc.reason.encode(),
            why=str(exc),
            close=exc.status in CLOSING_STATUSES,
        )


class Request(Protocol):
    """What steps read and set of a request being proxied (``wslb.server`` implements it)."""

    head: RequestHead
    pinned: EndpointState | None  # the endpoint an Engine.IO sid names
    eio_version: bytes | None  # a polling handshake whose open packet gets its tag
    preflight: bool  # answered as a CORS preflight
    set_cookie: str | None  # the affinity cookie to send with the response
    is_upgrade: bool  # a valid WebSocket upgrade

    @property
    def client(self) -> str: ...  # the client's address
    @property
    def trusted(self) -> bool: ...  # the peer is a trusted proxy
    @property
    def tls(self) -> bool: ...  # it came over TLS
    @property
    def local_host(self) -> str: ...  # the address it came to
    @property
    def now(self) -> float: ...  # the event loop's clock

    def context(self) -> RequestContext: ...
    def hold(self, release: Callable[[], None]) -> None: ...
    def refused(self, backend: str, limit: str) -> None: ...  # count a refusal (metrics)


class Step(Protocol):
    def on_request(self, request: Request) -> Reply | None: ...


class ResponseStep(Protocol):
    def on_response(self, request: Request, status: int, lines: list[bytes]) -> list[bytes]: ...


class Counting:
    """A step that keeps counts: swept on the worker's clock, and carried over a reload
    (``adopt``) when its configuration did not change."""

    __slots__ = ()

    def sweep(self, now: float) -> None:
        raise NotImplementedError

    def adopt(self, old: object) -> None:
        raise NotImplementedError


class Balancer(Protocol):
    """What a chooser asks of a backend (``wslb.server.state.backend.BackendState``)."""

    name: str

    def available(self, now: float) -> Sequence[EndpointState]: ...
    def pick(self, now: float, exclude: EndpointState | None = None) -> EndpointState | None: ...
    def pick_hashed(
        self, key: bytes, now: float, exclude: EndpointState | None = None
    ) -> EndpointState | None: ...


class Chooser(Protocol):
    """Picks the endpoint of a request instead of the backend's balancer (affinity)."""

    def choose(
        self, request: Request, backend: Balancer, now: float, exclude: EndpointState | None
    ) -> EndpointState | None: ...
