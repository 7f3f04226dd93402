"""Choosers: a route's own way to pick the endpoint of a request, in place of the backend's
balancer (see :mod:`wslb.middleware.chain`). A route has at most one; without one the backend
balances (an Engine.IO sid's pinned endpoint goes before either)."""

from __future__ import annotations

from wslb.balancer.endpoints import EndpointState
from wslb.middleware.affinity import CookieAffinity
from wslb.middleware.chain import Balancer, Request
from wslb.middleware.templates import Template


class CookieChooser:
    """Cookie affinity: persistent (the cookie names the endpoint) or balanced (the cookie is
    a session id hashed onto the ring). A new cookie goes out with the response."""

    __slots__ = ("affinity",)

    def __init__(self, affinity: CookieAffinity) -> None:
        self.affinity = affinity

    def choose(
        self, request: Request, backend: Balancer, now: float, exclude: EndpointState | None
    ) -> EndpointState | None:
        aff = self.affinity
        value = aff.read(request.head)
        if aff.persistent:
            ep = aff.endpoint(value, backend.available(now)) if value else None
            if ep is not None and ep is not exclude:
                return ep
            ep = backend.pick(now, exclude)
            if ep is not None and (exclude is None or aff.spec.change_on_failure):
                request.set_cookie = aff.token(ep)  # new session, or its endpoint is gone
            return ep
        if value is None:
            value = aff.new_session()
            request.set_cookie = value
        return backend.pick_hashed(aff.ring_key(value), now, exclude)


class HashChooser:
    """``hash_by``: consistent hashing of a templated key (ingress-nginx upstream-hash-by)."""

    __slots__ = ("template",)

    def __init__(self, template: Template) -> None:
        self.template = template

    def choose(
        self, request: Request, backend: Balancer, now: float, exclude: EndpointState | None
    ) -> EndpointState | None:
        return backend.pick_hashed(self.template.render(request.context()), now, exclude)
