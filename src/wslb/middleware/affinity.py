"""Cookie session affinity that every worker and replica agrees on with no shared state.

Two modes, as ingress-nginx names them:

* ``balanced``: the cookie holds a random session id; the endpoint is the id's place on a
  consistent-hash ring of the available endpoints (keyed with the server secret). Scaling from
  ``c`` to ``n`` endpoints moves only about ``(n-c)/n`` of the sessions; an endpoint that goes
  away takes only its own sessions elsewhere.
* ``persistent``: the cookie names the endpoint itself, as a keyed HMAC of the backend and the
  endpoint address. Sessions stay where they are when endpoints are added; when theirs goes away,
  the request is balanced afresh and the cookie rewritten.

Either way the cookie reveals no address, and a client cannot make up a value that selects an
endpoint of its choosing: it would need the secret. Values that are not ours are ignored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from wslb.balancer.endpoints import EndpointState
from wslb.config.model import CookieSpec
from wslb.proto.cookies import request_cookie, set_cookie_line, token_value
from wslb.proto.http1 import RequestHead


def samesite_none_compatible(user_agent: bytes | None) -> bool:
    """False for the user agents ingress-nginx's ``same_site_none_compatible`` lists (after
    Chromium's "SameSite=None: known incompatible clients"): Chrome 4x-6x, iOS 12, and Safari
    on macOS 10.14."""
    if not user_agent:
        return True
    ua = user_agent
    if b"Chrome/4" in ua or b"Chrome/5" in ua or b"Chrome/6" in ua:
        return False
    if b"CPU iPhone OS 12" in ua or b"iPad; CPU OS 12" in ua:
        return False
    return not (
        b"Macintosh" in ua
        and b"Intel Mac OS X 10_14" in ua
        and b"Safari" in ua
        and b"Chrome" not in ua
    )


class CookieAffinity:
    def __init__(self, spec: CookieSpec, secret: bytes, scope: str) -> None:
        self.spec = spec
        self.name = spec.name.encode()
        self.persistent = spec.mode == "persistent"
        self._key = hmac.new(secret, b"affinity:" + scope.encode(), hashlib.sha256).digest()
        self._tokens: dict[str, str] = {}  # address -> token
        self._by_token: tuple[tuple[EndpointState, ...], dict[str, EndpointState]] = ((), {})

    def read(self, head: RequestHead) -> str | None:
        return token_value(request_cookie(head, self.name))

    # ---- persistent: the cookie names the endpoint
    def token(self, ep: EndpointState) -> str:
        tok = self._tokens.get(ep.address)
        if tok is None:
            mac = hmac.new(self._key, ep.address.encode(), hashlib.sha256).digest()
            tok = base64.urlsafe_b64encode(mac[:15]).decode()
            self._tokens[ep.address] = tok
        return tok

    def endpoint(self, token: str, endpoints: Sequence[EndpointState]) -> EndpointState | None:
        """The endpoint among ``endpoints`` (the available ones) that ``token`` names."""
        known, table = self._by_token
        if tuple(endpoints) != known:
            table = {self.token(ep): ep for ep in endpoints}
            self._by_token = (tuple(endpoints), table)
        return table.get(token)

    # ---- balanced: the cookie is a session id hashed onto the ring
    @staticmethod
    def new_session() -> str:
        return secrets.token_urlsafe(15)

    def ring_key(self, session: str) -> bytes:
        return session.encode()

    # ---- the Set-Cookie line
    def set_cookie(self, value: str, *, tls: bool, user_agent: bytes | None, now: float) -> bytes:
        spec = self.spec
        samesite = spec.samesite
        if (
            samesite == "None"
            and spec.conditional_samesite_none
            and not samesite_none_compatible(user_agent)
        ):
            samesite = None
        secure = tls if spec.secure is None else spec.secure
        return set_cookie_line(
            spec.name,
            value,
            now=now,
            expires=spec.expires,
            max_age=spec.max_age,
            path=spec.path,
            domain=spec.domain,
            samesite=samesite,
            secure=secure or samesite == "None",
        )
