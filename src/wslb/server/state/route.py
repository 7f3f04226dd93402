"""A route as one listener serves it, and where its steps are compiled: the order of every
request, session and response step lives in :func:`route_steps` and :func:`listener_steps`
(see ``wslb.middleware.chain``); docs/architecture.md quotes it."""

from __future__ import annotations

from wslb.acme.manager import AcmeManager
from wslb.config.model import ClientSpec, ListenerSpec, RouteSpec, TimeoutsSpec
from wslb.middleware.access import AccessList
from wslb.middleware.admission import Admission
from wslb.middleware.affinity import CookieAffinity
from wslb.middleware.chain import Chooser, Counting, ResponseStep, Step
from wslb.middleware.choosers import CookieChooser, HashChooser
from wslb.middleware.cors import Cors
from wslb.middleware.engineio import EngineIOAffinity
from wslb.middleware.responses import (
    AddHeaders,
    AffinityCookie,
    CorsHeaders,
    HeaderTemplate,
    RequestHeaders,
    SetHeaders,
)
from wslb.middleware.steps import (
    AcmeChallenge,
    Allow,
    CorsPreflight,
    EngineIORouting,
    HandshakeAdmission,
    RateLimits,
    RedirectHTTPS,
    TunnelCap,
)
from wslb.middleware.templates import Template
from wslb.server.core.capacity import share
from wslb.server.state.backend import BackendState


class RouteState:
    """A route as one listener serves it: backend, merged timeouts, body limit, and its steps
    compiled (:func:`route_steps`), so that a route with nothing configured walks empty
    tuples."""

    __slots__ = (
        "backend",
        "chooser",
        "engineio",
        "max_body_size",
        "request_headers",
        "response_steps",
        "session_steps",
        "spec",
        "stateful",
        "steps",
        "timeouts",
    )

    def __init__(
        self,
        spec: RouteSpec,
        backend: BackendState,
        client: ClientSpec,
        secret: bytes,
        workers: int = 1,
        tls: bool = False,
    ) -> None:
        self.spec = spec
        self.backend = backend
        self.timeouts: TimeoutsSpec = spec.timeouts.apply(backend.spec.timeouts)
        self.max_body_size = (
            spec.max_body_size if spec.max_body_size is not None else client.max_body_size
        )
        self.engineio = EngineIOAffinity(secret, backend.name) if spec.engineio_affinity else None
        self.chooser: Chooser | None = None
        if spec.affinity is not None:
            self.chooser = CookieChooser(CookieAffinity(spec.affinity, secret, backend.name))
        elif spec.hash_by:
            self.chooser = HashChooser(Template(spec.hash_by))
        rules = spec.headers
        self.request_headers = (
            RequestHeaders([HeaderTemplate(r) for r in rules.request_set])
            if rules.request_set
            else None
        )
        self.steps, self.session_steps, self.response_steps = route_steps(
            self, secret, workers, tls
        )
        self.stateful = tuple(
            step for step in (*self.steps, *self.session_steps) if isinstance(step, Counting)
        )

    def adopt(self, old: RouteState) -> None:
        """Keep the rate, connection and handshake counts of the route this one replaces (a
        reload), where their configuration did not change."""
        olds = {type(step): step for step in old.stateful}
        for step in self.stateful:
            was = olds.get(type(step))
            if was is not None:
                step.adopt(was)

    def sweep(self, now: float) -> None:
        for step in self.stateful:
            step.sweep(now)


def route_steps(
    route: RouteState, secret: bytes, workers: int, tls: bool
) -> tuple[tuple[Step, ...], tuple[Step, ...], tuple[ResponseStep, ...]]:
    """The steps a route's requests go through, in order: after routing; then, for a new
    WebSocket or Engine.IO session, after its handshake is checked; and on the way back."""
    spec = route.spec
    backend = route.backend
    steps: list[Step] = []
    cors = Cors(spec.cors) if spec.cors is not None else None
    if cors is not None:
        steps.append(CorsPreflight(cors))
    access = AccessList(spec.allow, spec.deny)
    if access:
        steps.append(Allow(access, "route"))
    if spec.redirect_https is not None and not tls:
        redirect = spec.redirect_https
        steps.append(RedirectHTTPS(redirect.code, redirect.port, spare_forwarded=True))
    if route.engineio is not None:
        steps.append(EngineIORouting(route.engineio, backend))
    limits = spec.limits
    if limits is not None and (limits.rps or limits.rpm or limits.connections):
        steps.append(RateLimits(limits))
    session: list[Step] = []
    adm = spec.admission
    if adm is not None and (adm.rate or adm.client_rate):
        admission = Admission(share(adm.rate, workers), share(adm.client_rate, workers))
        session.append(HandshakeAdmission(adm, admission, backend.name))
    if backend.max_tunnels is not None:
        session.append(
            TunnelCap(backend.tunnels, backend.max_tunnels, backend.name, backend.spec.retry_after)
        )
    responses: list[ResponseStep] = []
    if cors is not None:
        responses.append(CorsHeaders(cors))
    if isinstance(route.chooser, CookieChooser):
        responses.append(AffinityCookie(route.chooser.affinity))
    rules = spec.headers
    if rules.response_set:
        responses.append(SetHeaders([HeaderTemplate(r) for r in rules.response_set]))
    if rules.response_add:
        responses.append(AddHeaders([HeaderTemplate(r) for r in rules.response_add]))
    return tuple(steps), tuple(session), tuple(responses)


def listener_steps(spec: ListenerSpec, acme: AcmeManager | None) -> tuple[Step, ...]:
    """The steps every request on a listener goes through before routing, in order."""
    steps: list[Step] = []
    if acme is not None:
        manager = acme  # its storage changes when its configuration does
        steps.append(AcmeChallenge(lambda token: manager.storage.http01(token)))
    access = AccessList(spec.allow, spec.deny)
    if access:
        steps.append(Allow(access, "listener"))
    if spec.redirect_https is not None:
        redirect = spec.redirect_https
        steps.append(RedirectHTTPS(redirect.code, redirect.port, spare_forwarded=False))
    return tuple(steps)
