"""Engine.IO session affinity with no cookie and no shared state.

The sid of a handshake's open packet becomes ``<tag>.<sid>``, where ``tag`` is a keyed HMAC of
the endpoint's address and the sid. Later requests of the session carry that value; wslb finds
the endpoint whose HMAC matches among the available ones, routes there and gives the endpoint its
own sid back. Every worker and replica with the same secret agrees; a client cannot make a tag
that selects an endpoint (it would need the secret) nor reuse one for another sid. A tag that
matches no available endpoint (forged, or its pod is gone) is answered as Engine.IO answers an
unknown session, 400, so the client starts a new session at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from wslb.balancer.endpoints import EndpointState

TAG_LEN = 12  # characters of base64url: 72 bits


class EngineIOAffinity:
    def __init__(self, secret: bytes, scope: str) -> None:
        self._key = hmac.new(secret, b"engineio:" + scope.encode(), hashlib.sha256).digest()

    def tag(self, ep: EndpointState, sid: str) -> str:
        mac = hmac.new(self._key, ep.address.encode() + b"|" + sid.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()[:9]).decode()[:TAG_LEN]

    def wire_sid(self, ep: EndpointState, sid: str) -> str:
        return f"{self.tag(ep, sid)}.{sid}"

    def resolve(
        self, wire: bytes, endpoints: Sequence[EndpointState]
    ) -> tuple[EndpointState | None, bytes] | None:
        """(endpoint or None, the endpoint's own sid) for a tagged sid; None when untagged."""
        tag, dot, sid = wire.partition(b".")
        if not dot or len(tag) != TAG_LEN or not sid:
            return None
        try:
            tag_s, sid_s = tag.decode("ascii"), sid.decode("ascii")
        except UnicodeDecodeError:
            return None, sid
        for ep in endpoints:
            if hmac.compare_digest(self.tag(ep, sid_s), tag_s):
                return ep, sid
        return None, sid
